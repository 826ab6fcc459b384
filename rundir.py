"""The run folder: its lock (one run per folder), claiming and preparing it, its default name,
what a resumed run shares with other workers, and stopping safely on Ctrl-C and SIGTERM.

A run folder holds one run: its args.json, results table, and a folder per cell (or the mixed
model's files). The lock is taken before anything is loaded and held to the end of the
process; an earlier run in the folder is continued only with --resume and replaced only with
--overwrite. Stop requests are read at safe points (before each training batch, after each
epoch, between cells), so a stopped run keeps every finished cell and resumes from there.

It trains nothing (experiments.py does) and parses no command line (main.py does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from pathlib import Path

import distribute
import files
from config import ExperimentError
from results import TABLES, Results, holds_results, table_name

# ---------------------------------------------------------------------------------------------
# Stopping safely on Ctrl-C and SIGTERM


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM (a batch system's kill, or `kill PID`) stop the run at the
    next safe point, with the resume command.

    Not Python's default of raising KeyboardInterrupt in the signal handler: the handler runs
    wherever the main thread happens to be, and inside a garbage-collection callback (of
    TensorFlow's weak references, say) Python prints the exception and drops it; a run
    interrupted there went on to finish. So the handler only records the signal, and check()
    raises KeyboardInterrupt where nothing swallows it: before each training batch, after
    each epoch, and between cells. A second signal raises at once."""

    def __init__(self):
        self.signum = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # An ignored signal (a job started with nohup, or in the background by a shell
            # without job control) stays ignored, as with Python's own handler.
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: the handler may run while the main thread is inside a print.
        os.write(2, b"\nstopping after the current batch; send it again to stop at once\n")

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt

    def callback(self):
        """A Keras callback for fit that calls check() before every training batch and after
        every epoch."""
        import keras

        stop = self

        class StopOnRequest(keras.callbacks.Callback):
            # Batch *begin* hooks: an end hook would make Keras fetch each batch's metrics.
            def on_train_batch_begin(self, batch, logs=None):
                stop.check()

            def on_epoch_end(self, epoch, logs=None):
                stop.check()

        return StopOnRequest()


STOP = StopRequest()


# ---------------------------------------------------------------------------------------------
# The run folder


def resume_command(save: Path) -> str:
    import shlex

    return f"python main.py --save_dir {shlex.quote(str(save))} --resume"


_LOCKS: dict[Path, files.FolderLock] = {}  # the save folder this process owns


def own_save_dir(save: Path) -> None:
    """Take the save folder's lock for the rest of this process: a second run into it (with or
    without --resume or --overwrite) stops here, having touched nothing. Without locks on this
    file system (some network file systems), warn and go on."""
    import atexit

    if save in _LOCKS:
        return
    lock = files.FolderLock(save)
    try:
        held = lock.acquire()
    except files.FolderBusy as e:
        by = f"process {e.pid}" if e.pid else "another process"
        raise ExperimentError(
            f"{save}: another run is using this folder ({by}); wait for it to end, or choose "
            "another --save_dir"
        ) from None
    except OSError as e:
        raise ExperimentError(f"{save}: cannot write in the save folder ({e.strerror})") from None
    if not held:
        print(
            f"warning: {save}: this file system has no file locks, so nothing stops a second "
            "run from writing into this folder at the same time",
            file=sys.stderr,
        )
    _LOCKS[save] = lock
    atexit.register(lock.release)


def release_save_dirs() -> None:
    """Let go of the save folders this process owns (main.main does, on its way out)."""
    while _LOCKS:
        _LOCKS.popitem()[1].release()


def claim_save_dir(cfg) -> None:
    """Before anything is loaded: own an existing save folder at once, then refuse one that
    holds an earlier run unless --resume or --overwrite says what to do with it."""
    save = Path(cfg.save_dir)
    if save.is_dir():
        own_save_dir(save)
    earlier = holds_results(save)
    if earlier and not (cfg.overwrite or cfg.resume):
        raise ExperimentError(
            f"{save} already holds an earlier run ({', '.join(earlier)}); "
            "continue it with --resume, replace it with --overwrite, or choose "
            "another --save_dir"
        )


