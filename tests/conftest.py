from pathlib import Path

import pytest
import torch

from ptyopt.config import parse_config


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=[torch.complex64, torch.complex128], ids=["c64", "c128"])
def cdtype(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_dataset_path(tmp_path_factory) -> Path:
    pytest.importorskip("abtem")
    from ptyopt.data import write_dataset
    from ptyopt.simulate.presets import get_preset, with_overrides
    from ptyopt.simulate.run import simulate_dataset

    folder = tmp_path_factory.mktemp("tiny")
    spec = with_overrides(get_preset("sto-tiny"), frozen_phonons=0, aperture_edge="hard", scan_shape=(12, 12))
    return write_dataset(folder / "tiny.h5", simulate_dataset(spec, cache_dir=folder / "cache"))


@pytest.fixture
def tiny_config(tiny_dataset_path, tmp_path):
    """A small, fast config on the tiny dataset; tests override what they study."""

    def make(**sections):
        raw = {
            "data": {"path": str(tiny_dataset_path)},
            "model": {"n_slices": 2, "slice_thickness_ang": 3.905, "aperture_edge": "hard"},
            "solver": {"iterations": 6, "batch_size": 8},
            "output": {"dir": str(tmp_path / "out"), "checkpoint_every": 2, "metric_margin_ang": 0.5},
        }
        for name, values in sections.items():
            raw[name] = {**raw.get(name, {}), **values} if isinstance(values, dict) else values
        return parse_config(raw)

    return make


@pytest.fixture
def perturbed_positions(tiny_dataset_path, tmp_path):
    """The tiny dataset with nominal positions 1-3 px off the true ones (random directions, seeded):
    returns (path, offsets_px (N, 2), dataset)."""
    import numpy as np

    from ptyopt.data import read_dataset, write_dataset

    ds = read_dataset(tiny_dataset_path)
    rng = np.random.default_rng(0)
    size_px = rng.uniform(1.0, 3.0, ds.n_patterns)
    angle = rng.uniform(0, 2 * np.pi, ds.n_patterns)
    offsets_px = np.stack([size_px * np.sin(angle), size_px * np.cos(angle)], axis=1)
    path = write_dataset(tmp_path / "perturbed.h5",
                         ds.replace(positions_ang=ds.truth.positions_ang + offsets_px * ds.dx_ang))
    return path, offsets_px, ds


def run_in_subprocess(config, out_dir: Path, *, resume: bool = False, prelude: str = "",
                      callbacks: str = "[]") -> int:
    """Run (or resume) ``config`` into out_dir in a fresh Python process, after the Python code ``prelude``, with
    ``callbacks`` (a Python expression) for the engine and this process's thread count; returns its exit code.
    Runs compared with each other should all run this way: a fresh process does not round exactly as this one
    (thread pools), and position refinement can amplify such round-off."""
    import os
    import subprocess
    import sys
    import textwrap

    from ptyopt.config import dump_config

    config_file = out_dir.parent / f"{out_dir.name}-config.yaml"
    config_file.write_text(dump_config(config))
    script = "import os, signal\n" + textwrap.dedent(prelude) + textwrap.dedent(f"""
        from ptyopt.config import load_config
        from ptyopt.reconstruct import run_reconstruction
        run_reconstruction(load_config({str(config_file)!r}), out_dir={str(out_dir)!r}, show_progress=False,
                           resume={resume}, callbacks={callbacks})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr)
    return proc.returncode


def run_until_killed(config, out_dir: Path, prelude: str, callbacks: str = "[]") -> None:
    """Run ``config`` in a fresh Python process into out_dir, after the Python code ``prelude`` (which arranges
    a SIGKILL, as a crash or an out-of-memory kill would), with ``callbacks`` (a Python expression) for the
    engine and this process's thread count (float sums depend on it); asserts that the process was killed."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    from ptyopt.config import dump_config

    config_file = out_dir.parent / f"{out_dir.name}-config.yaml"
    config_file.write_text(dump_config(config))
    script = "import os, signal\n" + textwrap.dedent(prelude) + textwrap.dedent(f"""
        from ptyopt.config import load_config
        from ptyopt.reconstruct import run_reconstruction
        run_reconstruction(load_config({str(config_file)!r}), out_dir={str(out_dir)!r}, show_progress=False,
                           callbacks={callbacks})
    """)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def kill_9_at(config, iteration: int, out_dir: Path) -> None:
    """Run ``config`` in a fresh process into out_dir and SIGKILL it after ``iteration`` completes."""
    run_until_killed(config, out_dir, f"""
        def kill(engine, iteration):
            if iteration == {iteration}:
                os.kill(os.getpid(), signal.SIGKILL)
    """, callbacks="[kill]")


def batch_loss_and_gradients(engine, refined: tuple[str, ...], chunk_patterns: int):
    """One batch (patterns 0, 3, ..., 39: 3 chunks of 5, 5, 4 at chunk_patterns 5) at a non-trivial state —
    textured object, shifted positions, unequal object-mode weights — through ``batch_objective_backward``:
    (each loss term, the gradients of ``refined`` on the CPU). The perturbation is drawn on the CPU in float64,
    so every device and precision starts from the same state."""
    import numpy as np

    from ptyopt.objective.batch import batch_objective_backward

    problem = engine.problem
    state = {k: v.detach().clone() for k, v in problem.initial_state.items()}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, draw, size in (("object_phase", torch.rand, 0.1), ("position_offsets_px", torch.randn, 0.3)):
            state[key] += (size * draw(state[key].shape, generator=g, dtype=torch.float64)).to(state[key])
        state["occupancy"].copy_(torch.linspace(0.6, 0.4, len(state["occupancy"])))
    for key in refined:
        state[key].requires_grad_(True)
    positions = np.arange(0, 40, 3)
    indices = torch.as_tensor(positions, device=problem.device)
    meas = engine.fetch(positions, indices)  # on the device, resampled on the fly where the config says so
    weights = {term.name: float(term.weight.value(1)) for term in engine.losses}
    values = batch_objective_backward(problem.model, state, indices, meas, engine.losses, weights,
                                      chunk_patterns=chunk_patterns)
    return values, {key: state[key].grad.detach().cpu() for key in refined}
