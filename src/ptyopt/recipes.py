"""Named recipes: complete configs chosen by measurement (``ptyopt config template --recipe NAME``, ``ptyopt
demo --recipe NAME``). Each is a commented YAML file in ``ptyopt/data/recipes`` whose only placeholders are the
data path and the slicing (``$data_path``, ``$n_slices``, ``$slice_thickness_ang``); the study behind them is
``examples/studies/recipes.yaml`` (report: ``docs/studies/recipes/report.md``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

from ptyopt.errors import ConfigError
from ptyopt.registry import did_you_mean

# name -> what it runs (for help texts); the files hold the configs and the measurements behind them
RECIPES = {"fast": "LSQ-ML", "accurate": "ePIE", "poster": "the poster's Adam setup"}
DEFAULT_RECIPE = "fast"
RECIPE_HELP = ", ".join(f"{name} ({what})" for name, what in RECIPES.items())
# what the placeholders read when the user gives nothing (the sto-demo / sto-small slicing: one per unit cell)
PLACEHOLDERS = {"data_path": "dataset.h5", "n_slices": 8, "slice_thickness_ang": 3.905}


def _recipe_path(name: str) -> Path:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe '{name}'{did_you_mean(name, list(RECIPES))}")
    return Path(str(resources.files("ptyopt.data") / "recipes" / f"{name}.yaml"))


def recipe_text(name: str, *, data_path: str | None = None, n_slices: int | None = None,
                slice_thickness_ang: float | None = None) -> str:
    """The recipe's commented YAML with the placeholders filled (the given values, else ``PLACEHOLDERS``); checked
    as a config (a bad value is a ConfigError)."""
    from ptyopt.config import parse_config

    given = {"data_path": data_path, "n_slices": n_slices, "slice_thickness_ang": slice_thickness_ang}
    values = {key: PLACEHOLDERS[key] if value is None else value for key, value in given.items()}
    text = Template(_recipe_path(name).read_text()).substitute({k: str(v) for k, v in values.items()})
    parse_config(yaml.safe_load(text))
    return text


def recipe_raw(name: str, **placeholders: Any) -> dict[str, Any]:
    """The recipe as a raw config dict (for ``parse_config`` / ``load_config``-style overrides)."""
    return yaml.safe_load(recipe_text(name, **placeholders))
