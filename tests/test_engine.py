"""--engine dask (engine.py): the cells as Dask tasks on a local cluster of 2 worker processes
give the sequential run's files (per-cell, fine-tuning, leave-one-out, --weights, --predict); a
worker killed under a cell has it run again; a killed driver resumes with the unfinished cells
only; bad settings are one line."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import config
import engine
from conftest import ROOT, assert_one_line_error, run_script

# One TensorFlow thread in every process, the driver's too: float32 sums are rounded in
# another order with another thread count, so files equal byte for byte only at equal counts.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
SAME = ("log.csv", "predictions.csv", "training.json")


def main_py(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **ONE_THREAD, **(env or {})},
    )


def assert_same_files(a, b, cells, table, extra=()):
    assert (a / table).read_bytes() == (b / table).read_bytes()
    for cell in cells:
        for name in (*SAME, *extra):
            assert (a / cell / name).read_bytes() == (b / cell / name).read_bytes(), (cell, name)


# ---------------------------------------------------------------------------------------------
# Quick: the settings, the worker's seeds, the files sent back


@pytest.mark.parametrize(
    "flags, problem",
    [
        (["--engine", "dask", "--workers", "0"], "--workers must be at least 1, got 0"),
        (["--engine", "dask", "--threads_per_worker", "0"], "--threads_per_worker must be"),
        (["--engine", "dask", "--distribute", "multiworker"], "cannot be combined with"),
        (["--workers", "2"], "--workers applies to --engine dask"),
        (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler answers"),
        (["--engine", "dask", "--scheduler", "h:1", "--workers", "2"], "leave it out"),
        # Leave-one-out: each local worker holds a pool (about 1.5 GiB here, TensorFlow's).
        (
            ["--engine", "dask", "--workers", "2", "--holdout_cell", "all", "--max_memory", "2"],
            "for 2 workers at once (--workers), more than the 2.0 GiB of --max_memory",
        ),
    ],
)
def test_bad_engine_settings_are_one_line_before_anything_is_written(
    tmp_path, flags, problem, capsys
):
    import main

    save = tmp_path / "run"
    argv = ["--data_dir", str(ROOT / "sample_data"), "--save_dir", str(save), *flags]
    assert main.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and problem in err[0], err
    assert not save.exists()


def test_defaults_share_the_cores():
    assert engine.default_threads(2) == 1 and engine.default_workers(n_cores=2) == 2
    assert engine.default_threads(16) == 2 and engine.default_workers(n_cores=16) == 8
    assert engine.default_workers(threads=4, n_cores=64) == 16
    cfg = config.Config(engine="dask")
    assert engine.spreads(cfg) and not engine.spreads(config.Config())
    assert not engine.spreads(config.Config(engine="dask", mix=True))  # one model
    assert engine.spreads(config.Config(engine="dask", finetune=True))
    predict = config.Config(engine="dask", weights="m.keras", predict="d")
    assert engine.spreads(predict) and engine.kind_of(predict) == "predict"
    assert engine.kind_of(config.Config(weights="m.keras")) == "weights"
    assert engine.kind_of(config.Config(holdout_cell="E003")) == "finetune"
    assert engine.kind_of(config.Config(holdout_cell="E003,E004")) == "holdout"
    assert engine.kind_of(config.Config(holdout_cell="all")) == "holdout"


def test_keras_draws_its_seeds_from_its_own_generator(monkeypatch):
    """What a worker does to Keras (engine.isolate_keras_seeds): another thread's use of
    Python's random between the seeding and the network no longer changes the weights."""
    import random

    import keras
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    monkeypatch.setattr(seed_generator, "python_random", random)
    monkeypatch.setattr(rng_utils, "random", random)

    def weights(disturb):
        keras.utils.set_random_seed(5)
        if disturb:
            random.random()  # as Dask's event loop does, in another thread
        layer = keras.layers.Dense(3)
        layer.build((None, 4))
        return layer.kernel.numpy()

    assert (weights(False) == weights(False)).all()
    assert not (weights(False) == weights(True)).all()  # the trouble, without isolation
    before = weights(False)
    engine.isolate_keras_seeds()
    assert (weights(True) == before).all()  # the sequential run's draws, undisturbed


def test_a_cell_folder_sent_back_as_bytes_lands_whole(tmp_path):
    folder = tmp_path / "worker" / "S001"
    (folder / "attempts" / "1").mkdir(parents=True)
    (folder / "log.csv").write_text("epoch\n0\n")
    (folder / "attempts" / "1" / "log.csv").write_bytes(b"\x00\x01")
    payload = engine.pack(folder)
    save = tmp_path / "run"
    (save / engine.TASKS / "key").mkdir(parents=True)
    (save / "S001").mkdir()
    (save / "S001" / "stale.txt").write_text("an earlier try")
    engine.place(save, "S001", "key", payload, shared_files=False)
    assert sorted(p.relative_to(save).as_posix() for p in (save / "S001").rglob("*")) == [
        "S001/attempts",
        "S001/attempts/1",
        "S001/attempts/1/log.csv",
        "S001/log.csv",
    ]
    assert (save / "S001" / "attempts" / "1" / "log.csv").read_bytes() == b"\x00\x01"


# ---------------------------------------------------------------------------------------------
# Slow: real local clusters of 2 worker processes


