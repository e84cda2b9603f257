"""`ptyopt bench`: the documented JSON schema, the FFT count that defines the floor, bad input."""

import json

import pytest
from typer.testing import CliRunner

from ptyopt.bench import PRESETS, BenchResult, FFTRecorder, fft_floor_s
from ptyopt.cli import app

SCHEMA_KEYS = {
    "schema_version", "preset", "description", "device", "torch_version", "ptyopt_version", "threads", "compile",
    "patterns", "batch_size", "pattern_px", "n_slices", "probe_modes", "object_modes", "warmup_iterations",
    "timed_iterations", "iteration_s", "median_iteration_s", "patterns_per_s", "fft_calls_per_iteration",
    "fft_floor_s", "ratio_to_fft_floor", "fft_in_iteration_s", "peak_host_rss_mib", "peak_gpu_mib",
    "memory_estimate_mib", "chunks_per_batch", "host_busy_fraction",
}


def test_schema_is_the_documented_one():
    import dataclasses

    import ptyopt.bench as bench

    assert {f.name for f in dataclasses.fields(BenchResult)} == SCHEMA_KEYS
    for key in SCHEMA_KEYS:  # every field is named in the module docstring, which docs/performance.md quotes
        assert f'"{key}"' in bench.__doc__, key


@pytest.fixture
def _keep_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # --threads sets torch's global thread count; later tests expect the default


def test_bench_cli_writes_json_and_counts_every_fft(tmp_path, monkeypatch, _keep_threads):
    monkeypatch.setenv("PTYOPT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--preset", "tiny", "--warmup", "1", "--iterations", "2",
                                      "--threads", "1", "--json", str(out), "--op-profile", str(tmp_path / "ops.txt")])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data) == SCHEMA_KEYS and data["schema_version"] == 1
    tiny = PRESETS["tiny"]
    batches = data["patterns"] // data["batch_size"]
    # per batch, forward: probe FFT + inverse (sub-pixel shift), FFT + inverse per slice step, the far field;
    # the backward pass runs as many
    per_batch = 2 * (2 + 2 * (tiny.config["model"]["n_slices"] - 1) + 1)
    assert data["fft_calls_per_iteration"] == batches * per_batch
    assert data["pattern_px"] == tiny.detector_px // 2  # resampled x0.5 on the fly
    assert len(data["iteration_s"]) == 2 and data["median_iteration_s"] > data["fft_floor_s"] > 0
    assert data["ratio_to_fft_floor"] == pytest.approx(data["median_iteration_s"] / data["fft_floor_s"])
    assert 0 < data["fft_in_iteration_s"] < data["median_iteration_s"] * 3  # (the recorded iteration is not timed)
    assert data["chunks_per_batch"] == 1 and data["threads"] == 1
    # the profiled iteration's operator table names the FFTs and the products
    table = (tmp_path / "ops.txt").read_text()
    assert "aten::_fft_c2c" in table and "aten::mul" in table
    # the cached synthetic data are reused
    assert list((tmp_path / "cache").glob("bench-tiny.h5"))


def test_fft_recorder_and_floor():
    import torch

    x = torch.randn(3, 16, 16, dtype=torch.complex64)
    with FFTRecorder() as recorder:
        torch.fft.ifft2(torch.fft.fft2(x) * 2)
        torch.fft.rfft(x.real)
        x * 3  # not an FFT
    assert [call[0] for call in recorder.calls] == ["_fft_c2c", "_fft_c2c", "_fft_r2c"]
    assert fft_floor_s(recorder.calls, torch.device("cpu"), repeats=2) > 0


def test_bad_preset_exits_2():
    result = CliRunner().invoke(app, ["bench", "--preset", "cpu-smal"])
    assert result.exit_code == 2 and "did you mean 'cpu-small'" in result.output
