"""ptyopt explain: gradient shares against the total gradient, landscape minima at known answers, the probe
through the slices against free-space propagation, per-position residuals against the R-factor, the CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import dump_config
from ptyopt.evaluate import load_result
from ptyopt.evaluate.data_fidelity import model_r_factor
from ptyopt.evaluate.evaluation import per_slice_frc
from ptyopt.explain.gradients import gradient_shares, term_gradients
from ptyopt.explain.landscape import landscape_cut
from ptyopt.explain.probe_depth import probe_through_slices
from ptyopt.explain.residuals import position_residuals
from ptyopt.explain.session import batch_terms, batches, open_session, weights_at
from ptyopt.io.result_file import write_result
from ptyopt.physics import propagate, propagator, shift_probes, split_positions
from ptyopt.problem import build_problem
from ptyopt.reconstruct import result_from_state, run_reconstruction

runner = CliRunner()


def result_of_initial_state(config, path):
    """A result file holding the config's initial state (no iteration): e.g. the true object with a probe of a
    chosen defocus."""
    problem = build_problem(config)
    write_result(path, result_from_state(problem, problem.initial_state, {}, dump_config(config)))
    return path


@pytest.fixture(scope="module")
def short_run(tiny_dataset_path, tmp_path_factory):
    """Three iterations of Adam with three loss terms, a snapshot each iteration."""
    from ptyopt.config import parse_config

    out = tmp_path_factory.mktemp("explain_run")
    config = parse_config({
        "data": {"path": str(tiny_dataset_path)},
        "model": {"n_slices": 2, "slice_thickness_ang": 3.905, "aperture_edge": "hard", "probe_modes": 2},
        "optimize": {"probe": {"start_iter": 2}, "positions": {"start_iter": 2}},
        "loss": {"single": {"weight": 1.0}, "pacbed": {"weight": 0.5}, "sparse": {"weight": 0.1}},
        "solver": {"iterations": 3, "batch_size": 8},
        "output": {"dir": str(out / "run"), "snapshot_every": 1},
    })
    run_reconstruction(config, show_progress=False)
    return out / "run" / "result.h5"


def test_gradient_shares_sum_to_the_total_gradient(short_run):
    session = open_session(short_run, max_positions=40)
    weights = weights_at(session.result, session.losses)
    assert weights == {"single": 1.0, "pacbed": 0.5, "sparse": 0.1}
    tensors = ["object_phase", "object_amplitude", "probe", "positions"]
    per_term = term_gradients(session, session.state, weights, tensors)
    # the total gradient, independently: one backward pass of the summed objective per batch
    params = {k: v.detach().clone() for k, v in session.state.items()}
    leaves = [params[k].requires_grad_(True) for k in ("object_phase", "object_amplitude", "probe",
                                                        "position_offsets_px")]
    chunks = batches(session.indices, session.batch_size)
    for chunk in chunks:
        (sum(batch_terms(session, params, chunk, weights).values()) / len(chunks)).backward()
    for name, leaf in zip(tensors, leaves, strict=True):
        summed = sum(per_term[term][name] for term in per_term)
        assert torch.allclose(summed, leaf.grad, rtol=1e-4, atol=1e-4 * float(leaf.grad.abs().max())), name
    shares = gradient_shares(per_term)
    for name in tensors:
        assert sum(shares["shares"][name].values()) == pytest.approx(1.0, abs=1e-6)
        assert shares["total_norm"][name] == pytest.approx(float(torch.linalg.vector_norm(leaves[tensors.index(
            name)].grad)), rel=1e-4)
    assert shares["shares"]["probe"]["sparse"] == 0.0  # an object-only term does not touch the probe
    assert shares["shares"]["object_phase"]["sparse"] != 0.0


@pytest.mark.parametrize("start_defocus_ang", [85.0, 20.0])
def test_defocus_cut_has_its_minimum_at_the_true_defocus(tiny_config, tmp_path, start_defocus_ang):
    """The true object with a probe of the wrong defocus: the cut finds the simulation's 50 Å from either side."""
    config = tiny_config(experiment={"aberrations": {"defocus": start_defocus_ang}}, model={"object_init": "truth"},
                         optimize={"positions": {"start_iter": None}})
    session = open_session(result_of_initial_state(config, tmp_path / "r.h5"))
    cut = landscape_cut(session, "defocus", weights_at(session.result, session.losses), half_range=70.0, points=29)
    assert cut.reference == start_defocus_ang
    assert cut.best_value == pytest.approx(50.0, abs=3.0)


