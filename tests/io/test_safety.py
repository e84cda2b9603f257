"""Never lose a result: a folder holding a run is never written into by another run, a refused command changes
nothing on disk, snapshots and checkpoints survive a kill -9 at any point of their writing, damaged files are
detected by their SHA-256 and never loaded, and the result records where it came from."""

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ptyopt.cli import app
from ptyopt.config import dump_config
from ptyopt.io.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ptyopt.io.integrity import file_sha256, write_atomically
from ptyopt.io.result_file import read_result
from ptyopt.reconstruct import run_reconstruction
from tests.conftest import run_until_killed

pytestmark = pytest.mark.abtem


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with its content hash (what 'byte-identical' compares)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(tiny_config, tmp_path):
    """A finished 2-iteration run in tmp_path/run, and its config file."""
    config = tiny_config(solver={"iterations": 2})
    config_file = tmp_path / "config.yaml"
    config_file.write_text(dump_config(config))
    result = CliRunner().invoke(app, ["reconstruct", str(config_file), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    return config_file, tmp_path / "run"


def refused(args, match):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert match in result.output.replace("\n", " "), result.output
    assert "Traceback" not in result.output
    return result


def test_a_new_run_into_a_finished_folder_is_refused_and_changes_nothing(finished):
    config_file, run = finished
    before = folder_digest(run)
    message = refused(["reconstruct", str(config_file), "--out", str(run)], "already holds a run").output
    assert "--resume" in message and "--overwrite" in message
    assert folder_digest(run) == before
    # --overwrite replaces it: a new result, and only this run's files
    result = CliRunner().invoke(app, ["reconstruct", str(config_file), "--out", str(run), "--overwrite",
                                      "--iterations", "1"])
    assert result.exit_code == 0, result.output
    assert len(read_result(run / "result.h5").history["iteration"]) == 1


def test_a_refused_resume_does_not_rewrite_the_folders_config(finished, tiny_config):
    config_file, run = finished
    before = folder_digest(run)
    changed = config_file.parent / "changed.yaml"
    changed.write_text(dump_config(tiny_config(solver={"iterations": 2, "batch_size": 4})))
    refused(["reconstruct", str(changed), "--out", str(run), "--resume"], "different configuration")
    assert folder_digest(run) == before


def test_out_at_an_existing_file_is_a_clear_error(finished, tmp_path):
    config_file, _ = finished
    target = tmp_path / "a-file"
    target.write_text("keep me")
    refused(["reconstruct", str(config_file), "--out", str(target)], "is a file")
    refused(["reconstruct", str(config_file), "--out", str(target / "run")], "is a file")
    assert target.read_text() == "keep me"
    refused(["reconstruct", str(config_file), "--out", str(tmp_path / "new"), "--resume"], "no checkpoint")
    assert not (tmp_path / "new").exists()


def test_random_bytes_named_h5_are_not_a_readable_dataset(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"data: {{path: {junk}}}\noutput: {{dir: {tmp_path / 'run'}}}\n")
    refused(["reconstruct", str(config_file)], "not a readable dataset")
    assert not (tmp_path / "run").exists()


def test_snapshots_are_results_that_evaluate_reads_and_provenance_is_recorded(tiny_config, tiny_dataset_path,
                                                                              tmp_path):
    config = tiny_config(solver={"iterations": 3}, output={"snapshot_every": 2})
    run = run_reconstruction(config, out_dir=tmp_path / "run", show_progress=False)
    snapshots = sorted((tmp_path / "run" / "snapshots").glob("iter_*.h5"))
    assert [p.name for p in snapshots] == ["iter_0002.h5", "iter_0003.h5"]  # every 2 and the last
    assert (tmp_path / "run" / "snapshots" / "iter_0002_phase.tif").stat().st_size > 0
    second = read_result(snapshots[0])
    assert int(second.attrs["iteration"]) == 2 and len(second.history["iteration"]) == 2
    np.testing.assert_array_equal(read_result(snapshots[1]).object_phase, run.result.object_phase)
    result = CliRunner().invoke(app, ["evaluate", str(snapshots[0]), "--truth", str(tiny_dataset_path)])
    assert result.exit_code == 0 and "phase Pearson r" in result.output, result.output
    attrs = read_result(tmp_path / "run" / "result.h5").attrs
    assert attrs["data_sha256"] == file_sha256(tiny_dataset_path)
    assert attrs["data_size_bytes"] == tiny_dataset_path.stat().st_size and attrs["torch_version"]
    assert attrs["device"] == "cpu" and attrs["start_time"] <= attrs["end_time"] and attrs["command_line"]
    with h5py.File(tmp_path / "run" / "result.h5") as f:
        assert f.attrs["ptyopt_version"]


def test_damaged_checkpoints_and_results_are_detected_not_loaded(finished, tiny_dataset_path):
    config_file, run = finished
    for name, args, what in ((CHECKPOINT_NAME, ["reconstruct", str(config_file), "--out", str(run), "--resume"],
                              "checkpoint"),
                             ("result.h5", ["evaluate", str(run / "result.h5"), "--truth", str(tiny_dataset_path)],
                              "result file")):
        data = bytearray((run / name).read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped byte
        (run / name).write_bytes(bytes(data))
        refused(args, f"the {what} {run / name} does not match its recorded SHA-256")


def test_an_interrupted_hash_rename_is_accepted(tmp_path):
    """A crash between renaming the file and renaming its hash leaves the new file with its pending hash."""
    path = write_atomically(tmp_path / "a.bin", lambda tmp: tmp.write_bytes(b"old"))
    (tmp_path / "a.bin").write_bytes(b"new")
    (tmp_path / "a.bin.sha256.tmp").write_text(hashlib.sha256(b"new").hexdigest())
    from ptyopt.errors import DataError
    from ptyopt.io.integrity import verify

    verify(path, "file")  # accepted, and the interrupted rename finished
    assert not (tmp_path / "a.bin.sha256.tmp").exists()
    assert (tmp_path / "a.bin.sha256").read_text().strip() == hashlib.sha256(b"new").hexdigest()
    (tmp_path / "a.bin").write_bytes(b"bad")
    with pytest.raises(DataError, match="does not match its recorded SHA-256"):
        verify(path, "file")


def kill_during_write(config, out_dir: Path, call: int, fraction: float) -> None:
    """Run ``config`` in a fresh process and SIGKILL it in the middle of its ``call``-th atomic file write (a
    checkpoint or a snapshot), after ``fraction`` of the temporary file has reached the disk."""
    run_until_killed(config, out_dir, f"""
        import ptyopt.io.checkpoint, ptyopt.io.integrity, ptyopt.io.result_file, ptyopt.reconstruct
        real, calls = ptyopt.io.integrity.write_atomically, [0]
        def dying(path, write):
            calls[0] += 1
            if calls[0] == {call}:
                tmp = path.with_name(path.name + ".tmp")
                write(tmp)
                with open(tmp, "r+b") as handle:
                    handle.truncate(int(tmp.stat().st_size * {fraction}))
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, write)
        for module in (ptyopt.io.checkpoint, ptyopt.io.result_file, ptyopt.reconstruct):
            module.write_atomically = dying
    """)


@pytest.mark.slow
@pytest.mark.parametrize(("call", "what"), [(4, "checkpoint"), (5, "snapshot TIFF"), (6, "snapshot")])
def test_kill_9_during_a_write_keeps_the_previous_file_and_resume_continues_exactly(tiny_config, tmp_path, call,
                                                                                    what):
    """Writes per iteration (checkpoint_every 1, snapshot_every 1): checkpoint, snapshot TIFF, snapshot .h5, so
    calls 4, 5, 6 are iteration 2's. The kill falls at a seeded random point of the temporary file's writing."""
    config = tiny_config(solver={"iterations": 4}, output={"checkpoint_every": 1, "snapshot_every": 1})
    reference = run_reconstruction(config, out_dir=tmp_path / "straight", show_progress=False)
    fraction = float(np.random.default_rng(call).uniform(0.05, 0.95))
    killed = tmp_path / "killed"
    kill_during_write(config, killed, call, fraction)
    iteration = load_checkpoint(killed / CHECKPOINT_NAME, "cpu")["loop"]["iteration"]
    assert iteration == (1 if what == "checkpoint" else 2)  # the previous checkpoint, or the one just written
    assert read_result(killed / "snapshots" / "iter_0001.h5").attrs["iteration"] == 1  # intact
    resumed = run_reconstruction(config, out_dir=killed, resume=True, show_progress=False)
    assert (killed / "snapshots" / "iter_0002_phase.tif").exists()  # an incomplete snapshot is rewritten
    np.testing.assert_array_equal(resumed.result.object_phase, reference.result.object_phase)
    np.testing.assert_array_equal(resumed.result.probe, reference.result.probe)
    for k in (2, 3, 4):
        np.testing.assert_array_equal(read_result(killed / "snapshots" / f"iter_{k:04d}.h5").object_phase,
                                      read_result(tmp_path / "straight" / "snapshots" / f"iter_{k:04d}.h5")
                                      .object_phase)


def _write_corrupted_h5(src: Path, dst: Path, rng: np.random.Generator) -> str:
    """A copy of the dataset file with one random corruption; returns what was done."""
    data = src.read_bytes()
    kind = rng.integers(6)
    if kind == 0:
        dst.write_bytes(data[: int(rng.integers(1, len(data)))])
        return "truncated"
    if kind == 1:
        raw = bytearray(data)
        for i in rng.integers(0, len(raw), int(rng.integers(1, 64))):
            raw[i] = int(rng.integers(256))
        dst.write_bytes(bytes(raw))
        return "bytes flipped"
    dst.write_bytes(data)
    with h5py.File(dst, "r+") as f:
        if kind == 2:
            name = str(rng.choice(["energy_kv", "conv_angle_mrad", "dk_inv_ang", "aberrations", "counts"]))
            if name in f.attrs:
                del f.attrs[name]
            return f"attribute {name} deleted"
        if kind == 3:
            name = str(rng.choice(["energy_kv", "conv_angle_mrad", "dk_inv_ang"]))
            f.attrs[name] = [-1.0, 0.0, np.nan, np.inf, 1e30][int(rng.integers(5))]
            return f"attribute {name} = {f.attrs[name]}"
        if kind == 4:
            meas = f["meas"][()].astype(np.float32)
            choice = int(rng.integers(4))
            del f["meas"]
            if choice == 0:
                meas.flat[rng.integers(0, meas.size, 5)] = np.nan
            elif choice == 1:
                meas = -meas
            elif choice == 2:
                meas = meas[:, :-3]
            else:
                meas = meas[: len(meas) // 2]
            f.create_dataset("meas", data=meas)
            return f"meas variant {choice}"
        target = str(rng.choice(["meas", "scan/positions_ang", "truth"]))
        if target in f:
            del f[target]
        return f"{target} deleted"


def _mutate(node, rng: np.random.Generator):
    """A random change of one entry of a nested config mapping (in place)."""
    keys = list(node)
    key = keys[int(rng.integers(len(keys)))]
    value = node[key]
    if isinstance(value, dict) and value and rng.random() < 0.6:
        return _mutate(value, rng)
    action = int(rng.integers(5))
    if action == 0:
        del node[key]
    elif action == 1:
        node[key + "x"] = node.pop(key)
    elif action == 2:
        node[key] = [None, -1, 0, 1e9, "nonsense", [1, 2, 3], {"a": 1}, True, -0.5][int(rng.integers(9))]
    elif action == 3:
        node["unknown_" + key] = 1
    else:
        node[key] = str(value)[::-1]


@pytest.mark.slow
def test_random_corruptions_of_config_and_data_exit_0_or_2_and_never_touch_a_finished_run(finished, tiny_config,
                                                                                            tiny_dataset_path,
                                                                                            tmp_path):
    """160 random corruptions of a valid config through `config validate` (and, when valid, `reconstruct` into
    the finished folder without --resume), and 60 of the dataset file through `reconstruct --iterations 1`: exit
    0 or 2, never a traceback; the finished folder byte-identical; a refused run leaves no folder behind."""
    import yaml

    _, run = finished
    before = folder_digest(run)
    rng = np.random.default_rng(2026)
    base = yaml.safe_load(dump_config(tiny_config(solver={"iterations": 1})))
    runner = CliRunner()
    codes = {0: 0, 2: 0}
    for i in range(160):
        raw = yaml.safe_load(yaml.safe_dump(base))
        for _ in range(int(rng.integers(1, 4))):
            if raw:
                _mutate(raw, rng)
        path = tmp_path / f"config-{i}.yaml"
        text = yaml.safe_dump(raw)
        if rng.random() < 0.1:
            text = text[: int(rng.integers(len(text)))] + "\n  - [: }"  # broken YAML
        path.write_text(text)
        result = runner.invoke(app, ["config", "validate", str(path)])
        assert result.exit_code in (0, 2) and "Traceback" not in result.output, (text, result.output)
        codes[result.exit_code] += 1
        if result.exit_code == 0:
            into = runner.invoke(app, ["reconstruct", str(path), "--out", str(run), "--iterations", "1"])
            assert into.exit_code == 2, into.output
    for i in range(60):
        data = tmp_path / f"data-{i}.h5"
        what = _write_corrupted_h5(tiny_dataset_path, data, rng)
        raw = yaml.safe_load(yaml.safe_dump(base))
        raw["data"]["path"] = str(data)
        path = tmp_path / f"data-config-{i}.yaml"
        path.write_text(yaml.safe_dump(raw))
        out = tmp_path / f"data-run-{i}"
        result = runner.invoke(app, ["reconstruct", str(path), "--out", str(out)])
        assert result.exit_code in (0, 2), (what, result.output, result.exception)
        assert result.exit_code == 0 or not out.exists(), (what, "a refused run left a folder", result.output)
        codes[result.exit_code] += 1
    assert folder_digest(run) == before
    print(f"exit codes over 220 corruptions: {codes}")
    assert codes[0] > 0 and codes[2] > 0
