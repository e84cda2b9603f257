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
    sparse, simlar = _term("sparse"), _term("similarity")
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


@pytest.mark.parametrize("name", ["sparse", "similarity"])
@pytest.mark.parametrize("order", [1.0, 2.0])
def test_object_terms_on_the_canvas_equal_the_patch_form(name, order):
    """ForwardOutput.loss_inputs averages over the batch's windows with the coverage map instead of gathering
    the patches: same value and same gradient (overlapping windows, two object modes)."""
    from ptyopt.objective.losses import ObjectUnderBatch
    from ptyopt.physics import gather_patches, window_coverage

    term = _term(name, **({"order": order} if name == "sparse" else {}))
    g = torch.Generator().manual_seed(1)
    phase = (0.3 * torch.randn(2, 3, 20, 22, dtype=torch.float64, generator=g)).requires_grad_()
    amplitude = (1 - 0.1 * torch.rand(2, 3, 20, 22, dtype=torch.float64, generator=g)).requires_grad_()
    crop = torch.tensor([[0, 0], [3, 5], [4, 6], [12, 14], [3, 5]])  # repeated and overlapping windows
    window = (8, 8)
    occupancy = torch.tensor([0.7, 0.3], dtype=torch.float64)
    pred = torch.rand(5, 6, 6, dtype=torch.float64, generator=g)
    patch_form = term(LossInputs(pred, pred, gather_patches(phase, crop, window),
                                 gather_patches(amplitude, crop, window), occupancy))
    coverage = window_coverage(crop, window, (20, 22), dtype=torch.float64)
    canvas_form = term(LossInputs(pred, pred, None, None, occupancy,
                                  canvas=ObjectUnderBatch(phase, amplitude, coverage, len(crop), window)))
    grads_patch = torch.autograd.grad(patch_form, (phase, amplitude), allow_unused=True)
    grads_canvas = torch.autograd.grad(canvas_form, (phase, amplitude), allow_unused=True)
    torch.testing.assert_close(canvas_form, patch_form, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads_canvas, grads_patch, strict=True):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_the_former_name_simlar_still_works_with_a_deprecation_message():
    with pytest.warns(FutureWarning, match="loss term 'simlar' is now called 'similarity'"):
        parsed = parse_losses({"single": {}, "simlar": {"weight": 0.2}})
    assert list(parsed) == ["single", "similarity"]
    assert build_losses(parsed)[1].name == "similarity"
