"""Long runs that survive: kill and resume, refused resumes, reproducible seeds, a full disk."""

import json
import shlex
import signal
import subprocess
import sys
import time
import zipfile

import matplotlib.image
import pandas as pd
import pytest

from conftest import ROOT, assert_one_line_error

SETTINGS = ["--epochs", 1, "--batch_size", 16, "--seed", 11]


def main_cmd(*args):
    return [sys.executable, str(ROOT / "main.py"), *map(str, args)]


def run(*args, check=True):
    res = subprocess.run(main_cmd(*args), capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def table_cells(path):
    if not path.exists():
        return []
    return list(pd.read_csv(path, dtype={"cell": str}).cell)


def assert_files_whole(save):
    """Every file a reader would use parses; leftover temporaries are hidden (dot) files."""
    for path in save.rglob("*"):
        if path.is_dir() or "tensorboard" in path.parts or path.name.startswith("."):
            continue
        if path.suffix == ".csv":
            assert len(pd.read_csv(path)) > 0, path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            assert matplotlib.image.imread(path).size > 0, path
        elif path.suffix == ".keras":
            with zipfile.ZipFile(path) as z:
                assert z.testzip() is None, path
        else:
            raise AssertionError(f"unexpected file {path}")


@pytest.fixture(scope="module")
def six_cells(tmp_path_factory):
    """Six tiny cells: a signal sent after the first cell always lands before the last."""
    import synth

    out = tmp_path_factory.mktemp("six")
    synth.synthesize(out, n_cells=6, n_genes=40, seed=7)
    return out


@pytest.fixture(scope="module")
def reference(six_cells, tmp_path_factory):
    """An uninterrupted seeded per-cell run."""
    save = tmp_path_factory.mktemp("ref") / "run"
    run("--data_dir", six_cells, "--save_dir", save, *SETTINGS)
    return save


def start_and_stop_after_first_cell(tiny_dir, save, sig):
    # A shell without job control starts background jobs (CI's, perhaps) with SIGINT ignored,
    # and Python keeps an ignored SIGINT ignored: give the run the default, as at a terminal.
    proc = subprocess.Popen(
        main_cmd("--data_dir", tiny_dir, "--save_dir", save, *SETTINGS),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while not table_cells(save / "output.csv"):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "SIGINT", "SIGTERM"]
)
def test_stop_then_resume_equals_uninterrupted(six_cells, tmp_path, reference, sig):
    save = tmp_path / "run"
    rc, out, err = start_and_stop_after_first_cell(six_cells, save, sig)
    done = table_cells(save / "output.csv")
    assert done[0] == "S001" and len(done) < 6, (rc, err[-3000:])  # finished cells, nothing more
    assert_files_whole(save)
    if sig != signal.SIGKILL:  # Ctrl-C, or a batch system's kill: a clean stop
        assert rc == 130 and "Traceback" not in err
        message = err.strip().splitlines()[-1]
        assert f"{len(done)}/6 cells finished" in message
        command = message.split("resume with: ")[1]
        argv = shlex.split(command)
        assert argv[:2] == ["python", "main.py"]
        res = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), *argv[2:]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-3000:]
    else:
        assert rc == -signal.SIGKILL
        res = run("--save_dir", save, "--resume")
    assert "S001: finished earlier, kept" in res.stdout
    assert (save / "output.csv").read_bytes() == (reference / "output.csv").read_bytes()
    assert_files_whole(save)
    assert not [p for p in save.rglob(".*") if p.is_file()]  # no temporaries left behind


@pytest.mark.slow
def test_resume_refusals(six_cells, tmp_path, reference):
    tiny_dir = six_cells
    res = run("--save_dir", reference, "--resume", "--epochs", 2, "--lr", 0.01, check=False)
    assert_one_line_error(
        res, "settings differ", "--epochs 2 (the run has 1)", "--lr 0.01 (the run has 0.001)"
    )
    res = run("--data_dir", tiny_dir, "--save_dir", reference, *SETTINGS, check=False)
    assert_one_line_error(res, "already holds an earlier run", "--resume", "--overwrite")
    res = run("--data_dir", tiny_dir, "--resume", check=False)
    assert_one_line_error(res, "--resume needs --save_dir")
    res = run("--data_dir", tiny_dir, "--save_dir", tmp_path / "none", "--resume", check=False)
    assert_one_line_error(res, "no args.json")
    # Same settings spelled out, or a changed --debug (logging only): accepted, nothing to redo.
    before = (reference / "output.csv").read_bytes()
    res = run("--data_dir", tiny_dir, "--save_dir", reference, "--resume", "--debug", *SETTINGS)
    assert res.stdout.count("finished earlier, kept") == 6
    assert (reference / "output.csv").read_bytes() == before


