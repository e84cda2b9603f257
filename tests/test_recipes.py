"""Named recipes: every one is a complete config whose only placeholders are the data path and the slicing, it
runs, and the CLI prints it (generic over ``RECIPES``: a new recipe adds no test code)."""

import pytest
import yaml
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import parse_config
from ptyopt.errors import ConfigError
from ptyopt.recipes import PLACEHOLDERS, RECIPES, recipe_raw, recipe_text

runner = CliRunner()


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_fills_only_the_data_path_and_the_slicing(name):
    text = recipe_text(name, data_path="my.h5", n_slices=6, slice_thickness_ang=2.5)
    assert "$" not in text
    config = parse_config(yaml.safe_load(text))
    assert (config.data.path.name, config.model.n_slices, config.model.slice_thickness_ang) == ("my.h5", 6, 2.5)
    default = parse_config(recipe_raw(name))
    assert (default.model.n_slices, default.model.slice_thickness_ang) == (
        PLACEHOLDERS["n_slices"], PLACEHOLDERS["slice_thickness_ang"])
    assert default.data.path.name == PLACEHOLDERS["data_path"]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs(name, tiny_dataset_path, tmp_path):
    from ptyopt.reconstruct import run_reconstruction

    raw = recipe_raw(name, data_path=str(tiny_dataset_path), n_slices=2, slice_thickness_ang=3.905)
    raw["solver"]["iterations"] = 2
    raw["solver"]["switch"] = [dict(stage, start_iter=2) for stage in raw["solver"].get("switch", [])]
    raw["output"] = {"dir": str(tmp_path / name), "checkpoint_every": 2}
    run = run_reconstruction(parse_config(raw), show_progress=False)
    assert run.result.history["iteration"][-1] == 2 and run.metrics["pearson_r"] > 0


def test_template_cli_prints_the_recipe_and_refuses_bad_input(tmp_path):
    result = runner.invoke(app, ["config", "template", "--data", "d.h5", "--n-slices", "12"])
    assert result.exit_code == 0, result.output
    config = parse_config(yaml.safe_load(result.output))
    assert config.solver.name == "lsqml" and config.model.n_slices == 12  # the default recipe: fast
    full = runner.invoke(app, ["config", "template", "--full"])
    assert full.exit_code == 0 and "probe_orthogonalize" in full.output and "similarity" in full.output
    bad = runner.invoke(app, ["config", "template", "--recipe", "fats"])
    assert bad.exit_code == 2 and "did you mean 'fast'" in bad.output
    bad = runner.invoke(app, ["config", "template", "--slice-thickness-ang", "-1"])
    assert bad.exit_code == 2 and "slice_thickness_ang" in bad.output
    with pytest.raises(ConfigError, match="unknown recipe"):
        recipe_text("nope")