def prepare_save_dir(cfg) -> tuple[Path, Path]:
    """Make and own the save folder (what claim_save_dir checked still holds: the lock was
    taken then if the folder existed); --overwrite removes the earlier run's record files.
    Returns (folder, results table)."""
    save = Path(cfg.save_dir)
    claim_save_dir(cfg)
    try:
        save.mkdir(parents=True, exist_ok=True)
        own_save_dir(save)
        if cfg.overwrite:
            for p in [save / "trained.json", *(save / t for t in TABLES)]:
                p.unlink(missing_ok=True)
    except OSError as e:
        raise ExperimentError(f"{save}: cannot create the save folder ({e.strerror})") from None
    return save, save / table_name(cfg)


def record_location(save: Path) -> None:
    """A resumed run moved to another folder: its args.json names the folder it now lives in."""
    path = save / "args.json"
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(settings, dict):
        return
    recorded = settings.get("save_dir")
    if recorded is None or Path(recorded).resolve() != save.resolve():
        print(f"args.json: save_dir {recorded} is now {save.resolve()}", flush=True)
        settings["save_dir"] = str(save.resolve())
        files.write_json(path, settings)


def default_run_name(cfg) -> str:
    if cfg.weights and not cfg.finetune:
        w = Path(cfg.weights)
        what = "predict" if cfg.predict is not None else "test"
        return f"{what}-{w.parent.name}-{w.stem}" if w.is_file() else f"{what}-{w.name}"
    experiment = (
        "percell"
        if not cfg.mix
        else "mix"
        if not cfg.finetune
        else f"loo-{cfg.holdout_cell.replace(',', '+')}"
        if cfg.holdout_cell
        else "finetune"
    )
    name = (
        f"{experiment}-{cfg.variant}-e{cfg.epochs}-b{cfg.batch_size}-lr{cfg.lr:g}-d{cfg.lr_decay:g}"
    )
    if cfg.finetune:
        name += (
            f"-fe{cfg.finetune_epochs}-flr{cfg.finetune_lr:g}{'-frozen' if cfg.freeze_conv else ''}"
        )
    if cfg.weights:
        w = Path(cfg.weights)
        name += f"-from-{w.parent.name if w.is_file() else w.name}"
    return name


def default_save_dir(cfg) -> Path:
    """logs/<the default run name>; a default folder never collides with an earlier run: -2,
    -3, ... are appended."""
    base = Path("logs") / default_run_name(cfg)
    save, n = base, 1
    while holds_results(save):
        n += 1
        save = base.with_name(f"{base.name}-{n}")
    return save


def worker_save_dir(cfg) -> tuple[Path, Path]:
    """A worker other than the chief trains in step with it but writes nothing into save_dir:
    its logs, models and tables go to a temporary folder, deleted when it exits."""
    import atexit
    import shutil
    import tempfile

    save = Path(tempfile.mkdtemp(prefix="worker-"))
    atexit.register(shutil.rmtree, save, ignore_errors=True)
    return save, save / table_name(cfg)


def share_resume_state(run, cells: list[str], save: Path, results: Results):
    """Under several workers, give every worker the chief's view of a resumed run (finished
    cells, a finished mixed model), so all of them train the same models in step; returns the
    run, which on a worker knows whether the chief's mixed model is finished."""
    if run.distribute != "multiworker" or distribute.workers() < 2:
        return run
    flags = [results.done(c) for c in cells] + [(save / "trained.json").exists()]
    flags = distribute.chief_values(run.strategy, flags)
    if run.chief:
        return run
    results.rows = {c: {"cell": c} for c, done in zip(cells, flags) if done}
    return dataclasses.replace(run, chief_trained=bool(flags[-1]))