@pytest.mark.slow
def test_mixed_runs_are_reproducible_and_resume_keeps_the_trained_model(tiny_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    run("--data_dir", tiny_dir, "--save_dir", first, "--mix", *SETTINGS)
    run("--data_dir", tiny_dir, "--save_dir", second, "--mix", *SETTINGS)
    table = (first / "output-mix.csv").read_bytes()
    assert (second / "output-mix.csv").read_bytes() == table  # seeded: identical
    # As if stopped while testing the trained model: the last cell's row never written.
    lines = table.decode().splitlines(keepends=True)
    (second / "output-mix.csv").write_text("".join(lines[:-1]))
    model = (second / "best_model.keras").stat().st_mtime_ns
    res = run("--save_dir", second, "--resume")
    assert "Mixed model trained earlier (best epoch 1), kept" in res.stdout
    assert (second / "best_model.keras").stat().st_mtime_ns == model
    assert (second / "output-mix.csv").read_bytes() == table


DISK_FULL = """
import errno, os, sys
sys.path.insert(0, {root!r})
import files
write_csv = files.write_csv
def full(path, table):
    if "S002" in str(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return write_csv(path, table)
files.write_csv = full
import main
sys.exit(main.main({argv!r}))
"""


@pytest.mark.slow
def test_full_disk_stops_cleanly_and_keeps_earlier_results(six_cells, tmp_path, reference):
    save = tmp_path / "run"
    argv = [str(a) for a in ["--data_dir", six_cells, "--save_dir", save, *SETTINGS]]
    res = subprocess.run(
        [sys.executable, "-c", DISK_FULL.format(root=str(ROOT), argv=argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert_one_line_error(
        res, "No space left on device", "S002", "the 1 finished cells", "resume with"
    )
    assert table_cells(save / "output.csv") == ["S001"]
    assert_files_whole(save)
    run("--save_dir", save, "--resume")
    assert (save / "output.csv").read_bytes() == (reference / "output.csv").read_bytes()


@pytest.mark.slow
def test_full_disk_before_any_cell_finished_says_so(six_cells, tmp_path):
    save = tmp_path / "run"
    argv = [str(a) for a in ["--data_dir", six_cells, "--save_dir", save, *SETTINGS]]
    script = DISK_FULL.replace('"S002" in str(path)', '"S001" in str(path)')
    res = subprocess.run(
        [sys.executable, "-c", script.format(root=str(ROOT), argv=argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert_one_line_error(res, "No space left on device", "no cell had finished", "resume with")
    assert not (save / "output.csv").exists()


@pytest.mark.slow
def test_a_moved_run_resumes_and_records_where_it_now_lives(reference, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(reference, moved)
    table = (moved / "output.csv").read_bytes()
    res = run("--save_dir", moved, "--resume")
    assert f"is now {moved.resolve()}" in res.stdout
    assert json.loads((moved / "args.json").read_text())["save_dir"] == str(moved.resolve())
    assert (moved / "output.csv").read_bytes() == table  # nothing redone
    assert json.loads((reference / "args.json").read_text())["save_dir"] == str(reference)


def test_a_stop_request_waits_for_a_batch_and_a_second_one_stops_at_once(capfd):
    import keras
    import numpy as np

    from rundir import StopRequest

    stop = StopRequest()
    stop._handle(signal.SIGINT, None)  # the first signal only records the request...
    assert stop.signum == signal.SIGINT
    assert "send it again to stop at once" in capfd.readouterr().err
    with pytest.raises(KeyboardInterrupt):  # ...which the next check raises
        stop.check()
    with pytest.raises(KeyboardInterrupt):  # a second signal raises in the handler itself
        stop._handle(signal.SIGINT, None)

    # In training: before the next batch, whatever the epoch; weights stay as they were.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.ones((64, 3), np.float32), np.ones((64, 2), np.float32)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[stop.callback()])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    StopRequest().callback().on_train_batch_begin(0)  # no request: nothing happens


@pytest.mark.slow
def test_a_run_from_before_restarts_resumes_without_them(reference, tmp_path):
    import shutil

    save = tmp_path / "old"
    shutil.copytree(reference, save)
    # As the code before restarts left it: no attempts or sound column, no restarts setting.
    table = pd.read_csv(save / "output.csv", dtype={"cell": str})
    table.drop(columns=["attempts", "sound"]).iloc[:-1].to_csv(save / "output.csv", index=False)
    settings = json.loads((save / "args.json").read_text())
    del settings["restarts"]
    (save / "args.json").write_text(json.dumps(settings))
    res = run("--save_dir", save, "--resume")
    assert "No restarts" not in res.stdout
    resumed = pd.read_csv(save / "output.csv", dtype={"cell": str})
    assert resumed.columns.tolist() == table.columns.tolist()
    assert resumed.auc.tolist() == table.auc.tolist()  # the redone cell: seeded, the same
    assert resumed.attempts.isna().tolist() == [True] * (len(table) - 1) + [False]


def test_a_run_from_before_the_warmup_resumes_with_the_papers_schedule(tmp_path):
    import main

    save = tmp_path / "run"
    save.mkdir()
    (save / "args.json").write_text(json.dumps({"epochs": 2, "restarts": 4}))
    args = main.build_parser().parse_args(["--save_dir", str(save), "--resume"])
    args.chief = True
    main.adopt_recorded_settings(args, ["--save_dir", str(save), "--resume"])
    assert args.recipe == "paper" and args.epochs == 2
    (save / "args.json").write_text(json.dumps({"epochs": 2, "recipe": "default"}))
    args = main.build_parser().parse_args(["--save_dir", str(save), "--resume"])
    args.chief = True
    main.adopt_recorded_settings(args, ["--save_dir", str(save), "--resume"])
    assert args.recipe == "default"
