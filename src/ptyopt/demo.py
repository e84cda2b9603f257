"""The built-in demo: reconstruct the shipped ``sto-demo`` dataset (abTEM SrTiO3, 24×24 scan, 4 u.c.) with a named
recipe (default ``fast``: the one that reached every accuracy first in the recipes study), and report how close
the result is to the truth. ``demo.yaml`` beside the dataset is a CPU-sized version of the poster's Adam setup,
the base config of the shipped studies."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ptyopt.config import ReconstructionConfig, parse_config
from ptyopt.data.dataset import Dataset4D
from ptyopt.data.dataset_file import read_dataset
from ptyopt.recipes import DEFAULT_RECIPE, recipe_raw
from ptyopt.reconstruct import RunOutput, run_reconstruction
from ptyopt.simulate.consistency import r_factor, truth_patterns

DEMO_DATASET = "sto-demo.h5"
DEMO_CONFIG = "demo.yaml"


def _example(name: str) -> Path:
    return Path(str(resources.files("ptyopt.data") / "examples" / name))


def demo_dataset_path() -> Path:
    """Path of the dataset shipped inside the package (regenerate with `make demo-data`)."""
    return _example(DEMO_DATASET)


def demo_config_path() -> Path:
    return _example(DEMO_CONFIG)


def load_demo_dataset() -> Dataset4D:
    return read_dataset(demo_dataset_path())


def forward_check(dataset: Dataset4D, device: str = "cpu") -> float:
    """R-factor of ptyopt's forward model run on the truth against the measured patterns."""
    electrons = (dataset.dose_e_per_ang2 or 1.0) * dataset.step_ang**2 if dataset.counts else 1.0
    return r_factor(truth_patterns(dataset, device=device) * electrons, dataset.meas)


# the shipped dataset's slicing: 4 unit cells, one slice each
DEMO_SLICING = {"n_slices": 4, "slice_thickness_ang": 3.905}


def demo_config(recipe: str = DEFAULT_RECIPE, device: str = "cpu", iterations: int | None = None,
                out_dir: str | Path = "demo_out") -> ReconstructionConfig:
    """A named recipe (``ptyopt.recipes``) on the shipped dataset with its slicing."""
    raw = recipe_raw(recipe, data_path=str(demo_dataset_path()), **DEMO_SLICING)
    raw["device"] = device
    raw["output"]["dir"] = str(out_dir)
    if iterations is not None:
        raw["solver"]["iterations"] = iterations
    return parse_config(raw)


def run_demo(out_dir: str | Path, device: str = "cpu", iterations: int | None = None,
             show_progress: bool = True, overwrite: bool = False,
             recipe: str = DEFAULT_RECIPE) -> tuple[RunOutput, float]:
    """Reconstruct sto-demo into out_dir with a recipe (default: the fastest measured, ``fast``); returns the run
    (files, metrics) and the forward-model R-factor."""
    config = demo_config(recipe, device, iterations, out_dir)
    run = run_reconstruction(config, out_dir=Path(out_dir), show_progress=show_progress, overwrite=overwrite)
    return run, forward_check(load_demo_dataset(), device)
