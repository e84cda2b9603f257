"""The deep-image-prior object (model.object_parametrisation: dip): gradients of the data loss with respect to the
network's weights against central differences, a network fitted to a known object reproduces it, the AD solvers
refine it, runs write the network's output and resume exactly, and what cannot use it is refused."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ptyopt.config import dump_config, load_config, parse_config
from ptyopt.data import Dataset4D, write_dataset
from ptyopt.errors import ConfigError
from ptyopt.model.dip import NetworkLayout
from ptyopt.model.dip_config import DipConfig
from ptyopt.model.dip_object import WEIGHTS_KEY, ObjectNetwork
from ptyopt.model.tensors import TENSOR_NAMES
from ptyopt.objective.losses import build_losses, loss_values
from ptyopt.problem import build_problem
from ptyopt.solvers import Batch, IterationPlan, SolverContext, TrainingSet, make_solver
from ptyopt.solvers.checks import check_config

# the network's weights refined instead of the object pixels
DIP = {"object_phase": {"start_iter": None}, "object_amplitude": {"start_iter": None},
       "object_dip": {"lr": 3e-3, "start_iter": 1}}
WINDOW_PX = 16


@pytest.fixture(scope="module")
def synthetic_path(tmp_path_factory):
    """Geometry only (16-px detector, 0.25 Å pixels, a 4×4 raster of 2-px steps); patterns come from a true state."""
    meas = np.ones((16, WINDOW_PX, WINDOW_PX), dtype=np.float32)
    dataset = Dataset4D.from_raster(meas, (4, 4), 0.5, energy_kv=300.0, conv_angle_mrad=20.0,
                                    dk_inv_ang=1.0 / (WINDOW_PX * 0.25), aberrations={"defocus": 20.0})
    return write_dataset(tmp_path_factory.mktemp("dip") / "synthetic.h5", dataset)


def synthetic_problem(path, *, dip=None, **model):
    raw = {"data": {"path": str(path)},
           "model": {"precision": "float64", "object_margin_px": 2, "aperture_edge": "hard", "n_slices": 2,
                     "object_parametrisation": "dip", "dip": {"channels": 8, **(dip or {})}, **model},
           "optimize": DIP}
    return build_problem(parse_config(raw))


def smooth_field(shape, sigma_px: float, seed: int) -> torch.Tensor:
    """Gaussian-filtered white noise (float64) with unit standard deviation."""
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    radius = int(3 * sigma_px)
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma_px) ** 2)
    kernel2d = (kernel[:, None] * kernel[None, :] / kernel.sum() ** 2)[None, None]
    flat = noise.reshape(-1, 1, *shape[-2:])
    smooth = F.conv2d(F.pad(flat, (radius,) * 4, mode="reflect"), kernel2d).reshape(shape)
    return smooth / smooth.std()


def true_patterns(problem, indices, seed=1):
    """Noise-free patterns of a random pixel object (a state without DIP weights runs as pixels)."""
    truth = {k: v.clone() for k, v in problem.initial_state.items() if k != WEIGHTS_KEY}
    truth["object_phase"] = 0.4 * smooth_field(truth["object_phase"].shape, 1.5, seed).abs()
    with torch.no_grad():
        return problem.model(truth, indices).intensities


def test_gradient_wrt_the_network_weights_matches_central_differences(synthetic_path):
    problem = synthetic_problem(synthetic_path)
    losses = build_losses(problem.config.loss)
    indices = torch.arange(0, 16, 3)
    meas = true_patterns(problem, indices)
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    g = torch.Generator().manual_seed(2)
    weights = state[WEIGHTS_KEY] + 0.05 * torch.randn(state[WEIGHTS_KEY].shape, generator=g, dtype=torch.float64)

    def loss(w):
        return loss_values(losses, problem.model({**state, WEIGHTS_KEY: w}, indices), meas)["single"]

    leaf = weights.clone().requires_grad_(True)
    loss(leaf).backward()
    grad = leaf.grad
    layout = problem.model.object_network.layout
    offset = 0
    with torch.no_grad():
        for name, shape in layout.shapes.items():  # every layer: its block of the gradient along a random direction
            count = int(np.prod(shape))
            direction = torch.zeros_like(weights)
            direction[offset : offset + count] = torch.randn(count, generator=g, dtype=torch.float64)
            offset += count
            step = 1e-5
            numeric = (loss(weights + step * direction) - loss(weights - step * direction)) / (2 * step)
            analytic = (grad * direction).sum()
            assert abs(float(analytic)) > 1e-8, f"no gradient reaches {name}"
            torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-12, msg=name)


def test_a_network_fitted_to_a_known_object_reproduces_it():
    shape = (1, 2, 40, 44)
    phase = 0.5 * smooth_field(shape, 2.0, seed=3)
    amplitude = 1 - 0.05 * torch.sigmoid(3 * smooth_field(shape, 2.0, seed=4))
    network = ObjectNetwork(DipConfig(), torch.ones(shape, dtype=torch.float64),
                            torch.zeros(shape, dtype=torch.float64), seed=0)
    start_amplitude, start_phase = network.object(network.initial_weights())
    assert torch.equal(start_phase, torch.zeros(shape, dtype=torch.float64))  # the head starts at 0: the base object
    assert torch.equal(start_amplitude, torch.ones(shape, dtype=torch.float64))
    weights, report = network.fit(network.initial_weights(), amplitude, phase, iterations=300, lr=5e-3)
    fitted_amplitude, fitted_phase = network.object(weights)
    phase_rms = float((fitted_phase - phase).pow(2).mean().sqrt())
    amplitude_rms = float((fitted_amplitude - amplitude).pow(2).mean().sqrt())
    assert phase_rms < 0.02 * float(phase.max() - phase.min())
    assert amplitude_rms < 0.02 * float(amplitude.max() - amplitude.min())
    assert report["phase_rms_rad"] == pytest.approx(phase_rms) and report["amplitude_rms"] == pytest.approx(
        amplitude_rms)


def test_the_weights_are_one_flat_vector_the_layers_view():
    layout = NetworkLayout.of(DipConfig(channels=4, levels=1, code_channels=2), out_channels=3)
    assert layout.size == 4 * 2 * 9 + 4 * 4 * 9 + 4 * 4 * 9 + 3 * 4 + 3
    flat = torch.arange(layout.size, dtype=torch.float64)
    views = layout.unflatten(flat)
    assert torch.equal(torch.cat([v.reshape(-1) for v in views.values()]), flat)
    views["head.bias"][0] = -1.0
    assert flat[layout.size - 3] == -1.0  # views, not copies: gradients and in-place steps reach the vector
    network = ObjectNetwork(DipConfig(channels=4), torch.ones(1, 1, 20, 20), torch.zeros(1, 1, 20, 20), seed=5)
    again = ObjectNetwork(DipConfig(channels=4), torch.ones(1, 1, 20, 20), torch.zeros(1, 1, 20, 20), seed=5)
    other = ObjectNetwork(DipConfig(channels=4), torch.ones(1, 1, 20, 20), torch.zeros(1, 1, 20, 20), seed=6)
    assert torch.equal(network.initial_weights(), again.initial_weights()) and torch.equal(network.code, again.code)
    assert not torch.equal(network.initial_weights(), other.initial_weights())


def _solver(problem, name, state):
    return make_solver(name, {}, SolverContext.of(problem, state, build_losses(problem.config.loss)))


def _iterate(solver, problem, active, meas_of):
    """One engine iteration of either kind of solver over the 16 positions (4 batches for mini-batch solvers)."""
    rates = {name: float(u.lr.value(1)) for name, u in problem.config.optimize.updates().items()
             if u.start_iter is not None}
    solver.start_iteration(IterationPlan(1, {n: n in active for n in TENSOR_NAMES}, rates, 1.0, {"single": 1.0}))
    if solver.kind == "full_batch":
        solver.run_iteration(TrainingSet(np.arange(16), lambda part, _: meas_of(part), problem.device))
        return
    for group in np.arange(16).reshape(4, 4):
        solver.update(Batch(group, torch.as_tensor(group), meas_of(group)), True)
    solver.end_iteration()


@pytest.mark.parametrize("name", ["adam", "AdamW", "lbfgs"])
def test_the_ad_solvers_refine_the_network_and_the_loss_falls(name, synthetic_path):
    problem = synthetic_problem(synthetic_path)
    meas = true_patterns(problem, torch.arange(16))
    meas_of = lambda part: meas[torch.as_tensor(part)]  # noqa: E731
    losses = build_losses(problem.config.loss)

    def data_loss(state):
        with torch.no_grad():
            return float(loss_values(losses, problem.model(state, torch.arange(16)), meas)["single"])

    state = {k: v.clone() for k, v in problem.initial_state.items()}
    start = {k: v.clone() for k, v in state.items()}
    solver = _solver(problem, name, state)
    for _ in range(2):
        _iterate(solver, problem, ("object_dip",), meas_of)
    assert data_loss(state) < 0.9 * data_loss(start)
    for key in start:  # the pixels follow only when stored (the engine does so after every iteration)
        assert torch.equal(state[key].detach(), start[key]) == (key != WEIGHTS_KEY), key
    problem.model.store_object(state)
    amplitude, phase = problem.model.object_network.object(state[WEIGHTS_KEY].detach())
    assert torch.equal(state["object_phase"], phase) and torch.equal(state["object_amplitude"], amplitude)
    frozen = {k: v.detach().clone() for k, v in state.items()}
    _iterate(solver, problem, ("probe",), meas_of)
    assert torch.equal(state[WEIGHTS_KEY].detach(), frozen[WEIGHTS_KEY])  # a closed window keeps the network


def test_a_phase_only_network_keeps_the_amplitude_as_pixels(synthetic_path):
    problem = synthetic_problem(synthetic_path, dip={"amplitude": False})
    network = problem.model.object_network
    assert network.keys == ("object_phase",) and network.layout.out_channels == 2  # omode · S phase channels
    state = {k: v.clone() for k, v in problem.initial_state.items()}
    state["object_amplitude"] = torch.full_like(state["object_amplitude"], 0.9)
    assert torch.equal(problem.model.materialise(state)["object_amplitude"], state["object_amplitude"])
    config = parse_config({"data": {"path": "x.h5"}, "model": {"object_parametrisation": "dip", "dip": {
        "amplitude": False}}, "optimize": {**DIP, "object_amplitude": {"start_iter": 1}},
        "constraints": {"amplitude_threshold": {}, "object_blur": {"target": "amplitude"}}})
    assert check_config(config) == []  # the amplitude pixels may be refined and constrained


def test_a_state_without_weights_runs_as_pixels(synthetic_path):
    """A result read back (``ptyopt evaluate``, ``explain``) holds the object as pixels and no weights."""
    problem = synthetic_problem(synthetic_path)
    pixels = {k: v.clone() for k, v in problem.initial_state.items() if k != WEIGHTS_KEY}
    pixels["object_phase"] += 0.3
    assert problem.model.materialise(pixels) is pixels


def raw_dip(**sections):
    raw = {"data": {"path": "x.h5"}, "model": {"object_parametrisation": "dip"}, "optimize": dict(DIP)}
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


REFUSED = [
    (raw_dip(solver={"name": "lsqml"}), "solver 'lsqml' cannot use a deep-image-prior object .* use solver.name: adam"),
    (raw_dip(solver={"name": "epie"}), "solver 'epie' cannot use a deep-image-prior object .* or lbfgs"),
    (raw_dip(solver={"name": "lm"}, model={"tilt_mode": "each"}), "solver 'lm' cannot use a deep-image-prior object"),
    (raw_dip(solver={"name": "ssnal"}, model={"tilt_mode": "each"}), "solver 'ssnal' cannot use a deep-image-prior"),
    (raw_dip(solver={"switch": [{"start_iter": 5, "name": "rpie"}]}),
     r"solver.switch\[0\] \(rpie\): solver 'rpie' cannot use a deep-image-prior object"),
    (raw_dip(optimize={"object_phase": {"start_iter": 1}}),
     "object_phase is the network's output .* set optimize.object_phase.start_iter: null"),
    (raw_dip(optimize={"object_amplitude": {"start_iter": 3}}),
     "set optimize.object_amplitude.start_iter: null .* or model.dip.amplitude: false"),
    ({"data": {"path": "x.h5"}, "optimize": {"object_dip": {"start_iter": 1}}},
     "model.object_parametrisation is pixels; set model.object_parametrisation: dip or "
     "optimize.object_dip.start_iter: null"),
    (raw_dip(constraints={"kz_filter": {}}), "constraint 'kz_filter' edits object_amplitude and object_phase"),
    (raw_dip(constraints={"phase_positive": {}}), "constraint 'phase_positive' edits object_phase, .* remove "
     "constraints.phase_positive"),
    (raw_dip(optimize={"scan_affine": {"start_iter": 1}}, solver={"scan_search": {}}),
     "solver.scan_search carries the object pixels .* remove solver.scan_search"),
]


@pytest.mark.parametrize(("raw", "message"), REFUSED)
def test_what_cannot_use_a_dip_object_is_refused_with_what_to_change(raw, message):
    with pytest.raises(ConfigError, match=message):
        check_config(parse_config(raw))


def test_ad_solvers_accept_a_dip_object_and_unused_settings_are_noted():
    for name in ("adam", "SGD"):
        assert check_config(parse_config(raw_dip(solver={"name": name}))) == []
    lr_note = "'lbfgs' chooses its own step sizes: optimize.object_dip.lr is not used (the update windows are)"
    assert check_config(parse_config(raw_dip(solver={"name": "lbfgs"}))) == [f"solver {lr_note}"]
    switched = raw_dip(solver={"switch": [{"start_iter": 4, "name": "lbfgs"}]})
    assert check_config(parse_config(switched)) == [f"solver.switch[0] {lr_note}"]
    notes = check_config(parse_config({"data": {"path": "x.h5"}, "model": {"dip": {"channels": 8}}}))
    assert any("model.dip is set but model.object_parametrisation is pixels" in note for note in notes)


def test_too_many_levels_for_the_canvas_say_how_many_fit():
    with pytest.raises(ConfigError, match=r"model.dip.levels is 5, .* set model.dip.levels <= 4"):
        ObjectNetwork(DipConfig(levels=5), torch.ones(1, 1, 20, 24), torch.zeros(1, 1, 20, 24), seed=0)


def test_the_dip_config_round_trips_with_every_default_visible(tmp_path):
    raw = raw_dip(model={"dip": {"channels": 16, "fit_to": "pixels/result.h5"}})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path)
    assert config.model.dip.fit_to == (tmp_path / "pixels" / "result.h5").resolve()  # relative to the config
    resolved = yaml.safe_load(dump_config(config))
    assert resolved["model"]["object_parametrisation"] == "dip"
    assert set(resolved["model"]["dip"]) == set(DipConfig.model_fields) and resolved["model"]["dip"]["levels"] == 2
    assert resolved["optimize"]["object_dip"]["start_iter"] == 1
    assert parse_config(resolved) == config
    default = parse_config({"data": {"path": "x.h5"}})
    assert default.model.object_parametrisation == "pixels" and default.optimize.object_dip.start_iter is None


# ---- on the abTEM dataset: runs, results, warm start, resume ----------------------------------------------------


@pytest.mark.abtem
def test_an_adam_run_writes_the_network_output_and_evaluates(tiny_config, tmp_path):
    from ptyopt.evaluate.data_fidelity import result_r_factor
    from ptyopt.explain.gradients import refined_tensors
    from ptyopt.explain.session import open_session
    from ptyopt.io.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from ptyopt.reconstruct import run_reconstruction

    config = tiny_config(model={"object_parametrisation": "dip", "dip": {"channels": 16}}, optimize=DIP,
                         solver={"iterations": 4}, output={"checkpoint_every": 4})
    run = run_reconstruction(config, out_dir=tmp_path / "dip", show_progress=False)
    single = run.result.history["single"]
    assert single[-1] < 0.7 * single[0]
    weights = load_checkpoint(tmp_path / "dip" / CHECKPOINT_NAME, "cpu")["state"][WEIGHTS_KEY]
    network = build_problem(config, warm_start=False).model.object_network
    with torch.no_grad():
        amplitude, phase = network.object(weights)
    np.testing.assert_array_equal(run.result.object_phase, phase.numpy())
    np.testing.assert_array_equal(run.result.object_amplitude, amplitude.numpy())
    assert np.ptp(run.result.object_phase) > 0.1
    pixels = run_reconstruction(tiny_config(solver={"iterations": 1}), out_dir=tmp_path / "pixels",
                                show_progress=False)
    assert result_r_factor(run.result) < result_r_factor(pixels.result)  # evaluated as pixels, as a pixel result
    session = open_session(tmp_path / "dip" / "result.h5")  # explain: the weights count as the pixels they give
    assert refined_tensors(session) == ["object_amplitude", "object_phase", "probe", "positions"]


@pytest.mark.abtem
def test_warm_start_fits_the_network_to_a_pixel_result(tiny_config, tmp_path):
    from ptyopt.reconstruct import run_reconstruction

    fast = {"object_phase": {"lr": 1e-2}, "object_amplitude": {"lr": 5e-3}}
    pixels = run_reconstruction(tiny_config(optimize=fast), out_dir=tmp_path / "pixels", show_progress=False)
    target = pixels.result.object_phase
    dip = {"channels": 16, "fit_to": str(tmp_path / "pixels" / "result.h5"), "fit_iterations": 150}
    config = tiny_config(model={"object_parametrisation": "dip", "dip": dip}, optimize=DIP)
    problem = build_problem(config)
    state = problem.initial_state
    rms = np.sqrt(np.mean((state["object_phase"].numpy() - target) ** 2))
    assert rms == pytest.approx(problem.warm_start["phase_rms_rad"], rel=1e-4)
    assert rms < 0.05 * np.ptp(target) and rms < 0.5 * np.sqrt(np.mean(target**2))  # vacuum: 100 % of it
    fitted = problem.model.object_network.object(state[WEIGHTS_KEY])[1]
    assert torch.equal(fitted, state["object_phase"])  # the initial pixels are the fitted network's output
    resumed = build_problem(config, warm_start=False)  # a resumed run takes its weights from the checkpoint
    assert resumed.warm_start is None and torch.equal(resumed.initial_state["object_phase"],
                                                      torch.zeros_like(state["object_phase"]))
    missing = tiny_config(model={"object_parametrisation": "dip", "dip": {"fit_to": str(tmp_path / "none.h5")}},
                          optimize=DIP)
    with pytest.raises(ConfigError, match="model.dip.fit_to: no file at .* give a result.h5"):
        build_problem(missing)


@pytest.mark.abtem
def test_kill_9_then_resume_continues_exactly(tiny_config, tmp_path):
    from ptyopt.io.result_file import read_result
    from tests.conftest import kill_9_at, run_in_subprocess

    config = tiny_config(model={"object_parametrisation": "dip", "dip": {"channels": 8}},
                         optimize={**DIP, "probe": {"lr": 1e-4, "start_iter": 2}}, solver={"iterations": 4})
    run_in_subprocess(config, tmp_path / "reference")
    kill_9_at(config, 3, tmp_path / "killed")  # the checkpoint of iteration 2 survives
    run_in_subprocess(config, tmp_path / "killed", resume=True)
    reference, resumed = (read_result(tmp_path / name / "result.h5") for name in ("reference", "killed"))
    for name in ("object_phase", "object_amplitude", "probe"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)
    np.testing.assert_array_equal(resumed.history["single"], reference.history["single"])
