"""From a config to a ready problem: data (read, cropped, preprocessed), geometry, initial state, model."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ptyopt.config import ReconstructionConfig
from ptyopt.data import (
    Dataset4D,
    Preprocessor,
    is_dataset_file,
    read_dataset,
    select_scan_region,
)
from ptyopt.data.detector_errors import to_detector_frame
from ptyopt.data.foreign import read_foreign_patterns
from ptyopt.errors import ConfigError, DataError
from ptyopt.model.dip_object import object_network
from ptyopt.model.dip_object import warm_start as dip_warm_start
from ptyopt.model.forward import ForwardModel
from ptyopt.model.memory import MemoryPlan, plan_memory
from ptyopt.model.state import Geometry, initial_state, make_geometry, truth_object_phase, truth_probe


@dataclass
class Problem:
    """Everything a solver loop needs; ``dataset`` holds the precomputed part of the preprocessing."""

    config: ReconstructionConfig
    dataset: Dataset4D
    preprocessor: Preprocessor
    geometry: Geometry
    model: ForwardModel
    initial_state: dict[str, torch.Tensor]
    probe_power: float
    device: torch.device
    real_dtype: torch.dtype
    memory: MemoryPlan
    warm_start: dict[str, float] | None = None  # the DIP warm-start fit's RMS errors, when one ran

    def patterns(self, indices: np.ndarray) -> torch.Tensor:
        """The patterns ``indices`` as the model must reproduce them (every preprocessing step applied), on the
        device in the real dtype; read in sorted order (faster on disk-backed arrays), returned in the given one."""
        indices = np.asarray(indices)
        order = np.argsort(indices)
        batch = torch.as_tensor(np.asarray(self.dataset.meas[indices[order]], dtype=np.float32))
        batch = batch[torch.as_tensor(np.argsort(order))].to(self.device)
        return self.preprocessor.on_the_fly(batch, indices).to(self.real_dtype)


def _required_experiment(exp, name: str):
    """An experiment value a foreign file cannot provide; a ConfigError when the config lacks it too."""
    value = getattr(exp, name)
    if value is None:
        raise ConfigError(f"experiment.{name} is not in the data file; give it in the config's experiment section")
    return value


def load_dataset(config: ReconstructionConfig) -> Dataset4D:
    """Read the data (ptyopt dataset file or a foreign file), apply experiment overrides and the scan region."""
    data, exp = config.data, config.experiment
    if not data.path.exists():
        raise DataError(f"data file {data.path} does not exist")
    if is_dataset_file(data.path):
        dataset = read_dataset(data.path)
        changes = {
            name: getattr(exp, name)
            for name in ("energy_kv", "conv_angle_mrad", "dk_inv_ang", "aberrations", "counts")
            if getattr(exp, name) is not None
        }
        if exp.step_ang is not None:
            changes["step_ang"] = exp.step_ang
        dataset = dataset.replace(**changes) if changes else dataset
    else:
        # the file is read first: one that is not a readable dataset says so, before any metadata is asked for
        meas, scan_shape = read_foreign_patterns(data.path, key=data.key, scan_shape=data.scan_shape,
                                                 permute=data.permute)
        dataset = Dataset4D.from_raster(
            meas, scan_shape, _required_experiment(exp, "step_ang"),
            energy_kv=_required_experiment(exp, "energy_kv"),
            conv_angle_mrad=_required_experiment(exp, "conv_angle_mrad"),
            dk_inv_ang=_required_experiment(exp, "dk_inv_ang"),
            aberrations=exp.aberrations or {}, counts=bool(exp.counts),
        )
    if data.scan_region is not None:
        dataset = select_scan_region(dataset, *data.scan_region)
    if data.half is not None:
        dataset = interleaved_half(dataset, data.half)
    return dataset


def interleaved_half(dataset: Dataset4D, part: int) -> Dataset4D:
    """The positions with (iy + ix) % 2 == part: a checkerboard half that still covers the whole field of view."""
    if dataset.scan_shape is None:
        raise ConfigError("data.half needs a raster scan with a known scan_shape")
    iy, ix = np.divmod(np.arange(dataset.n_patterns), dataset.scan_shape[1])
    keep = np.flatnonzero((iy + ix) % 2 == part)
    return dataset.subset(keep, None)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ConfigError(f"device '{name}' is not usable here ({err}); use 'cpu'") from None
    return device


def mean_total_intensity(dataset: Dataset4D, preprocessor: Preprocessor, chunk: int = 512) -> float:
    """Mean over patterns of the total intensity the model must produce (after every preprocessing step)."""
    total = 0.0
    for start in range(0, dataset.n_patterns, chunk):
        batch = torch.from_numpy(np.asarray(dataset.meas[start : start + chunk], dtype=np.float32))
        indices = np.arange(start, start + len(batch))
        total += float(preprocessor.on_the_fly(batch, indices).sum(dtype=torch.float64))
    return total / dataset.n_patterns


def build_problem(config: ReconstructionConfig, *, warm_start: bool = True) -> Problem:
    """Data, geometry, initial state and model of a run. ``warm_start`` False skips the fit of a DIP object to
    model.dip.fit_to (for a run resumed from its checkpoint, or a finished result read back)."""
    if config.compute.threads is not None:
        torch.set_num_threads(config.compute.threads)
    device = resolve_device(config.device)
    raw = load_dataset(config)
    preprocessor = Preprocessor(config.data.preprocess, raw)
    dataset = preprocessor.precompute(raw)
    ky, kx = preprocessor.geometry.shape_px
    if ky != kx:
        raise DataError(f"the preprocessed detector is {ky}×{kx}; reconstruction needs a square detector")
    dx_ang = preprocessor.geometry.pixel_size_ang[0]
    opt = config.optimize
    truth = dataset.truth
    wants_truth = [name for name in ("probe_init", "object_init", "positions_init")
                   if getattr(config.model, name) == "truth"]
    if wants_truth and truth is None:
        raise ConfigError(f"model.{wants_truth[0]} is 'truth' but the dataset has no ground truth")
    positions = truth.positions_ang if config.model.positions_init == "truth" else dataset.positions_ang
    if positions is None:
        raise ConfigError("model.positions_init is 'truth' but the truth holds no positions")
    exp = config.experiment
    if exp.detector_rotation_deg != 0 or exp.detector_transpose:
        if config.model.object_init == "truth":
            raise ConfigError("model.object_init: truth is not available with experiment.detector_rotation_deg / "
                              "detector_transpose (the truth lives in the scan frame); use object_init: vacuum")
        positions = to_detector_frame(positions, exp.detector_rotation_deg, exp.detector_transpose,
                                      dataset.positions_ang.mean(axis=0))
    geometry = make_geometry(positions, ky, dx_ang, dataset.wavelength_ang, config.model.object_margin_px,
                             dataset.acquisition_order)
    drift_refined = opt.scan_drift.start_iter is not None and config.model.scan_drift_order > 0
    if drift_refined and geometry.acquisition_time is None:
        raise ConfigError("optimize.scan_drift needs the acquisition order of the patterns, which this scan lacks (not "
                          "a raster scan with a known scan_shape, and no /scan/acquisition_index in the file); set "
                          "model.scan_drift_order: 0 (translation only) or optimize.scan_drift.start_iter: null, or "
                          "give data.scan_shape")
    real = torch.float32 if config.model.precision == "float32" else torch.float64
    probe_power = mean_total_intensity(dataset, preprocessor)
    if not (np.isfinite(probe_power) and probe_power > 0):
        raise DataError(f"the patterns' mean total intensity (after preprocessing) is {probe_power:.4g}; diffraction "
                        "intensities must be finite with a positive total (check the file's sign and scaling; small "
                        "negative detector offsets can be removed with a clip_negative preprocessing step)")
    state = initial_state(
        config.model, geometry, energy_kv=dataset.energy_kv, conv_angle_mrad=dataset.conv_angle_mrad,
        aberrations=dataset.aberrations, probe_power=probe_power, device=device,
    )
    if config.model.probe_init == "truth":
        state["probe"] = truth_probe(truth, config.model, geometry, probe_power, state["probe"])
    if config.model.object_init == "truth":
        state["object_phase"] = truth_object_phase(truth, config.model, geometry, state["object_phase"])
    network, fit = None, None
    if config.model.object_parametrisation == "dip":
        seed = config.seed if config.model.dip.seed is None else config.model.dip.seed
        network = object_network(config.model.dip, state, seed)
        if warm_start and config.model.dip.fit_to is not None:
            fit = dip_warm_start(network, state, geometry.origin_ang, geometry.dx_ang)
    fixed = (
        opt.tilts.start_iter is None and opt.slice_thickness.start_iter is None and config.model.tilt_mode == "global"
    )
    if config.compute.compile and device.type == "cuda":
        warnings.warn("compute.compile on a GPU is not verified against the eager model (a CUDA-graph variant gave "
                      "wrong position gradients) and measured no faster there; prefer compile: false",
                      stacklevel=2)
    model = ForwardModel(config.model, geometry, state, fixed_propagators=fixed, device=device, real_dtype=real,
                         compile=config.compute.compile, object_network=network)
    memory = plan_memory(config, geometry, device, complex_itemsize=2 * torch.finfo(real).bits // 8)
    return Problem(config, dataset, preprocessor, geometry, model, state, probe_power, device, real, memory, fit)
