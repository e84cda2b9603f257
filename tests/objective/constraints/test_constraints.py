"""Generic suite over every registered constraint, plus registry, parsing and ordering."""

import pytest
import torch

from ptyopt.errors import ConfigError
from ptyopt.objective.constraints import (
    CONSTRAINTS,
    EXECUTION_ORDER,
    ConstraintWindow,
    apply_constraints,
    build_constraints,
    parse_constraints,
)
from tests.objective.constraints.helpers import make_ctx, make_state, snapshot

OBJECT = {"object_amplitude", "object_phase"}
# what each constraint must change on the generic state (everything else must stay bit-identical)
EXPECTED_CHANGES = {
    "probe_fourier_mask": {"probe"},
    "probe_orthogonalize": {"probe"},
    "probe_fixed_intensity": {"probe"},
    "object_blur": OBJECT,
    "object_z_blur": OBJECT,
    "kr_filter": OBJECT,
    "kz_filter": OBJECT,
    "amplitude_threshold": {"object_amplitude"},
    "phase_positive": {"object_phase"},
    "amplitude_phase_coupling": {"object_amplitude"},
    "object_z_recenter": OBJECT | {"probe"},
    "position_recenter": {"position_offsets_px", "scan_drift_px"},
    "scan_model_fit": {"position_offsets_px", "scan_affine", "scan_drift_px"},
    "tilt_smooth": {"tilts_mrad"},
}


def build(name: str, **params):
    cls = CONSTRAINTS.get(name)
    return cls(cls.Params(**params))


def test_every_constraint_has_a_place_in_the_order_and_a_test_entry():
    assert sorted(CONSTRAINTS.names()) == sorted(EXECUTION_ORDER)
    assert len(set(EXECUTION_ORDER)) == len(EXECUTION_ORDER)
    assert set(EXPECTED_CHANGES) == set(CONSTRAINTS.names())


@pytest.mark.parametrize("name", CONSTRAINTS.names())
def test_each_constraint_declares_the_state_keys_it_changes(name):
    """``edited_keys`` (what a DIP object checks against) are the keys the generic test below sees change."""
    cls = CONSTRAINTS.get(name)
    assert cls.edited_keys(cls.Params()) == EXPECTED_CHANGES[name] and EXPECTED_CHANGES[name] <= set(cls.edits)


