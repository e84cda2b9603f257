"""`ptyopt bench`: time a named reconstruction setup and compare it with its FFT floor.

A preset is a reconstruction config plus the geometry of a synthetic dataset (made once with ptyopt's own
forward model and cached; the timing of an iteration does not depend on what the patterns show). The bench
runs ``warmup`` iterations, then ``iterations`` timed ones, at an iteration number where every refined tensor
is active, and reports the median time per iteration.

The FFT floor is measured, not estimated: every FFT the iteration runs (forward and backward, with its shape,
dtype and dimensions) is recorded once with a dispatch mode, and the same list of FFTs is then run back to back
on the same device. ``ratio = median iteration time / FFT floor``; 1 would mean that nothing but FFTs costs time.
``fft_in_iteration_s`` is what the same FFTs took where they ran, inside the recorded iteration: above the floor
when the iteration's data are not in cache as the replay's are.

JSON schema (``--json FILE``; ``schema_version`` changes only when a field changes meaning or is removed):
``{"schema_version": 1, "preset": str, "description": str, "device": str, "torch_version": str,
"ptyopt_version": str, "threads": int, "compile": bool, "patterns": int, "batch_size": int,
"pattern_px": int, "n_slices": int, "probe_modes": int, "object_modes": int, "warmup_iterations": int,
"timed_iterations": int, "iteration_s": [float], "median_iteration_s": float, "patterns_per_s": float,
"fft_calls_per_iteration": int, "fft_floor_s": float, "ratio_to_fft_floor": float, "fft_in_iteration_s": float,
"peak_host_rss_mib": float, "peak_gpu_mib": float | null, "memory_estimate_mib": float,
"chunks_per_batch": int, "host_busy_fraction": float | null}``. ``peak_host_rss_mib`` is the process's peak resident
memory (it includes making the synthetic data on the first run); ``host_busy_fraction`` is the share of the host's
CPU time that other processes used during one second just before the timing, while the bench slept (Linux; null
elsewhere): above about 0.1, other work shared the CPU and the times are not a benchmark.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ptyopt.config import parse_config, set_dotted
from ptyopt.errors import ConfigError
from ptyopt.registry import did_you_mean

SCHEMA_VERSION = 1
FFT_OPS = ("_fft_c2c", "_fft_r2c", "_fft_c2r")


@dataclass(frozen=True)
class BenchPreset:
    """A benchmark: the synthetic data geometry and the reconstruction config (without data.path)."""

    name: str
    description: str
    scan_shape: tuple[int, int]
    detector_px: int
    step_ang: float
    cell_ang: float  # the detector pixel is 1/cell_ang [1/Å]; the real-space pixel cell_ang/detector_px [Å]
    config: dict[str, Any]
    device: str = "cpu"
    timed_from_iteration: int = 10  # every refined tensor is active from here on


_POSTER_LIKE = {
    "optimize": {
        "object_amplitude": {"lr": 5.0e-4},
        "object_phase": {"lr": 1.0e-3},
        "probe": {"lr": 1.0e-4, "start_iter": 5},
        "positions": {"lr": 1.0e-3, "start_iter": 10},
    },
    "loss": {"single": {"weight": 1.0}, "pacbed": {"weight": 0.5}, "sparse": {"weight": 0.1}},
    "data": {"preprocess": [{"kind": "resample", "scale_factor": 0.5, "mode": "on_the_fly"}]},
}

PRESETS: dict[str, BenchPreset] = {
    preset.name: preset
    for preset in (
        BenchPreset(
            name="cpu-small",
            description="1024 patterns of 128x128 resampled x0.5 on the fly to 64x64, 8 slices, 2 probe modes, "
                        "batch 32, random grouping, Adam on object, probe and positions, single + PACBED + sparse",
            scan_shape=(32, 32), detector_px=128, step_ang=0.4, cell_ang=19.525,
            config={**_POSTER_LIKE, "model": {"n_slices": 8, "slice_thickness_ang": 3.905, "probe_modes": 2},
                    "solver": {"batch_size": 32, "grouping": "random"}},
        ),
        BenchPreset(
            name="poster",
            description="the poster's shared setup: 100x100 positions of 128x128 resampled x0.5 on the fly, "
                        "32 slices, 4 probe modes, batch 32, random grouping, Adam, single + PACBED + sparse",
            scan_shape=(100, 100), detector_px=128, step_ang=0.4, cell_ang=19.525,
            config={**_POSTER_LIKE, "model": {"n_slices": 32, "slice_thickness_ang": 1.9525, "probe_modes": 4},
                    "solver": {"batch_size": 32, "grouping": "random"}},
            device="cuda",
        ),
        BenchPreset(
            name="tiny",
            description="64 patterns of 64x64 resampled x0.5, 2 slices, 2 probe modes, batch 16 (a smoke test)",
            scan_shape=(8, 8), detector_px=64, step_ang=0.4, cell_ang=11.715,
            config={**_POSTER_LIKE, "model": {"n_slices": 2, "slice_thickness_ang": 3.905, "probe_modes": 2},
                    "solver": {"batch_size": 16, "grouping": "random"}},
        ),
    )
}


def get_bench_preset(name: str) -> BenchPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown bench preset '{name}'{did_you_mean(name, list(PRESETS))}") from None


# ---- synthetic data -------------------------------------------------------------------------------------


def synthetic_dataset(preset: BenchPreset, cache_dir: Path) -> Path:
    """A dataset of the preset's geometry (cached): a square lattice of Gaussian phase peaks (0.4 rad, 0.3 Å
    wide, 3.905 Å apart) seen by a 300 kV, 21.4 mrad probe with 100 Å defocus, single slice, Poisson noise at
    1e5 e/Å². Timing does not depend on the content; the content only keeps the run physical."""
    from ptyopt.data import Dataset4D, write_dataset
    from ptyopt.physics import forward_intensities, make_probe

    path = cache_dir / f"bench-{preset.name}.h5"
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    k = preset.detector_px
    dx = preset.cell_ang / k
    ny, nx = preset.scan_shape
    yy, xx = np.meshgrid(np.arange(ny) * preset.step_ang, np.arange(nx) * preset.step_ang, indexing="ij")
    positions = np.stack([yy.ravel(), xx.ravel()], axis=1)
    canvas = (int(np.ceil(positions[:, 0].max() / dx)) + k + 2, int(np.ceil(positions[:, 1].max() / dx)) + k + 2)
    y = torch.arange(canvas[0], dtype=torch.float64)[:, None] * dx
    x = torch.arange(canvas[1], dtype=torch.float64)[None, :] * dx
    a = 3.905
    dist2 = ((y + a / 2) % a - a / 2) ** 2 + ((x + a / 2) % a - a / 2) ** 2
    phase = (0.4 * torch.exp(-dist2 / (2 * 0.3**2))).float()[None, None]
    probe = make_probe((k, k), dx, 300.0, 21.4, {"C10": -100.0}).to(torch.complex64)[None]
    centres = torch.as_tensor(positions / dx + k // 2 + 1)
    crops = torch.round(centres).long() - k // 2
    shifts = (centres - torch.round(centres)).float()
    meas = np.empty((len(positions), k, k), dtype=np.float32)
    electrons = 1e5 * preset.step_ang**2
    ones = torch.ones(1)
    h = torch.ones((1, k, k), dtype=torch.complex64)
    with torch.no_grad():
        for start in range(0, len(positions), 256):
            sl = slice(start, start + 256)
            intensity = forward_intensities(torch.ones_like(phase), phase, probe, crops[sl], shifts[sl], h, ones)
            meas[sl] = (intensity / intensity.sum(dim=(-2, -1), keepdim=True) * electrons).numpy()
    meas = np.random.default_rng(0).poisson(meas).astype(np.float32)
    dataset = Dataset4D(meas=meas, positions_ang=positions, energy_kv=300.0, conv_angle_mrad=21.4,
                        dk_inv_ang=1.0 / preset.cell_ang, aberrations={"C10": -100.0}, dose_e_per_ang2=1e5,
                        counts=True, scan_shape=preset.scan_shape, step_ang=preset.step_ang)
    tmp = path.with_suffix(".tmp.h5")
    write_dataset(tmp, dataset)
    tmp.replace(path)
    return path


# ---- FFT floor -------------------------------------------------------------------------------------------


class FFTRecorder(TorchDispatchMode):
    """Records every FFT dispatched while active: (op name, input shape, dtype, args after the input), and the
    wall time the FFTs took where they ran (``seconds``; synchronised on a GPU, so only meaningful there when
    nothing else is timed)."""

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...], torch.dtype, tuple]] = []
        self.seconds = 0.0
        self.device = device or torch.device("cpu")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        if name not in FFT_OPS:
            return func(*args, **(kwargs or {}))
        self.calls.append((name, tuple(args[0].shape), args[0].dtype, tuple(args[1:])))
        _sync(self.device)
        t0 = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        _sync(self.device)
        self.seconds += time.perf_counter() - t0
        return out


def fft_floor_s(calls: list[tuple[str, tuple[int, ...], torch.dtype, tuple]], device: torch.device,
                repeats: int = 5) -> float:
    """Median time [s] of running the recorded FFTs back to back on ``device``; one random input per distinct
    (shape, dtype), allocated beforehand, so only the transforms are timed."""
    pool: dict[tuple, torch.Tensor] = {}
    for _, shape, dtype, _ in calls:
        if (shape, dtype) not in pool:
            pool[shape, dtype] = torch.randn(shape, dtype=dtype, device=device)
    inputs = [pool[shape, dtype] for _, shape, dtype, _ in calls]
    ops = [getattr(torch.ops.aten, name).default for name, _, _, _ in calls]
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        for op, x, (_, _, _, rest) in zip(ops, inputs, calls, strict=True):
            op(x, *rest)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first pass plans the FFTs


def host_busy_fraction(seconds: float = 1.0) -> float | None:
    """Share of all cores' time that was busy during ``seconds`` while this process sleeps, from /proc/stat."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None

    def sample() -> tuple[int, int]:
        values = [int(v) for v in stat.read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- the bench -------------------------------------------------------------------------------------------


@dataclass
class BenchResult:
    schema_version: int
    preset: str
    description: str
    device: str
    torch_version: str
    ptyopt_version: str
    threads: int
    compile: bool
    patterns: int
    batch_size: int
    pattern_px: int
    n_slices: int
    probe_modes: int
    object_modes: int
    warmup_iterations: int
    timed_iterations: int
    iteration_s: list[float] = field(default_factory=list)
    median_iteration_s: float = 0.0
    patterns_per_s: float = 0.0
    fft_calls_per_iteration: int = 0
    fft_floor_s: float = 0.0
    ratio_to_fft_floor: float = 0.0
    fft_in_iteration_s: float = 0.0
    peak_host_rss_mib: float = 0.0
    peak_gpu_mib: float | None = None
    memory_estimate_mib: float = 0.0
    chunks_per_batch: int = 1
    host_busy_fraction: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def bench_config(preset: BenchPreset, data_path: Path, out_dir: Path, device: str, overrides: dict[str, Any]):
    raw = {**preset.config, "data": {**preset.config.get("data", {}), "path": str(data_path)},
           "output": {"dir": str(out_dir), "checkpoint_every": 10**6}, "device": device}
    raw = copy.deepcopy(raw)  # set_dotted writes into nested sections; the preset stays untouched
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return parse_config(raw)


def run_bench(preset: BenchPreset, *, device: str | None = None, warmup: int = 2, iterations: int = 5,
              overrides: dict[str, Any] | None = None, cache_dir: Path | None = None, out_dir: Path | None = None,
              progress: Callable[[str], None] | None = None, op_profile: Path | None = None) -> BenchResult:
    """Time ``iterations`` iterations after ``warmup`` ones; see the module docstring for what is measured."""
    import tempfile

    from ptyopt import __version__
    from ptyopt.engine import Engine
    from ptyopt.problem import build_problem, resolve_device

    resolve_device(device or preset.device)  # fail before making data when the device is not there
    say = progress or (lambda message: None)
    cache = cache_dir or Path(os.environ.get("PTYOPT_CACHE_DIR", Path.home() / ".cache" / "ptyopt"))
    say(f"synthetic data for '{preset.name}' (cached in {cache})")
    data_path = synthetic_dataset(preset, cache)
    with tempfile.TemporaryDirectory() as tmp:
        config = bench_config(preset, data_path, Path(out_dir or tmp), device or preset.device, overrides or {})
        torch.manual_seed(config.seed)
        problem = build_problem(config)
        dev = problem.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        engine = Engine(problem, Path(out_dir or tmp))
        busy = host_busy_fraction()
        first = preset.timed_from_iteration
        say(problem.memory.describe())
        say(f"{warmup} warm-up iterations")
        for it in range(first, first + warmup):
            engine._iterate(it)
        times = []
        for it in range(first + warmup, first + warmup + iterations):
            say(f"timed iteration {it - first - warmup + 1}/{iterations}")
            _sync(dev)
            t0 = time.perf_counter()
            engine._iterate(it)
            _sync(dev)
            times.append(time.perf_counter() - t0)
        say("recording the iteration's FFTs")
        recorder = FFTRecorder(dev)
        with recorder:
            engine._iterate(first + warmup + iterations)
        say(f"FFT floor ({len(recorder.calls)} FFTs)")
        floor = fft_floor_s(recorder.calls, dev)
        if op_profile is not None:
            say("profiling one more iteration")
            op_profile.write_text(profile_iteration(engine, first + warmup + iterations + 1, dev))
        median = statistics.median(times)
        n = len(engine.train_indices)
        cfg = config.model
        return BenchResult(
            schema_version=SCHEMA_VERSION, preset=preset.name, description=preset.description,
            device=_device_name(dev), torch_version=torch.__version__, ptyopt_version=__version__,
            threads=torch.get_num_threads(), compile=config.compute.compile, patterns=n,
            batch_size=config.solver.batch_size,
            pattern_px=problem.geometry.window_px[0], n_slices=cfg.n_slices, probe_modes=cfg.probe_modes,
            object_modes=cfg.object_modes, warmup_iterations=warmup, timed_iterations=iterations,
            iteration_s=times, median_iteration_s=median, patterns_per_s=n / median,
            fft_calls_per_iteration=len(recorder.calls), fft_floor_s=floor, ratio_to_fft_floor=median / floor,
            fft_in_iteration_s=recorder.seconds,
            peak_host_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            peak_gpu_mib=torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
            memory_estimate_mib=problem.memory.batch_bytes / 2**20,
            chunks_per_batch=problem.memory.chunks_per_batch, host_busy_fraction=busy,
        )


def profile_iteration(engine, iteration: int, device: torch.device, rows: int = 30) -> str:
    """One iteration under torch.profiler: the operators by self time (device time on a GPU), as a text table."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        engine._iterate(iteration)
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores)"
