import pytest
import yaml
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import ReconstructionConfig, dump_config, load_config, parse_config
from ptyopt.config_template import config_template
from ptyopt.errors import ConfigError


def test_unknown_keys_suggest_the_closest():
    with pytest.raises(ConfigError, match="unknown key 'optimise'; did you mean 'optimize'"):
        parse_config({"data": {"path": "x.h5"}, "optimise": {}})
    with pytest.raises(ConfigError, match="unknown key 'model.n_slice'; did you mean 'n_slices'"):
        parse_config({"data": {"path": "x.h5"}, "model": {"n_slice": 3}})
    with pytest.raises(ConfigError, match="unknown key 'optimize.probe.start'; did you mean 'start_iter'"):
        parse_config({"data": {"path": "x.h5"}, "optimize": {"probe": {"lr": 1e-3, "start": 5}}})
    with pytest.raises(ConfigError, match="unknown constraint 'object_blr'; did you mean 'object_blur'"):
        parse_config({"data": {"path": "x.h5"}, "constraints": {"object_blr": {}}})
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        parse_config({})
    with pytest.raises(ConfigError, match="nothing would be reconstructed"):
        parse_config(
            {
                "data": {"path": "x.h5"},
                "optimize": {
                    name: {"lr": 1e-3, "start_iter": None}
                    for name in ReconstructionConfig.model_fields["optimize"].default.__class__.model_fields
                },
            }
        )


def test_resolved_config_round_trips(tmp_path):
    raw = {
        "data": {"path": "x.h5"},
        "loss": {
            "single": {},
            "sparse": {
                "weight": {"kind": "cosine", "start_value": 0, "end_value": 0.1, "start_iter": 10, "end_iter": 50}
            },
        },
        "constraints": {"object_z_blur": {"sigma_slices": 0.5}},
        "optimize": {"probe": {"lr": 1e-4, "start_iter": 5}},
    }
    config = parse_config(raw)
    resolved = yaml.safe_load(dump_config(config))
    assert resolved["constraints"]["object_z_blur"]["start_iter"] == 1  # defaults are visible
    assert resolved["model"]["propagator"] == "fresnel"
    assert parse_config(resolved) == config
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    loaded = load_config(path, {"solver.iterations": 7})
    assert loaded.solver.iterations == 7 and loaded.data.path == (tmp_path / "x.h5").resolve()


def test_template_is_valid_and_commented():
    text = config_template("data.h5")
    assert "# " in text and "probe_orthogonalize" in text and "similarity" in text
    config = parse_config(yaml.safe_load(text))
    assert set(config.loss) == {"single", "pacbed", "sparse"} and config.constraints == {}


def test_config_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["config", "template"])
    assert result.exit_code == 0 and "optimize:" in result.output
    good = tmp_path / "good.yaml"
    good.write_text("data: {path: d.h5}\nsolver: {iterations: 3}\n")
    result = runner.invoke(app, ["config", "validate", str(good)])
    assert result.exit_code == 0 and "is valid" in result.output and "grouping: random" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {path: d.h5}\nsolver: {iteratons: 3}\n")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2 and "did you mean 'iterations'" in result.output
    result = runner.invoke(app, ["config", "validate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "cannot read config" in result.output


def test_shipped_configs_validate():
    from pathlib import Path

    from ptyopt.demo import demo_config_path

    root = Path(__file__).resolve().parents[1]
    for path in [demo_config_path(), *sorted((root / "examples" / "configs").glob("*.yaml"))]:
        config = load_config(path)
        assert config.loss and config.solver.iterations > 0, path
    poster = load_config(root / "examples" / "configs" / "poster_gpu.yaml")
    assert (poster.model.n_slices, poster.model.probe_modes, poster.solver.iterations) == (32, 4, 200)
    assert poster.optimize.probe.start_iter == 5 and poster.optimize.positions.start_iter == 10


def test_partial_sections_keep_the_defaults_they_do_not_name():
    config = parse_config({"data": {"path": "x.h5"}, "optimize": {"probe": {"start_iter": 2}, "tilts": {"lr": 2e-3}}})
    defaults = ReconstructionConfig.model_fields["optimize"].default
    assert config.optimize.probe.start_iter == 2 and config.optimize.probe.lr == defaults.probe.lr
    assert config.optimize.tilts.lr.value(1) == 2e-3 and config.optimize.tilts.start_iter is None  # still off
    assert config.optimize.object_phase == defaults.object_phase
    with pytest.raises(ConfigError, match="unknown key 'optimize.probe.strat_iter'; did you mean 'start_iter'"):
        parse_config({"data": {"path": "x.h5"}, "optimize": {"probe": {"strat_iter": 2}}})


CAPABILITY_ERRORS = [
    ("solver: {name: epie}\noptimize: {tilts: {lr: 1.0e-3, start_iter: 1}}\n", "set optimize.tilts.start_iter: null"),
    ("solver: {name: lm}\noptimize: {occupancy: {start_iter: 1}}\n", "set optimize.occupancy.start_iter: null"),
    ("solver: {name: lm}\noptimize: {tilts: {start_iter: 1}}\n", "refines tilts only with model.tilt_mode: each"),
    ("solver: {name: lsqml, grad_accumulation: 2}\n", "set solver.grad_accumulation: 1"),
    ("solver: {name: lsqml, options: {step_dampng: 0.1}}\n", "did you mean 'step_damping'"),
    ("solver: {name: SGD, options: {momentm: 0.9}}\n", "solver.options do not fit SGD"),
    ("solver: {name: adam, lr_scheduler: {name: CosineAnnealing}}\n", "is not in torch.optim.lr_scheduler"),
    ("solver: {name: ssnal}\nloss: {single: {}, sparse: {order: 2}}\n", "set loss.sparse.order: 1"),
    ("solver:\n  switch: [{start_iter: 5, name: lsqml}]\noptimize: {slice_thickness: {start_iter: 1}}\n",
     r"solver.switch\[0\] \(lsqml\): .*optimize.slice_thickness.start_iter: null"),
]


@pytest.mark.parametrize(("body", "message"), CAPABILITY_ERRORS)
def test_config_validate_refuses_what_the_run_would_refuse(tmp_path, body, message):
    import re

    path = tmp_path / "run.yaml"
    path.write_text("data: {path: x.h5}\n" + body)
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2 and re.search(message, result.output.replace("\n", " ")), result.output
    assert "Traceback" not in result.output


def test_config_validate_notes_the_keys_a_solver_does_not_use(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: {path: x.h5}\nsolver: {name: lsqml}\noptimize: {probe: {lr: 1.0}, tilts: {lr: 1.0}}\n")
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 0
    output = result.output.replace("\n", " ")
    assert "'lsqml' chooses its own step sizes: optimize.probe.lr is not used" in output
    assert "optimize.tilts.lr is set but optimize.tilts.start_iter is null: tilts is not refined" in output


def test_a_solver_error_is_refused_before_any_data_is_read_or_folder_made(tmp_path):
    from ptyopt.reconstruct import run_reconstruction

    config = parse_config({"data": {"path": str(tmp_path / "missing.h5")}, "output": {"dir": str(tmp_path / "out")},
                           "solver": {"name": "lsqml", "options": {"step_dampng": 0.1}}})
    with pytest.raises(ConfigError, match="did you mean 'step_damping'"):
        run_reconstruction(config, show_progress=False)
    assert not (tmp_path / "out").exists()
