"""The built-in demo: simulate a small SrTiO3-like 4D-STEM dataset with the multislice forward model.

Until the reconstruction engine lands, ``ptyopt demo`` shows the forward model at work: it writes a
ptyopt dataset file with its ground truth, a CBED/PACBED figure and the patterns as a TIFF stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch

from ptyopt.data.dataset import Dataset4D, GroundTruth, raster_positions_ang
from ptyopt.data.dataset_file import write_dataset
from ptyopt.io.figures import save_cbed_figure
from ptyopt.physics import (
    forward_intensities,
    frequency_grid,
    make_probe,
    propagator,
    split_positions,
    wavelength_ang,
)
from ptyopt.progress import progress_bar
from ptyopt.simulate.phantom import srtio3_phantom_phase


@dataclass(frozen=True)
class DemoSetup:
    """Geometry of the demo (300 kV, 21.4 mrad, 64 px detector, 10×10 scan, 4 slices of 2 Å)."""

    energy_kv: float = 300.0
    conv_angle_mrad: float = 21.4
    defocus_ang: float = 60.0
    detector_px: int = 64
    dx_ang: float = 0.2
    scan_shape: tuple[int, int] = (10, 10)
    step_ang: float = 0.6
    n_slices: int = 4
    slice_thickness_ang: float = 2.0
    dose_e_per_ang2: float = 1e6
    batch_size: int = 25
    seed: int = 0

    @property
    def dk_inv_ang(self) -> float:
        return 1.0 / (self.detector_px * self.dx_ang)


def run_demo(out_dir: str | Path, device: str = "cpu", setup: DemoSetup = DemoSetup()) -> dict[str, Path]:
    """Simulate the demo dataset on ``device`` and write dataset.h5, cbed.png and patterns.tif to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    window = (setup.detector_px, setup.detector_px)
    probe = make_probe(window, setup.dx_ang, setup.energy_kv, setup.conv_angle_mrad,
                       {"defocus": setup.defocus_ang}, device=device)
    positions_ang = raster_positions_ang(setup.scan_shape, setup.step_ang)
    margin_px = 4
    centres_px = torch.as_tensor(positions_ang / setup.dx_ang + setup.detector_px // 2 + margin_px,
                                 dtype=torch.float32, device=device)
    canvas = tuple(int(math.ceil(c)) + setup.detector_px // 2 + margin_px + 1 for c in centres_px.max(0).values)
    phase = srtio3_phantom_phase(canvas, setup.dx_ang, setup.n_slices, setup.slice_thickness_ang).to(device)
    amplitude = torch.ones_like(phase)
    ky, kx = frequency_grid(window, setup.dx_ang, device=device)
    dz = torch.full((setup.n_slices,), setup.slice_thickness_ang, device=device)
    propagators = propagator(ky, kx, dz, wavelength_ang(setup.energy_kv), band_limit=True)
    occupancy = torch.ones(1, device=device)

    crop, shift = split_positions(centres_px, window)
    patterns = []
    with progress_bar() as bar:
        task = bar.add_task("forward model", total=len(positions_ang))
        for start in range(0, len(positions_ang), setup.batch_size):
            sl = slice(start, start + setup.batch_size)
            patterns.append(forward_intensities(amplitude[None], phase[None], probe[None], crop[sl], shift[sl],
                                                propagators, occupancy))
            bar.advance(task, len(patterns[-1]))
    intensities = torch.cat(patterns).cpu().numpy()
    electrons_per_pattern = setup.dose_e_per_ang2 * setup.step_ang**2
    counts = np.random.default_rng(setup.seed).poisson(intensities * electrons_per_pattern).astype(np.uint32)

    origin_ang = (-(setup.detector_px // 2 + margin_px) * setup.dx_ang,) * 2
    truth = GroundTruth(
        phase_slices=phase.cpu().numpy(), dx_ang=setup.dx_ang, slice_thickness_ang=setup.slice_thickness_ang,
        origin_ang=origin_ang, positions_ang=positions_ang, probe=probe.cpu().numpy(), probe_dx_ang=setup.dx_ang,
        attrs={"source": "ptyopt demo: analytic SrTiO3-like phantom, ptyopt multislice forward model"},
    )
    dataset = Dataset4D.from_raster(
        counts, setup.scan_shape, setup.step_ang, energy_kv=setup.energy_kv, conv_angle_mrad=setup.conv_angle_mrad,
        dk_inv_ang=setup.dk_inv_ang, aberrations={"defocus": setup.defocus_ang},
        dose_e_per_ang2=setup.dose_e_per_ang2, counts=True, truth=truth,
    )
    files = {
        "dataset": write_dataset(out / "dataset.h5", dataset),
        "patterns": out / "patterns.tif",
        "figure": out / "cbed.png",
    }
    tifffile.imwrite(files["patterns"], counts)
    save_cbed_figure(
        files["figure"], probe.cpu().numpy(), phase.sum(0).cpu().numpy(), counts.astype(np.float64),
        counts.mean(0, dtype=np.float64), dx_ang=setup.dx_ang,
        mrad_per_px=wavelength_ang(setup.energy_kv) * setup.dk_inv_ang * 1e3,
        title=f"ptyopt demo: {setup.scan_shape[0]}×{setup.scan_shape[1]} scan, {setup.n_slices} slices, "
        f"{setup.energy_kv:g} kV, {setup.conv_angle_mrad:g} mrad, dose {setup.dose_e_per_ang2:.0e} e/Å²",
    )
    return files
