import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.data import read_dataset

runner = CliRunner()

META = ["--energy-kv", "300", "--conv-angle-mrad", "20", "--dk-inv-ang", "0.05", "--step-ang", "0.5"]


def test_info_lists_versions_and_devices():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "cuda" in result.output


def test_demo_cli_writes_results(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--iterations", "2"])
    assert result.exit_code == 0, result.output
    for name in ("result.h5", "metrics.json", "object_phase.png", "probe.png", "phase_sum.tif"):
        assert (tmp_path / name).stat().st_size > 0
    r = float(re.search(r"R-factor ([0-9.]+)", result.output).group(1))
    assert 0 < r < 0.08  # ptyopt's model on the truth predicts the abTEM data
    assert "pearson_r" in result.output
    bad = runner.invoke(app, ["demo", "--out", str(tmp_path / "other"), "--device", "nonsense"])
    assert bad.exit_code == 2 and "use 'cpu'" in bad.output


@pytest.mark.slow
def test_full_demo_correlates_with_truth(tmp_path):
    """What `make demo` runs: the slice-summed phase correlates with the truth at r >= 0.9."""
    from ptyopt.demo import run_demo

    run, _ = run_demo(tmp_path, show_progress=False)
    assert run.metrics["pearson_r"] >= 0.9


def test_convert_4d_npy_with_crop_and_preprocess(tmp_path):
    data = np.random.default_rng(0).random((6, 8, 16, 16)).astype(np.float32)
    np.save(tmp_path / "raw.npy", data)
    steps = tmp_path / "steps.yaml"
    steps.write_text("- kind: resample\n  scale_factor: 0.5\n")
    out = tmp_path / "ds.h5"
    result = runner.invoke(app, ["convert", str(tmp_path / "raw.npy"), "--out", str(out), *META,
                                 "--scan-crop-y", "1:5", "--scan-crop-x", "2:6", "--preprocess", str(steps)])
    assert result.exit_code == 0, result.output
    ds = read_dataset(out)
    assert ds.scan_shape == (4, 4) and ds.detector_shape == (8, 8) and ds.dk_inv_ang == pytest.approx(0.1)
    np.testing.assert_allclose(ds.meas[0].sum(), data[1, 2].sum(), rtol=0.2)
    assert ds.aberrations == {"C10": -0.0}
    inspect = runner.invoke(app, ["inspect", str(out)])
    assert inspect.exit_code == 0 and "(4, 4)" in inspect.output


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda p: np.save(p / "x.npy", np.zeros((4, 4))), ["x.npy"], "expected a 3-D"),
        (lambda p: np.save(p / "x.npy", np.full((4, 4, 4), np.nan)), ["x.npy", "--scan-shape", "2,2"], "NaN"),
        (lambda p: (p / "x.raw").write_bytes(b"\0" * 1000), ["x.raw", "--scan-shape", "2,2"], "bytes"),
        (lambda p: np.save(p / "x.npy", np.zeros((4, 4, 4))), ["x.npy", "--scan-shape", "3,2"], "scan_shape"),
        (lambda p: np.save(p / "x.npy", np.zeros((4, 4, 4))), ["x.npy"], "--scan-shape"),
        (lambda p: None, ["missing.npy"], "does not exist|not found|No such"),
    ],
)
def test_bad_input_exits_2_with_message(tmp_path, setup, args, message):
    setup(tmp_path)
    args = [str(tmp_path / args[0]), *args[1:]]
    result = runner.invoke(app, ["convert", *args, "--out", str(tmp_path / "o.h5"), *META])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert re.search(message, result.output), result.output


def test_missing_hdf5_key_through_console_script(tmp_path):
    """The installed command prints the message without a traceback and exits 2."""
    import h5py

    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["data"] = np.zeros((4, 8, 8), dtype=np.float32)
    result = subprocess.run(
        [sys.executable, "-m", "ptyopt.cli", "convert", str(tmp_path / "d.h5"), "--key", "/nope",
         "--out", str(tmp_path / "o.h5"), "--scan-shape", "2,2", *META],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "data" in result.stderr and "/nope" in result.stderr
