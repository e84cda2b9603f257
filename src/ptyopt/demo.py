"""The built-in demo on the shipped ``sto-demo`` dataset (abTEM-simulated SrTiO3, 24×24 scan, 4 u.c.).

Until the reconstruction engine lands, ``ptyopt demo`` shows the data and checks the forward model
against them: ptyopt's multislice model, run on the ground truth, predicts the abTEM patterns; the
figure puts measured and predicted patterns side by side and the R-factor is printed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import tifffile

from ptyopt.data.dataset import Dataset4D
from ptyopt.data.dataset_file import read_dataset
from ptyopt.io.figures import save_cbed_figure
from ptyopt.simulate.consistency import r_factor, truth_patterns

DEMO_DATASET = "sto-demo.h5"


def demo_dataset_path() -> Path:
    """Path of the dataset shipped inside the package (regenerate with `make demo-data`)."""
    return Path(str(resources.files("ptyopt.data") / "examples" / DEMO_DATASET))


def load_demo_dataset() -> Dataset4D:
    return read_dataset(demo_dataset_path())


def run_demo(out_dir: str | Path, device: str = "cpu") -> tuple[dict[str, Path], float]:
    """Write the forward-model check of the demo dataset to out_dir; returns the files and the R-factor."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_demo_dataset()
    truth = dataset.truth
    electrons = (dataset.dose_e_per_ang2 or 1.0) * dataset.step_ang**2 if dataset.counts else 1.0
    predicted = truth_patterns(dataset, device=device) * electrons
    r = r_factor(predicted, dataset.meas)
    files = {"predicted": out / "predicted_patterns.tif", "figure": out / "cbed.png"}
    tifffile.imwrite(files["predicted"], predicted.astype(np.float32))
    measured = dataset.meas.astype(np.float64)
    save_cbed_figure(
        files["figure"],
        truth.probe.reshape(-1, *truth.probe.shape[-2:])[0],
        truth.phase_slices.sum(axis=0),
        np.stack([measured[0], predicted[0]]),
        measured.mean(axis=0),
        labels=("measured #0", "ptyopt model #0"),
        dx_ang=truth.dx_ang,
        mrad_per_px=dataset.wavelength_ang * dataset.dk_inv_ang * 1e3,
        title=f"sto-demo: {dataset.scan_shape[0]}×{dataset.scan_shape[1]} scan, {dataset.energy_kv:g} kV, "
        f"{dataset.conv_angle_mrad:g} mrad, dose {dataset.dose_e_per_ang2:.0e} e/Å² — model on truth: R = {r:.3f}",
    )
    return files, r
