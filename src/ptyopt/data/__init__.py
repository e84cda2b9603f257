"""4D-STEM data: the Dataset4D container, foreign-format readers, the ptyopt dataset file, preprocessing."""

from ptyopt.data.dataset import Dataset4D, GroundTruth, raster_positions_ang
from ptyopt.data.dataset_file import has_truth, is_dataset_file, read_dataset, write_dataset
from ptyopt.data.foreign import dataset_from_foreign_file
from ptyopt.data.preprocess import Preprocessor, select_scan_region
from ptyopt.data.readers import READERS, read_array
from ptyopt.data.steps import STEPS, Step
from ptyopt.data.transforms import DetectorGeometry, to_3d

__all__ = [
    "READERS",
    "STEPS",
    "Dataset4D",
    "DetectorGeometry",
    "GroundTruth",
    "Preprocessor",
    "Step",
    "dataset_from_foreign_file",
    "has_truth",
    "is_dataset_file",
    "raster_positions_ang",
    "read_array",
    "read_dataset",
    "select_scan_region",
    "to_3d",
    "write_dataset",
]
