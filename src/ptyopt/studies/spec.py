"""Study specifications: a base config, the settings to compare (grid, zip or named), seeds and metrics."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ptyopt.config import explain_validation_error, parse_config, read_yaml, set_dotted
from ptyopt.config_base import StrictModel
from ptyopt.errors import ConfigError
from ptyopt.registry import did_you_mean
from ptyopt.solvers.checks import check_config

# metric name -> True when larger is better (used to pick the best setting)
HIGHER_IS_BETTER = {"pearson_r": True, "ssim": True, "psnr_db": True, "rmse_rad": False, "nrmse": False,
                    "frc_resolution_ang": False,
                    "final_loss": False, "wall_time_s": False, "position_rms_error_centred_ang": False,
                    "position_rms_error_affine_ang": False}


class NamedSetting(StrictModel):
    name: str = Field(description="label of the setting in the report")
    values: dict[str, Any] = Field(description="dotted config key -> value")


class Profile(StrictModel):
    """An alternative scale of the same study (e.g. the poster's full setup on a GPU)."""

    base_config: Path | None = Field(None, description="base config for this profile (relative to the spec)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value for every run")


class StudySpec(StrictModel):
    name: str = Field(description="study name")
    description: str = Field("", description="what the study asks")
    base_config: Path = Field(description="reconstruction config every run starts from (relative to the spec)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="dotted key -> value for every run")
    mode: Literal["grid", "zip", "named"] = Field("grid", description="how the axes combine into settings")
    axes: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values (grid/zip)")
    settings: list[NamedSetting] = Field(default_factory=list, description="explicit settings (mode: named)")
    seeds: list[int] = Field(description="seeds; every setting runs once per seed")
    metrics: list[str] = Field(["pearson_r", "rmse_rad"], description="metrics to report; the first ranks")
    time_to: dict[str, list[float]] = Field(
        default_factory=dict, description="metric -> thresholds: the report adds the time and iterations each "
        "setting takes to reach each (the metric must be logged during the runs, output.metrics_every)")
    threads_per_run: int = Field(1, ge=1, description="torch threads inside each run (1 = reproducible)")
    profiles: dict[str, Profile] = Field(default_factory=dict, description="other scales, chosen by --profile")

    @model_validator(mode="after")
    def _check(self) -> StudySpec:
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        if self.mode == "named" and not self.settings:
            raise ConfigError("mode 'named' needs a list of settings")
        if self.mode != "named" and not self.axes:
            raise ConfigError(f"mode '{self.mode}' needs axes (dotted key -> list of values)")
        if self.mode == "zip" and len({len(v) for v in self.axes.values()}) > 1:
            raise ConfigError("mode 'zip' needs every axis to have the same number of values")
        unknown = [m for m in [*self.metrics, *self.time_to] if m not in HIGHER_IS_BETTER]
        if unknown:
            raise ConfigError(f"unknown metric '{unknown[0]}'{did_you_mean(unknown[0], list(HIGHER_IS_BETTER))}")
        return self


@dataclass(frozen=True)
class RunSpec:
    """One run: a setting, a seed and the fully resolved config (as a plain dict)."""

    setting: str
    values: dict[str, Any]
    seed: int
    config: dict[str, Any]

    @property
    def key(self) -> str:
        """Hash of the resolved config (which holds the seed): the identity of a run across restarts."""
        text = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _label(values: dict[str, Any]) -> str:
    def short(value: Any) -> str:
        return json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else str(value)

    return ", ".join(f"{key.split('.')[-1]}={short(value)}" for key, value in values.items())


def settings_of(spec: StudySpec) -> list[tuple[str, dict[str, Any]]]:
    if spec.mode == "named":
        return [(s.name, s.values) for s in spec.settings]
    keys = list(spec.axes)
    combos = itertools.product(*spec.axes.values()) if spec.mode == "grid" else zip(*spec.axes.values(), strict=True)
    return [(_label(dict(zip(keys, combo, strict=True))), dict(zip(keys, combo, strict=True))) for combo in combos]


def load_spec(path: str | Path) -> tuple[StudySpec, Path]:
    path = Path(path)
    raw = read_yaml(path, "study spec")
    try:
        return StudySpec.model_validate(raw or {}), path.parent
    except ValidationError as err:
        raise ConfigError(explain_validation_error(err, StudySpec)) from None


def expand_runs(spec: StudySpec, base_dir: Path, profile: str | None = None) -> list[RunSpec]:
    """Every (setting, seed) with its resolved config; validated up front so a bad axis fails before any run."""
    base_config, overrides = spec.base_config, dict(spec.overrides)
    if profile is not None:
        if profile not in spec.profiles:
            raise ConfigError(f"unknown profile '{profile}'{did_you_mean(profile, list(spec.profiles))}")
        chosen = spec.profiles[profile]
        base_config = chosen.base_config or base_config
        overrides.update(chosen.overrides)
    base_path = (base_dir / base_config).resolve()
    base = read_yaml(base_path, "the study's base config") or {}
    runs = []
    for label, values in settings_of(spec):
        for seed in spec.seeds:
            raw = copy.deepcopy(base)
            for key, value in {**overrides, **values, "seed": seed}.items():
                set_dotted(raw, key, copy.deepcopy(value))
            config = parse_config(raw, base_dir=base_path.parent)
            try:
                check_config(config)  # what the run's solvers would refuse
            except ConfigError as err:
                raise ConfigError(f"study setting '{label}': {err}") from None
            runs.append(RunSpec(label, values, seed, config.model_dump(mode="json")))
    keys = [run.key for run in runs]
    if len(set(keys)) != len(keys):
        raise ConfigError("two runs of this study resolve to the same config; check the axes for duplicates")
    return runs