def test_declared_edits_follow_the_target_and_the_coupling_weights():
    for name in ("object_blur", "object_z_blur", "kr_filter", "kz_filter"):
        cls = CONSTRAINTS.get(name)
        assert cls.edited_keys(cls.Params(target="amplitude")) == {"object_amplitude"}, name
        assert cls.edited_keys(cls.Params(target="phase")) == {"object_phase"}, name
    coupling = CONSTRAINTS.get("amplitude_phase_coupling")
    assert coupling.edited_keys(coupling.Params(alpha_amplitude=0.5, alpha_phase=0.5)) == OBJECT
    assert coupling.edited_keys(coupling.Params(alpha_amplitude=0.0, alpha_phase=0.5)) == {"object_phase"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", CONSTRAINTS.names())
def test_active_constraint_changes_what_it_should_in_place(name, dtype):
    state = make_state(dtype)
    before = snapshot(state)
    tensors = dict(state)
    assert apply_constraints([build(name)], state, make_ctx()) == [name]
    for key, value in state.items():
        assert value is tensors[key], f"{key} was replaced instead of updated in place"
        assert value.is_leaf and value.requires_grad
        assert value.shape == before[key].shape and value.dtype == before[key].dtype
        assert torch.isfinite(value).all(), key
        change = (value.detach() - before[key]).abs().max().item()
        if key in EXPECTED_CHANGES[name]:
            assert change > 1e-4, f"{name} did not change {key}"
        else:
            assert change == 0, f"{name} changed {key}"


@pytest.mark.parametrize("name", CONSTRAINTS.names())
def test_window_is_respected(name):
    constraint = build(name, start_iter=3, step=2, end_iter=8)
    assert [i for i in range(1, 12) if constraint.active(i)] == [3, 5, 7]
    for iteration in (1, 2, 4, 8, 9):
        state = make_state()
        before = snapshot(state)
        assert apply_constraints([constraint], state, make_ctx(iteration)) == []
        for key in state:
            assert torch.equal(state[key].detach(), before[key]), (iteration, key)


def test_open_window_runs_every_step_forever():
    constraint = build("position_recenter", start_iter=5, step=3)
    assert [i for i in range(1, 20) if constraint.active(i)] == [5, 8, 11, 14, 17]
    assert constraint.active(5 + 3 * 10_000) and not constraint.active(6 + 3 * 10_000)


def test_build_uses_the_fixed_order_and_apply_reports_it():
    raw = {"tilt_smooth": None, "object_blur": {"sigma_px": 1.0}, "probe_orthogonalize": {}, "kr_filter": None}
    constraints = build_constraints(parse_constraints(raw))
    expected = [n for n in EXECUTION_ORDER if n in raw]
    assert [c.name for c in constraints] == expected
    assert apply_constraints(constraints, make_state(), make_ctx()) == expected


def test_nothing_is_applied_without_configuration():
    state = make_state()
    before = snapshot(state)
    assert build_constraints(parse_constraints({})) == []
    assert apply_constraints(build_constraints(parse_constraints({})), state, make_ctx()) == []
    assert all(torch.equal(state[k].detach(), before[k]) for k in state)


def test_resolved_params_show_every_default():
    parsed = parse_constraints({"object_blur": None, "amplitude_threshold": {"relax": 0.5}})
    assert parsed["object_blur"].model_dump() == {
        "start_iter": 1,
        "step": 1,
        "end_iter": None,
        "sigma_px": 0.4,
        "target": "both",
        "padding": "replicate",
    }
    assert parsed["amplitude_threshold"].model_dump() == {
        "start_iter": 1,
        "step": 1,
        "end_iter": None,
        "min_amplitude": 0.9,
        "max_amplitude": 1.1,
        "relax": 0.5,
    }


@pytest.mark.parametrize("name", CONSTRAINTS.names())
def test_every_parameter_has_a_default_and_a_description(name):
    params = parse_constraints({name: None})[name]
    cls = CONSTRAINTS.get(name)
    assert isinstance(params, cls.Params) and isinstance(params, ConstraintWindow)
    assert set(params.model_dump()) == set(cls.Params.model_fields)
    for field_name, field in cls.Params.model_fields.items():
        assert field.description, f"{name}.{field_name} has no description"
    assert cls.__doc__ and ("<-" in cls.__doc__ or "=" in cls.__doc__), f"{name} needs a docstring with its formula"


def test_parse_is_idempotent():
    parsed = parse_constraints({"kz_filter": {"beta": 2.0}, "object_z_blur": None})
    assert parse_constraints(parsed) == parsed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"object_blr": None}, r"unknown constraint 'object_blr'; did you mean 'object_blur'\?"),
        (
            {"object_blur": {"sigma": 1.0}},
            r"unknown parameter 'sigma' of constraint 'object_blur'; did you mean 'sigma_px'\?",
        ),
        ({"tilt_smooth": {"sigma_position": 1.0}}, r"did you mean 'sigma_positions'\?"),
        ({"object_blur": {"sigma_px": -1}}, r"constraint 'object_blur': sigma_px: Input should be greater than 0"),
        ({"phase_positive": {"mode": "abs"}}, r"constraint 'phase_positive': mode: Input should be 'clip' or 'shift'"),
        ({"object_blur": {"step": 0}}, r"step: Input should be greater than or equal to 1"),
        ({"object_blur": {"start_iter": 5, "end_iter": 5}}, r"end_iter \(5\) must be larger than start_iter \(5\)"),
        ({"amplitude_threshold": {"min_amplitude": 1.2}}, r"min_amplitude \(1.2\) must be below max_amplitude"),
        ({"object_blur": 0.4}, r"constraint 'object_blur' takes a mapping of parameters"),
    ],
)
def test_parse_errors_say_what_to_change(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_constraints(raw)


def test_constraint_rejects_params_of_another_constraint():
    with pytest.raises(TypeError, match="expects"):
        CONSTRAINTS.get("object_blur")(CONSTRAINTS.get("kr_filter").Params())


def test_missing_state_key_names_the_constraint():
    state = make_state()
    del state["tilts_mrad"]
    with pytest.raises(ConfigError, match="constraint 'tilt_smooth' needs 'tilts_mrad'"):
        apply_constraints([build("tilt_smooth")], state, make_ctx())