def test_position_map_finds_a_displaced_position(perturbed_positions, tiny_config, tmp_path):
    """True object and probe, nominal positions 1-3 px off: the map of a position finds its true place."""
    path, offsets_px, truth_dataset = perturbed_positions
    config = tiny_config(data={"path": str(path)}, model={"object_init": "truth", "probe_init": "truth"})
    session = open_session(result_of_initial_state(config, tmp_path / "r.h5"))
    index = 40
    cut = landscape_cut(session, "position", weights_at(session.result, session.losses), index=index,
                        half_range=0.7, points=29)
    expected = -offsets_px[index] * truth_dataset.dx_ang  # nominal = truth + offset
    assert np.abs(expected).max() < 0.7
    assert np.allclose(cut.best_offset, expected, atol=0.06)


def test_probe_in_vacuum_is_free_space_propagation(tiny_config, tmp_path):
    config = tiny_config(model={"n_slices": 4, "slice_thickness_ang": 5.0, "probe_modes": 1})
    session = open_session(result_of_initial_state(config, tmp_path / "r.h5"))
    depth = probe_through_slices(session, [5, 30], ["a", "b"])
    probe = session.state["probe"][0]
    geometry = session.problem.geometry
    ky, kx = session.model.ky, session.model.kx
    h = propagator(ky, kx, torch.tensor([5.0]), geometry.wavelength_ang)[0]
    wave = shift_probes(probe[None], probe_shift_of(session, 5)[None])[0, 0]
    for s in range(4):
        expected = (wave.abs() ** 2).double().numpy()
        assert np.allclose(depth.intensity[0, s], expected, atol=1e-6 * expected.max()), s
        wave = propagate(wave, h)
    assert np.allclose(depth.power, depth.power[:, :1], rtol=1e-5)  # vacuum absorbs nothing
    assert np.allclose(depth.depth_ang, [0, 5, 10, 15])


def probe_shift_of(session, index):
    centres = session.model.centres_px(session.state, torch.tensor([index]))
    return split_positions(centres, session.problem.geometry.window_px)[1][0]


def test_position_residuals_weighted_are_the_r_factor(short_run):
    session = open_session(short_run)
    residuals = position_residuals(session)
    roots = session.problem.patterns(np.arange(session.problem.dataset.n_patterns)).double().clamp_min(0).sqrt()
    weights = roots.sum(dim=(-2, -1)).numpy()
    assert np.sum(residuals * weights) / weights.sum() == pytest.approx(model_r_factor(session.problem,
                                                                                       session.state), rel=1e-5)


def test_per_slice_frc_of_a_result_with_itself_is_one(short_run):
    result = load_result(short_run)
    per_slice = per_slice_frc(result, result, margin_ang=0.5)
    assert [entry["slice"] for entry in per_slice] == [0, 1]
    for entry in per_slice:
        assert np.allclose(entry["frc"]["frc"], 1.0, atol=1e-6)


def test_cli_writes_every_diagnostic(short_run, tmp_path):
    out = tmp_path / "explain"
    result = runner.invoke(app, ["explain", str(short_run), "--out", str(out), "--cut", "defocus", "--cut",
                                 "position:20", "--cut-points", "5", "--compare", str(short_run)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "explain.json").read_text())
    assert summary["gradient_shares"]["iterations"] == [1, 2, 3]  # the snapshots
    assert set(summary["gradient_shares"]["values"][-1]["shares"]) == {"object_amplitude", "object_phase", "probe",
                                                                      "positions"}
    assert [c["parameter"] for c in summary["cuts"]] == ["defocus", "position"]
    assert len(summary["slice_frc"]) == 2
    for name in ("probe_depth.png", "gradient_shares.png", "landscape_defocus.png", "landscape_position_20.png",
                 "position_field.png", "residuals.png", "slice_frc.png"):
        assert (out / name).stat().st_size > 1000, name
    assert "gradient of probe" in result.output and "cut position 20" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--cut", "defocuss"], "did you mean 'defocus'"),
    (["--cut", "position:99999"], "does not exist"),
    (["--cut", "slice_thickness", "--cut-range", "10"], "would make the"),
    (["--data", "/nonexistent/data.h5"], "not there"),
])
def test_cli_refuses_bad_requests_and_writes_nothing(short_run, tmp_path, args, message):
    out = tmp_path / "explain"
    result = runner.invoke(app, ["explain", str(short_run), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()
