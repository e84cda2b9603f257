"""The same code on a GPU: every solver runs on CUDA unchanged and agrees with the CPU to float32 round-off.

Skipped where torch sees no CUDA device (as on CI); on a GPU machine run ``pytest tests/test_cuda.py``. The data
are the bench's synthetic ``tiny`` set (made with ptyopt's own forward model), so abTEM is not needed here."""

import math

import numpy as np
import pytest
import torch

from ptyopt.bench import bench_config, get_bench_preset, run_bench, synthetic_dataset
from ptyopt.engine import Engine
from ptyopt.problem import build_problem
from ptyopt.reconstruct import run_reconstruction
from tests.conftest import batch_loss_and_gradients

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

REFINED = ("object_amplitude", "object_phase", "probe", "position_offsets_px")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return synthetic_dataset(get_bench_preset("tiny"), tmp_path_factory.mktemp("cuda-data"))


def _config(data_path, out_dir, device, **overrides):
    base = {"solver.iterations": 4, "solver.grouping": "compact", "optimize.probe.start_iter": 1,
            "optimize.positions.start_iter": 1, "loss.similarity.weight": 0.1, "model.object_modes": 2}
    return bench_config(get_bench_preset("tiny"), data_path, out_dir, device, {**base, **overrides})


def _loss_and_gradients(config, chunk):
    return batch_loss_and_gradients(Engine(build_problem(config), config.output.dir), REFINED, chunk_patterns=chunk)


@pytest.mark.parametrize("chunk", [100, 5], ids=["whole", "chunked"])
def test_loss_and_gradient_on_cuda_match_the_cpu(data_path, tmp_path, chunk):
    cpu_values, cpu_grads = _loss_and_gradients(_config(data_path, tmp_path / "cpu", "cpu"), chunk=100)
    gpu_values, gpu_grads = _loss_and_gradients(_config(data_path, tmp_path / "gpu", "cuda"), chunk=chunk)
    for name, value in cpu_values.items():
        assert math.isclose(gpu_values[name], value, rel_tol=1e-4, abs_tol=1e-7), name
    for key, grad in cpu_grads.items():
        scale = grad.abs().max()
        assert scale > 0, key
        torch.testing.assert_close(gpu_grads[key] / scale, grad / scale, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("solver", ["adam", "epie", "lsqml", "lbfgs", "lm", "ssnal"])
def test_every_solver_runs_on_cuda_and_matches_the_cpu_in_float64(data_path, tmp_path, solver):
    """Whole runs are compared in float64: a few float32 Adam iterations amplify round-off to ~0.4 % of the loss
    (CPU float32 vs CPU float64 on this set: 0.44 % and 0.016 rad), too much to tell a real difference from."""
    overrides = {"solver.name": solver, "model.precision": "float64"}
    if solver in ("lbfgs", "lm", "ssnal"):
        overrides["solver.iterations"] = 2
    if solver == "ssnal":  # small inner loops: its default caps make one iteration a minute on this size
        overrides["solver.options"] = {"max_alm": 3, "max_newton": 5, "cg_max_iter": 20}
    runs = {}
    for device in ("cpu", "cuda"):
        config = _config(data_path, tmp_path / device, device, **overrides)
        runs[device] = run_reconstruction(config, show_progress=False)
    cpu, gpu = (runs[d].result for d in ("cpu", "cuda"))
    assert np.isfinite(gpu.history["total"]).all()
    np.testing.assert_allclose(gpu.history["total"], cpu.history["total"], rtol=1e-7)
    np.testing.assert_allclose(gpu.object_phase, cpu.object_phase, atol=1e-7)
    np.testing.assert_allclose(gpu.probe, cpu.probe, atol=1e-7 * np.abs(cpu.probe).max())
    assert (runs["cuda"].out_dir / "result.h5").exists()


def test_bench_on_cuda_reports_gpu_memory(data_path, tmp_path):
    result = run_bench(get_bench_preset("tiny"), device="cuda", warmup=1, iterations=2,
                       cache_dir=data_path.parent, out_dir=tmp_path)
    assert result.device.startswith("cuda")
    assert result.peak_gpu_mib is not None and result.peak_gpu_mib > 0
    assert result.fft_floor_s > 0 and result.median_iteration_s > result.fft_floor_s


def test_compiled_forward_on_cuda_matches_eager(data_path, tmp_path):
    """compute.compile on a GPU (not yet run on one: ptyopt warns that it is unverified there until this passes;
    a CUDA-graph variant, torch.compile's 'reduce-overhead', gave one batch's position gradient wrong)."""
    results = []
    for overrides in ({}, {"compute.compile": True}):
        config = _config(data_path, tmp_path / str(len(results)), "cuda", **overrides)
        problem = build_problem(config)
        state = {k: v.detach().clone().requires_grad_(k in REFINED) for k, v in problem.initial_state.items()}
        outputs = []
        for start in (0, 16, 0):  # a replay with other indices, then the first batch again
            indices = torch.arange(start, start + 16, device=problem.device)
            intensities = problem.model(state, indices).intensities
            grads = torch.autograd.grad(intensities.square().sum(), [state[k] for k in REFINED])
            outputs.append((intensities.detach().cpu(), [g.detach().cpu() for g in grads]))
        results.append(outputs)
    for (eager_i, eager_g), (graph_i, graph_g) in zip(*results, strict=True):
        torch.testing.assert_close(graph_i, eager_i, rtol=1e-4, atol=1e-6)
        for e, g in zip(eager_g, graph_g, strict=True):
            scale = e.abs().max()
            torch.testing.assert_close(g / scale, e / scale, rtol=1e-3, atol=1e-4)
