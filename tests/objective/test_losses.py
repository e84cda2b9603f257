import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.objective.losses import LOSSES, LossInputs, build_losses, parse_losses


def _inputs(pred=None, meas=None, omodes=2, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    meas = torch.rand(3, 6, 6, dtype=torch.float64, generator=g) + 0.1 if meas is None else meas
    pred = (meas * (1 + 0.3 * torch.rand(3, 6, 6, dtype=torch.float64, generator=g))) if pred is None else pred
    phase = 0.3 * torch.rand(3, omodes, 2, 4, 4, dtype=torch.float64, generator=g)
    amplitude = 1 - 0.1 * torch.rand(3, omodes, 2, 4, 4, dtype=torch.float64, generator=g)
    occupancy = torch.full((omodes,), 1.0 / omodes, dtype=torch.float64)
    if requires_grad:
        pred, phase, amplitude = (t.clone().requires_grad_() for t in (pred, phase, amplitude))
    return LossInputs(pred, meas, phase, amplitude, occupancy)


def _term(name, **params):
    terms = build_losses(parse_losses({"poisson": {}} | {name: params}))  # a data term makes the loss valid
    return next(term for term in terms if term.name == name)


@pytest.mark.parametrize("name", LOSSES.names())
def test_finite_scalar_and_gradcheck(name):
    term = _term(name)
    value = term(_inputs())
    assert value.dim() == 0 and torch.isfinite(value)
    base = _inputs()

    def f(pred, phase, amplitude):
        return term(LossInputs(pred, base.meas, phase, amplitude, base.occupancy))

    grad_inputs = _inputs(requires_grad=True)
    assert torch.autograd.gradcheck(f, (grad_inputs.pred, grad_inputs.phase_patches, grad_inputs.amplitude_patches))


@pytest.mark.parametrize("name", [n for n in LOSSES.names() if LOSSES.get(n).is_data_term])
def test_data_terms_are_minimal_at_the_data(name):
    term = _term(name)
    meas = _inputs().meas
    at_data = term(_inputs(pred=meas.clone()))
    assert at_data.item() == pytest.approx(0.0, abs=1e-6)
    for scale in (0.9, 1.1):
        assert term(_inputs(pred=meas * scale)) > at_data
    if name == "poisson":  # smooth at its minimum (the RMSE terms have a cusp there, like any norm)
        pred = meas.clone().requires_grad_()
        term(_inputs(pred=pred, meas=meas)).backward()
        assert pred.grad.abs().max() < 1e-6


def test_object_terms_do_their_job():
    sparse, simlar = _term("sparse"), _term("simlar")
    inputs = _inputs()
    assert sparse(inputs) > 0
    zero = LossInputs(inputs.pred, inputs.meas, torch.zeros_like(inputs.phase_patches), inputs.amplitude_patches,
                      inputs.occupancy)
    assert sparse(zero).item() == pytest.approx(0.0, abs=1e-8)
    assert simlar(inputs) > 0  # two different object modes
    same = inputs.phase_patches[:, :1].expand_as(inputs.phase_patches)
    same_amp = inputs.amplitude_patches[:, :1].expand_as(inputs.amplitude_patches)
    assert simlar(LossInputs(inputs.pred, inputs.meas, same, same_amp, inputs.occupancy)).item() == pytest.approx(0)
    one = _inputs(omodes=1)
    assert simlar(one).item() == 0.0 and torch.isfinite(simlar(one))


def test_pacbed_sees_only_the_average():
    term = _term("pacbed")
    meas = _inputs().meas
    swapped = meas[[1, 2, 0]]  # same batch average, every single pattern wrong
    assert term(_inputs(pred=swapped, meas=meas)).item() == pytest.approx(0.0, abs=1e-6)
    assert _term("single")(_inputs(pred=swapped, meas=meas)) > 0.01


def test_parse_errors_and_defaults():
    with pytest.raises(ConfigError, match="did you mean 'pacbed'"):
        parse_losses({"pacbd": {}})
    with pytest.raises(ConfigError, match="unknown key 'loss.single.dp_power'; did you mean 'dp_pow'"):
        parse_losses({"single": {"dp_power": 0.5}})
    with pytest.raises(ConfigError, match="at least one data term"):
        parse_losses({"sparse": {}})
    dumped = parse_losses({"single": {}})["single"].model_dump(mode="json")
    assert dumped == {"weight": {"kind": "constant", "value": 1.0}, "dp_pow": 0.5}
