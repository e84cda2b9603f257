import math

import pytest
import yaml
from pydantic import Field, TypeAdapter, ValidationError

from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.objective.schedules import (
    SCHEDULE_KINDS,
    ConstantSchedule,
    CosineSchedule,
    LinearSchedule,
    ScheduleLike,
    as_schedule,
    evaluate_schedules,
)

RAMP = {"start_value": 1.0, "end_value": 0.0, "start_iter": 11, "end_iter": 21}
POINTS = [[5, 0.0], [10, 1.0], [20, 0.5]]

# (id, config, {iteration: value}) with values worked out by hand; iterations outside the ramp check clamping
CASES = [
    ("constant", {"kind": "constant", "value": 0.5}, {1: 0.5, 7: 0.5, 10_000: 0.5}),
    ("step", {"kind": "step", "initial": 1.0, "factor": 0.5, "every": 10}, {1: 1, 10: 1, 11: 0.5, 20: 0.5, 21: 0.25}),
    ("linear", {"kind": "linear", **RAMP}, {1: 1.0, 11: 1.0, 13: 0.8, 16: 0.5, 21: 0.0, 500: 0.0}),
    # t = 0.2 at iteration 13: (1 + cos(0.2 π)) / 2
    ("cosine", {"kind": "cosine", **RAMP}, {1: 1.0, 11: 1.0, 13: 0.9045084971874737, 16: 0.5, 21: 0.0, 500: 0.0}),
    ("exponential", {"kind": "exponential", "initial": 2.0, "rate": 0.5}, {1: 2.0, 2: 1.0, 4: 0.25}),
    (
        "exponential-floor",
        {"kind": "exponential", "initial": 1.0, "rate": 0.5, "floor": 0.1},
        {1: 1.0, 4: 0.125, 5: 0.1, 10**6: 0.1},
    ),
    (
        "piecewise-step",
        {"kind": "piecewise", "points": POINTS},
        {1: 0.0, 5: 0.0, 9: 0.0, 10: 1.0, 19: 1.0, 20: 0.5, 999: 0.5},
    ),
    (
        "piecewise-linear",
        {"kind": "piecewise", "points": POINTS, "interpolation": "linear"},
        {1: 0.0, 5: 0.0, 7: 0.4, 10: 1.0, 15: 0.75, 20: 0.5, 999: 0.5},
    ),
    ("piecewise-one-point", {"kind": "piecewise", "points": [[3, 2.0]], "interpolation": "linear"}, {1: 2.0, 99: 2.0}),
]
IDS = [c[0] for c in CASES]
ADAPTER = TypeAdapter(ScheduleLike)


def test_cases_cover_every_kind():
    assert {c[1]["kind"] for c in CASES} == set(SCHEDULE_KINDS)


@pytest.mark.parametrize(("name", "config", "expected"), CASES, ids=IDS)
def test_values_at_hand_computed_iterations(name, config, expected):
    schedule = as_schedule(config)
    assert schedule.kind == config["kind"]
    for iteration, value in expected.items():
        assert schedule.value(iteration) == pytest.approx(value, rel=1e-12, abs=1e-15), iteration
        assert isinstance(schedule.value(iteration), float)


@pytest.mark.parametrize(("name", "config", "expected"), CASES, ids=IDS)
def test_round_trip_python_json_yaml(name, config, expected):
    schedule = ADAPTER.validate_python(config)
    assert ADAPTER.validate_python(ADAPTER.dump_python(schedule, mode="json")) == schedule
    assert ADAPTER.validate_python(ADAPTER.dump_python(schedule)) == schedule
    assert ADAPTER.validate_json(ADAPTER.dump_json(schedule)) == schedule
    text = yaml.safe_dump(ADAPTER.dump_python(schedule, mode="json"))
    again = ADAPTER.validate_python(yaml.safe_load(text))
    assert again == schedule
    assert [again.value(it) for it in expected] == [schedule.value(it) for it in expected]


class _Weights(StrictModel):
    single: ScheduleLike = Field(1.0, description="weight of the single-pattern term")
    pacbed: ScheduleLike = Field(0.5, description="weight of the PACBED term")
    lr: ScheduleLike = Field(1e-3, description="learning rate")


@pytest.mark.parametrize("number", [0.5, 3, -2.0, 0])
def test_bare_number_is_a_constant_and_round_trips(number):
    schedule = ADAPTER.validate_python(number)
    assert isinstance(schedule, ConstantSchedule)
    assert schedule.value(1) == schedule.value(1000) == float(number)
    dumped = ADAPTER.dump_python(schedule, mode="json")
    assert dumped == {"kind": "constant", "value": float(number)}
    assert ADAPTER.validate_python(dumped) == schedule
    assert ADAPTER.validate_json(str(number)) == schedule
    assert schedule.model_dump(by_alias=True) == schedule.model_dump() == {"kind": "constant", "value": float(number)}


