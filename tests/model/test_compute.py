"""Speed options change nothing but round-off: chunked vs whole batches, compiled vs eager forward; the memory
estimate covers what autograd really keeps."""

import pytest
import torch

from ptyopt.engine import Engine
from ptyopt.model.memory import activation_bytes_per_pattern, plan_memory
from ptyopt.problem import build_problem
from tests.conftest import batch_loss_and_gradients

pytestmark = pytest.mark.abtem

ALL_TERMS = {"single": {"weight": 1.0}, "pacbed": {"weight": 0.5}, "sparse": {"weight": 0.1},
             "similarity": {"weight": 0.1}}
REFINED = ("object_amplitude", "object_phase", "probe", "position_offsets_px", "occupancy")


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_chunked_batches_give_the_same_loss_and_gradient(tiny_config, tmp_path, precision):
    config = tiny_config(model={"object_modes": 2, "probe_modes": 2, "precision": precision}, loss=ALL_TERMS)
    problem = build_problem(config)
    engine = Engine(problem, tmp_path / "run")
    whole_values, whole = batch_loss_and_gradients(engine, REFINED, chunk_patterns=100)
    chunk_values, chunked = batch_loss_and_gradients(engine, REFINED, chunk_patterns=5)
    tol = {"float32": dict(rtol=2e-4, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-13)}[precision]
    for name in whole_values:
        torch.testing.assert_close(chunk_values[name], whole_values[name], **tol)
    for key in REFINED:
        scale = whole[key].abs().max()
        assert scale > 0, key
        torch.testing.assert_close(chunked[key] / scale, whole[key] / scale, **tol)


def test_compiled_forward_matches_eager(tiny_config):
    eager = build_problem(tiny_config(model={"probe_modes": 2}))
    compiled = build_problem(tiny_config(model={"probe_modes": 2}, compute={"compile": True}))
    state = {k: v.detach().clone().requires_grad_(v.is_floating_point() or v.is_complex())
             for k, v in eager.initial_state.items()}
    indices = torch.arange(8)
    results = []
    for problem in (eager, compiled):
        intensities = problem.model(state, indices).intensities
        grad = torch.autograd.grad(intensities.square().sum(), (state["object_phase"], state["probe"]))
        results.append((intensities.detach(), *grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6 * float(a.abs().max()))


def test_memory_estimate_covers_what_autograd_saves(tiny_config):
    config = tiny_config(model={"n_slices": 3, "probe_modes": 3, "object_modes": 2})
    problem = build_problem(config)
    state = {k: v.detach().clone().requires_grad_(v.is_floating_point() or v.is_complex())
             for k, v in problem.initial_state.items()}
    saved: dict[int, int] = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    sizes = {}
    for batch in (4, 12):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            problem.model(state, torch.arange(batch)).intensities.sum()
        sizes[batch] = sum(saved.values())
    measured_per_pattern = (sizes[12] - sizes[4]) / 8
    estimate = activation_bytes_per_pattern(config.model, problem.geometry.window_px, 8)
    assert measured_per_pattern <= estimate <= 1.8 * measured_per_pattern, (measured_per_pattern, estimate)


def test_auto_chunking_splits_only_what_does_not_fit(tiny_config, monkeypatch):
    import ptyopt.model.memory as memory

    problem = build_problem(tiny_config(solver={"batch_size": 16}))
    plan = problem.memory
    assert plan.chunk_patterns == 16 and plan.chunks_per_batch == 1
    tight = plan.fixed_bytes + 5 * plan.bytes_per_pattern  # room for 5 patterns at memory_fraction 1
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: tight)
    config = tiny_config(solver={"batch_size": 16}, compute={"memory_fraction": 1.0})
    small = plan_memory(config, problem.geometry, problem.device, 8)
    assert small.chunk_patterns == 5 and small.chunks_per_batch == 4
    assert "4 chunks of up to 5" in small.describe()
    fixed = plan_memory(tiny_config(compute={"chunk_patterns": 3}), problem.geometry, problem.device, 8)
    assert fixed.chunk_patterns == 3