@pytest.mark.slow
def test_every_spread_experiment_equals_the_sequential_run(tmp_path):
    data = ROOT / "sample_data"
    cells = ["S001", "S002", "S003"]
    common = ["--data_dir", data, "--epochs", 1, "--seed", 4, "--mixed_precision", "off"]
    for name, flags, table, tested in (
        ("percell", [], "output.csv", cells),
        ("finetune", ["--finetune", "--finetune_epochs", 1], "output-finetune.csv", cells),
        (
            "loo",
            ["--holdout_cell", "S002,S003", "--finetune_epochs", 1],
            "output-finetune.csv",
            ["S002", "S003"],
        ),
    ):
        seq, dask = tmp_path / f"{name}-seq", tmp_path / f"{name}-dask"
        res = main_py(*common, *flags, "--save_dir", seq)
        assert res.returncode == 0, res.stderr[-2000:]
        res = main_py(*common, *flags, "--save_dir", dask, "--engine", "dask", "--workers", 2)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "Dask: a local cluster of 2 workers x 1 threads" in res.stdout
        assert "the workers write into the run folder" in res.stdout
        assert res.stdout.count(" done)") == len(tested), res.stdout
        extra = ("mixed/predictions.csv",) if name != "percell" else ()
        if name == "loo":  # each held-out cell's own pre-training
            extra += ("pretraining/log.csv", "pretraining/trained.json")
        assert_same_files(seq, dask, tested, table, extra)
        assert not (dask / engine.TASKS).exists()
        recorded = json.loads((dask / "args.json").read_text())
        assert recorded["engine"] == "dask" and recorded["workers"] == 2
    # The per-cell run's models, tested (--weights) and predicting every gene (--predict).
    models = tmp_path / "percell-seq"
    for name, flags, table in (
        ("weights", ["--weights", models, "--data_dir", data], "output.csv"),
        ("predict", ["--weights", models, "--predict", data], "output-predict.csv"),
    ):
        seq, dask = tmp_path / f"{name}-seq", tmp_path / f"{name}-dask"
        res = main_py(*flags, "--seed", 4, "--save_dir", seq)
        assert res.returncode == 0, res.stderr[-2000:]
        res = main_py(*flags, "--seed", 4, "--save_dir", dask, "--engine", "dask", "--workers", 2)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.count(" done)") == 3, res.stdout
        assert (seq / table).read_bytes() == (dask / table).read_bytes()
        for cell in cells:
            name = "predictions.csv"
            assert (seq / cell / name).read_bytes() == (dask / cell / name).read_bytes(), cell


KILLER = '''
import os, signal, sys
from pathlib import Path

import engine

_real = engine.cell_task


def cell_task(kind, cell, where, cell_data, model, **settings):
    """S002's first try dies with its worker (SIGKILL, as the kernel's OOM killer does)."""
    marker = Path(os.environ["KILL_MARKER"])
    if cell == "S002" and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return _real(kind, cell, where, cell_data, model, **settings)


def no(*args):
    """A worker's answer on machines that share no folder with the driver."""
    return False
'''

DRIVER = """
import sys
sys.path.insert(0, {root!r})
import engine, killer
engine.cell_task = killer.cell_task  # pickled by reference: the workers import killer
engine._sees_run_folder = engine._sees_data = killer.no  # as on machines sharing no folder
import main
if __name__ == "__main__":  # the workers are spawned: they import this script again
    sys.exit(main.main({argv!r}))
"""


@pytest.mark.slow
def test_a_worker_killed_under_a_cell_has_it_run_again_and_files_are_sent_back(tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)
    data = ROOT / "sample_data"
    common = ["--data_dir", str(data), "--epochs", "1", "--seed", "4", "--mixed_precision", "off"]
    seq, dask = tmp_path / "seq", tmp_path / "dask"
    assert main_py(*common, "--save_dir", seq).returncode == 0
    argv = [*common, "--save_dir", str(dask), "--engine", "dask", "--workers", "2"]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=str(ROOT), argv=argv))
    env = {
        **os.environ,
        **ONE_THREAD,
        "PYTHONPATH": str(tmp_path),
        "KILL_MARKER": str(tmp_path / "killed"),
    }
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "killed").exists()  # S002's first worker did die
    assert "the workers send their files back" in res.stdout
    assert "each cell's arrays are sent to the workers" in res.stdout
    assert_same_files(seq, dask, ["S001", "S002", "S003"], "output.csv")


@pytest.mark.slow
def test_a_killed_driver_resumes_with_the_unfinished_cells_only(tmp_path):
    data = ROOT / "sample_data"
    common = ["--data_dir", data, "--epochs", 3, "--seed", 4, "--mixed_precision", "off"]
    save = tmp_path / "run"
    flags = [*common, "--save_dir", save, "--engine", "dask", "--workers", 1]
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *map(str, flags)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, **ONE_THREAD},
    )
    try:
        for line in driver.stdout:  # one worker: one cell at a time
            if "(1 of 3 done)" in line:
                break
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
    first = (save / "output.csv").read_text().splitlines()
    assert len(first) == 2  # the header and the one finished cell
    done = first[1].split(",")[0]
    time.sleep(2)  # the orphaned workers notice their driver is gone
    res = run_script("main.py", "--save_dir", save, "--resume", "--engine", "dask")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{done}: finished earlier, kept" in res.stdout
    assert res.stdout.count(" done)") == 2
    seq = tmp_path / "seq"
    assert main_py(*common, "--save_dir", seq).returncode == 0
    assert (seq / "output.csv").read_bytes() == (save / "output.csv").read_bytes()


def test_one_line_error_for_an_unreachable_scheduler_from_the_command_line(tmp_path):
    res = run_script(
        "main.py", "--data_dir", ROOT / "sample_data", "--save_dir", tmp_path / "r",
        "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9",
    )  # fmt: skip
    assert_one_line_error(res, "--scheduler tcp://127.0.0.1:9", "no Dask scheduler answers")