def test_yaml_config_with_numbers_and_schedules_round_trips():
    text = """
single: 1.0
pacbed: {kind: linear, start_value: 0.0, end_value: 0.5, start_iter: 1, end_iter: 11}
lr: 1e-3
"""
    weights = _Weights.model_validate(yaml.safe_load(text))
    assert weights.single.value(5) == 1.0
    assert weights.pacbed.value(6) == pytest.approx(0.25)
    # PyYAML reads `1e-3` as a string; it still means the number
    assert weights.lr.value(1) == pytest.approx(1e-3)
    again = _Weights.model_validate(yaml.safe_load(yaml.safe_dump(weights.model_dump(mode="json"))))
    assert again == weights
    assert _Weights.model_validate_json(weights.model_dump_json()) == weights


def test_defaults_are_schedules():
    weights = _Weights()
    assert isinstance(weights.pacbed, ConstantSchedule)
    assert weights.model_dump(mode="json")["pacbed"] == {"kind": "constant", "value": 0.5}


def test_schedule_objects_pass_through():
    ramp = LinearSchedule(**RAMP)
    assert as_schedule(ramp) is ramp
    assert _Weights(single=ramp).single is ramp
    assert ConstantSchedule(value=2.0).value(3) == 2.0


def test_cosine_and_linear_share_endpoints_and_midpoint_but_differ_between():
    lin, cos = LinearSchedule(**RAMP), CosineSchedule(**RAMP)
    for it in (11, 16, 21):
        assert lin.value(it) == pytest.approx(cos.value(it))
    assert cos.value(12) > lin.value(12)
    assert cos.value(20) < lin.value(20)
    values = [cos.value(it) for it in range(1, 30)]
    assert all(b <= a for a, b in zip(values, values[1:], strict=False))


def test_exponential_without_floor_decays_to_zero_without_error():
    schedule = as_schedule({"kind": "exponential", "initial": 1.0, "rate": 0.5})
    assert schedule.value(10_000) == 0.0
    assert math.isinf(as_schedule({"kind": "exponential", "initial": 1.0, "rate": 2.0}).value(10_000))


@pytest.mark.parametrize(("name", "config", "expected"), CASES, ids=IDS)
def test_iteration_zero_is_rejected(name, config, expected):
    with pytest.raises(ValueError, match="1-based"):
        as_schedule(config).value(0)


def test_evaluate_schedules_for_history():
    lr = as_schedule({"kind": "step", "initial": 1e-3, "factor": 0.1, "every": 5})
    named = {"single": 1.0, "pacbed": {"kind": "linear", **RAMP}, "lr": lr}
    assert evaluate_schedules(named, 16) == pytest.approx({"single": 1.0, "pacbed": 0.5, "lr": 1e-6})
    assert evaluate_schedules({}, 1) == {}


# pydantic writes "loc\n  msg", as_schedule writes "loc: msg"; the patterns accept both
BAD = [
    ({"kind": "linear", **{**RAMP, "end_iter": 11}}, r"end_iter \(11\) must be > start_iter \(11\)"),
    ({"kind": "cosine", **{**RAMP, "end_iter": 5}}, r"end_iter \(5\) must be > start_iter \(11\)"),
    ({"kind": "linear", **{**RAMP, "start_iter": 0}}, r"start_iter:?\s+Input should be greater than or equal to 1"),
    ({"kind": "piecewise", "points": []}, r"at least one \(iteration, value\) pair"),
    ({"kind": "piecewise", "points": [[5, 1.0], [5, 2.0]]}, r"strictly increasing; 5 follows 5"),
    ({"kind": "piecewise", "points": [[5, 1.0], [3, 2.0]]}, r"strictly increasing; 3 follows 5"),
    ({"kind": "piecewise", "points": [[0, 1.0]]}, r"1-based; the first is 0"),
    ({"kind": "piecewise", "points": [[1, 1]], "interpolation": "cubic"}, r"interpolation:?\s+Input should be 'step'"),
    ({"kind": "step", "initial": 1.0, "factor": 0.5, "every": 0}, r"every:?\s+Input should be greater than or equal"),
    ({"kind": "step", "initial": 1.0, "factor": 0.0, "every": 3}, r"factor:?\s+Input should be greater than 0"),
    ({"kind": "exponential", "initial": 1.0, "rate": 0.5, "floor": 2.0}, r"floor \(2.0\) must be <= initial \(1.0\)"),
    ({"kind": "exponential", "initial": 1.0, "rate": -0.5}, r"rate:?\s+Input should be greater than 0"),
    ({"kind": "cosin", **RAMP}, r"unknown schedule kind 'cosin'; did you mean 'cosine'\?"),
    ({"value": 1.0}, r"needs 'kind', one of: constant, step"),
    ({"kind": "constant", "value": 1.0, "valeu": 2.0}, r"valeu:?\s+Extra inputs are not permitted"),
    ({"kind": "constant"}, r"value:?\s+Field required"),
    ({"kind": "constant", "value": math.nan}, r"finite number"),
    (math.inf, r"finite number"),
    (True, r"got a boolean"),
    ("fast", r"got the string 'fast'"),
    ([1.0, 2.0], r"number or a mapping with 'kind'; got list"),
]


@pytest.mark.parametrize(("config", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_says_what_to_change(config, message):
    with pytest.raises(ConfigError, match=message):
        as_schedule(config)
    with pytest.raises(ValidationError, match=message):
        _Weights(single=config)
