"""The experiments main.py runs: per-cell, mixed, fine-tuning (and leave-one-out) and saved-model
runs, cell by cell into a results table, with the run folder, resume, safe stops and the memory check.

It parses no command line (main.py does, and turns ExperimentError into exit status 2); the
network is Convnet.py's, the data data.py's, the table format results.py's, the figures utils.py's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

import data
import distribute
import files
import pooling
import restarts
from results import (
    TABLES,
    Results,
    holds_results,
    table_name,
    write_cell_predictions,
    write_predictions,
)

# A training's files in its model's folder; an attempt replaced by a restart keeps them in
# <folder>/attempts/<n>/.
TRAINING_FILES = ("log.csv", "log.png", "best_model.keras", "final_model.keras", "tensorboard")
# Training outputs of the mixed model in the run folder, removed before it is trained again.
MIX_TRAINING_FILES = (
    *TRAINING_FILES,
    "trained.json",
    "training.json",
    "attempts",
    "attempts.csv",
)


class ExperimentError(Exception):
    """A run that cannot go on as asked (a bad saved model, a cell left without data, a save
    folder that cannot be written, too little memory); said in one line."""


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


def claim_save_dir(args) -> None:
    """Before anything is loaded: own an existing save folder at once, then refuse one that
    holds an earlier run unless --resume or --overwrite says what to do with it."""
    save = Path(args.save_dir)
    if save.is_dir():
        own_save_dir(save)
    earlier = holds_results(save)
    if earlier and not (args.overwrite or args.resume):
        raise ExperimentError(
            f"{save} already holds an earlier run ({', '.join(earlier)}); "
            "continue it with --resume, replace it with --overwrite, or choose "
            "another --save_dir"
        )


def prepare_save_dir(args) -> tuple[Path, Path]:
    """Make and own the save folder (what claim_save_dir checked still holds: the lock was
    taken then if the folder existed); --overwrite removes the earlier run's record files.
    Returns (folder, results table)."""
    save = Path(args.save_dir)
    claim_save_dir(args)
    try:
        save.mkdir(parents=True, exist_ok=True)
        own_save_dir(save)
        if args.overwrite:
            for p in [save / "trained.json", *(save / t for t in TABLES)]:
                p.unlink(missing_ok=True)
    except OSError as e:
        raise ExperimentError(f"{save}: cannot create the save folder ({e.strerror})") from None
    return save, save / table_name(args)


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


def worker_save_dir(args) -> tuple[Path, Path]:
    """A worker other than the chief trains in step with it but writes nothing into save_dir:
    its logs, models and tables go to a temporary folder, deleted when it exits."""
    import atexit
    import shutil
    import tempfile

    save = Path(tempfile.mkdtemp(prefix="worker-"))
    atexit.register(shutil.rmtree, save, ignore_errors=True)
    return save, save / table_name(args)


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


# ---------------------------------------------------------------------------------------------
# One cell: train, test, write its files


def test_cell(model, cell: str, split, folder: Path, best_epoch) -> dict:
    """Test on one cell's test split; write predictions.csv and roc.png; return a results row."""
    import Convnet
    from utils import plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    res = Convnet.test(model, split.x, split.y)
    write_predictions(folder, split, res["proba"])
    plot_roc(
        split.labels, res["proba"], folder / "roc.png", title=f"{cell}: test ROC (n = {res['n']})"
    )
    return {
        "cell": cell,
        "auc": res["auc"],
        "accuracy": res["accuracy"],
        "n_test": res["n"],
        "best_epoch": best_epoch,
    }


_SAID = set()


@dataclasses.dataclass
class Trained:
    """What train_model returns: the model to test, its best epoch (1-based), how many
    attempts it took (1 without a restart), and whether it is sound (restarts.py: it learned
    and did not collapse; None where the rule cannot judge, on a small or one-class validation
    split)."""

    model: object
    best_epoch: int | None
    attempts: int
    sound: bool | None = None


# The record of a trained model, in its folder: recipe, attempts, best epoch and soundness.
TRAINING_RECORD = "training.json"


def train_model(
    args, train, valid, folder: Path, seed: int, start=None, epochs=None, lr=None, what=None
) -> Trained:
    """Train a fresh network (or continue `start`, a model file) into `folder`, draw its
    curves, and return the model to test.

    Every training is judged on its validation split (restarts.py) when the split is large
    enough. With --restarts N, an attempt that stalled or collapsed is stopped and trained
    again from a fresh seed, up to N times; each replaced attempt's files move to
    folder/attempts/<n>/, attempts.csv lists them all, and the attempt kept is the best sound
    one by the validation metric (--monitor): its files are the ones in `folder`. When every
    attempt failed, the one that ranked the validation genes best is trained again from its
    seed to the full epochs, without stopping, and tested as not sound. A training that
    diverges (NaN or infinite loss) stops at once and counts as failed too; ExperimentError is
    raised when no attempt kept a model. ``what`` names the model in messages (default: the
    folder's name, the cell). folder/training.json records the outcome."""
    import Convnet

    what = what or folder.name
    planned = epochs or args.epochs
    off = restarts.guard_applies(valid.labels)
    if args.restarts and off and off not in _SAID:
        _SAID.add(off)  # once per run, not once per cell
        print(f"No restarts: {off}", flush=True)
    majority = None if off else restarts.majority_rate(valid.labels)
    stop = majority is not None and args.restarts > 0
    shutil.rmtree(folder / "attempts", ignore_errors=True)
    (folder / "attempts.csv").unlink(missing_ok=True)
    attempts = []
    total = args.restarts + 1 if stop else 1
    for number in range(1, total + 1):
        attempt_seed = restarts.attempt_seed(seed, number)
        fit, seen = _train_once(
            args, train, valid, folder, attempt_seed, start, planned, lr, majority if stop else None
        )
        judge = "guard" if stop else "replay" if majority is not None else None
        attempt = _attempt(number, attempt_seed, fit, seen, judge, args.monitor, majority, planned)
        attempts.append(attempt)
        if not attempt.failed:
            break
        if number < total:
            attempt.folder = f"attempts/{number}"
            _move_training(folder, folder / attempt.folder)
            print(
                f"{what}: attempt {number} of {total} {attempt.outcome}: {attempt.why}; "
                f"restarting from seed {restarts.attempt_seed(seed, number + 1)} (attempt "
                f"{number + 1}); attempt {number}'s log is in {folder / attempt.folder}",
                flush=True,
            )
    chosen = restarts.choose(attempts, args.monitor)
    if chosen is not None and chosen is not attempts[-1]:
        # An earlier attempt wins: its files take the folder, the last one's move aside.
        _bring_back(folder, chosen, attempts[-1])
    if chosen is not None and chosen.failed and chosen.outcome != "diverged":
        if chosen.epochs < planned:
            chosen = _train_on(args, train, valid, folder, attempts, chosen, planned, start, lr)
    if len(attempts) > 1:
        files.write_csv(
            folder / "attempts.csv",
            pd.DataFrame(restarts.attempt_rows(attempts, chosen), columns=restarts.ATTEMPT_COLUMNS),
        )
    _report(args, what, folder, attempts, chosen, lr)
    # A diverged model is never sound; otherwise the rule's verdict, where it can judge.
    sound = (
        False if chosen.outcome == "diverged" else None if majority is None else not chosen.failed
    )
    files.write_json(
        folder / TRAINING_RECORD,
        {
            "recipe": args.recipe,
            "attempts": len(attempts),
            "best_epoch": chosen.best_epoch,
            "outcome": chosen.outcome,
            "sound": sound,
        },
    )
    return Trained(
        Convnet.load_model(str(folder / "best_model.keras")),
        chosen.best_epoch,
        len(attempts),
        sound,
    )


def _attempt(number, seed, fit, seen, judge, monitor, majority, planned) -> restarts.Attempt:
    """One finished attempt, judged: with judge "guard", by the verdict `seen` of the guard that
    watched every epoch (and stopped the training there); with "replay", by the rule replayed
    over its log (--restarts 0: judged, never stopped); with None, not at all (the rule cannot
    judge this validation split): "learned"."""
    value, val_auc = restarts.best_of(fit.history, fit.best_epoch, monitor)
    attempt = restarts.Attempt(
        number,
        seed,
        len(fit.history.get("loss", [])),
        fit.best_epoch,
        value,
        val_auc,
        "learned",
        top_val_auc=restarts.top_val_auc(fit.history),
    )
    if fit.diverged_epoch is not None:
        loss = fit.history["loss"][fit.diverged_epoch - 1]
        attempt.outcome = "diverged"
        attempt.why = f"training diverged at epoch {fit.diverged_epoch} (loss {loss:g})"
    elif judge == "guard" and seen is not None:
        attempt.outcome, attempt.why = seen.kind, seen.why
    elif judge == "replay":
        found = restarts.verdict(
            fit.history.get("val_auc", []), fit.history.get("val_accuracy", []), majority, planned
        )
        if found is not None:
            attempt.outcome, attempt.why = found.kind, found.why
    return attempt


def _train_on(args, train, valid, folder, attempts, chosen, planned, start, lr):
    """Every attempt failed: train the one that ranked best (`chosen`, whose files are in
    `folder`) again from its seed to the full ``planned`` epochs, never stopped, so that no
    1-2-epoch network is tested; returns that training as one more attempt, not sound
    (outcome "trained on"). The short attempt's files move to attempts/<n>/."""
    chosen.folder = f"attempts/{chosen.number}"
    _move_training(folder, folder / chosen.folder)
    print(
        f"{folder.name}: every attempt failed; attempt {chosen.number} ranked the validation "
        f"genes best (val AUC {chosen.top_val_auc:.3f}): training it again from its seed "
        f"{chosen.seed} to all {planned} epochs, without stopping",
        flush=True,
    )
    fit, _ = _train_once(args, train, valid, folder, chosen.seed, start, planned, lr, None)
    on = _attempt(len(attempts) + 1, chosen.seed, fit, None, None, args.monitor, None, planned)
    on.trained_on = True
    why = (
        f"every attempt failed; attempt {chosen.number} ({chosen.outcome}), which ranked best, "
        f"trained again from its seed to {planned} epochs without stopping"
    )
    if on.outcome == "diverged":
        on.why = f"{why}; it diverged at epoch {fit.diverged_epoch}"
    else:
        on.outcome, on.why = "trained on", why
    attempts.append(on)
    if fit.best_epoch is None:  # diverged before any epoch: test the short attempt instead
        _bring_back(folder, chosen, on)
        return chosen
    return on


def _bring_back(folder: Path, kept, aside) -> None:
    """Make attempt `kept`'s files (in folder/kept.folder) the ones in `folder`, moving those
    of attempt `aside`, in `folder` now, to folder/attempts/<its number>/."""
    aside.folder = f"attempts/{aside.number}"
    _move_training(folder, folder / aside.folder)
    _move_training(folder / kept.folder, folder)
    shutil.rmtree(folder / kept.folder, ignore_errors=True)
    kept.folder = "."


def _train_once(args, train, valid, folder: Path, seed, start, epochs, lr, majority):
    """One attempt: a network seeded by `seed`, trained into `folder` (its curves drawn);
    returns (Convnet.TrainResult, restarts.Failure or None). With `majority` (the validation
    split's majority-class rate), a guard judges every epoch and stops the training at the
    first sign of a stall or collapse: its verdict is returned."""
    import keras

    import Convnet
    from utils import plot_log

    keras.utils.set_random_seed(seed)  # initial weights, then shuffling and dropout
    guard = [] if majority is None else [Convnet.StopOnStall(majority, epochs)]
    # Weights, optimizer and metrics are created under the strategy and dtype policy.
    with distribute.scope(args, args.strategy):
        if start is None:
            model = Convnet.Conv1DNet(train.x.shape[1:], variant=args.variant)
        else:
            model = Convnet.in_current_policy(Convnet.load_model(str(start)))
            if args.freeze_conv:
                for layer in model.layers:
                    layer.trainable = not isinstance(layer, keras.layers.Conv1D)
        # --scale_lr scales the fine-tuning rate as it scales --lr.
        scale = distribute.learning_rate(args, args.strategy) / args.lr
        fit = Convnet.train(
            model,
            (train.x, train.y),
            (valid.x, valid.y),
            str(folder),
            epochs=epochs,
            batch_size=args.batch_size,
            lr=(lr or args.lr) * scale,
            lr_decay=args.lr_decay,
            monitor=args.monitor,
            debug=args.debug,
            seed=seed,
            jit_compile=args.jit,
            callbacks=[STOP.callback(), *guard],
            warmup=restarts.warmup_steps(args.recipe, len(train.x), args.batch_size),
        )
    plot_log(folder)
    return fit, guard[0].failure if guard else None


def _move_training(source: Path, target: Path) -> None:
    """Move one training's files (TRAINING_FILES) from `source` to the folder `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TRAINING_FILES:
        if (source / name).exists():
            shutil.rmtree(target / name, ignore_errors=True)
            os.replace(source / name, target / name)


def _report(args, what, folder, attempts, chosen, lr) -> None:
    """Say which attempt is tested, and warn when it is not a sound one."""
    if chosen is None:
        last = attempts[-1]
        raise ExperimentError(
            f"{what}: {last.why} before any epoch could be kept, so there is no model to test "
            f"(see {folder / 'log.png'}); lower the learning rate ({(lr or args.lr):g})"
        )
    if len(attempts) > 1:
        others = ", ".join(
            f"attempt {a.number}: {a.best_value:.4f}" for a in attempts if a is not chosen
        )
        print(
            f"{what}: attempt {chosen.number} of {len(attempts)} is tested (best {args.monitor} "
            f"{chosen.best_value:.4f} at epoch {chosen.best_epoch}; {others}); all attempts "
            f"are listed in {folder / 'attempts.csv'}",
            flush=True,
        )
    if chosen.outcome == "diverged":
        print(
            f"warning: {what}: {chosen.why}; stopped there, and the best epoch before it "
            f"({chosen.best_epoch}) is the one tested, marked not sound",
            file=sys.stderr,
            flush=True,
        )
    elif chosen.failed:
        # Read from the validation split alone: the test split has no say in what is trained.
        how = (
            f"all {len(attempts) - 1} attempts failed; {chosen.why}"
            if chosen.trained_on
            else f"attempt {chosen.number} {chosen.outcome}: {chosen.why}"
        )
        print(
            f"warning: {what}: not sound: {how}; its best validation AUC is "
            f"{chosen.top_val_auc:.3f}; it is tested and marked sound=False in the results "
            f"table (see {folder / 'log.png'})",
            file=sys.stderr,
            flush=True,
        )


def cell_seed(args, cell: str) -> int:
    # A seed per cell: a cell's result depends on the run's seed and the cell alone, not on
    # which other cells the run includes.
    return (args.seed + zlib.crc32(cell.encode())) % 2**31


def unfinished_cells(args, cells: list[str], save: Path, results: Results, doing=""):
    """Yield (cell, its data, start time) for each cell not finished yet; finished ones are
    announced and skipped, and what an interrupted attempt left (its row never reached the
    table) is removed first."""
    import keras

    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            print(f"Cell {i}/{len(cells)}: {cell}: finished earlier, kept", flush=True)
            continue
        STOP.check()
        print(f"Cell {i}/{len(cells)}: {cell}{doing}", flush=True)
        start = time.time()
        shutil.rmtree(save / cell, ignore_errors=True)
        c = data.load_cell(Path(args.data_dir) / cell, additional_features=args.features)
        STOP.check()
        keras.backend.clear_session()  # a fresh graph per cell keeps memory flat over 56 cells
        yield cell, c, start


# ---------------------------------------------------------------------------------------------
# The experiments


def run_per_cell(args, cells: list[str], save: Path, results: Results) -> None:
    for cell, c, start in unfinished_cells(args, cells, save, results):
        trained = train_model(args, c.train, c.valid, save / cell, cell_seed(args, cell))
        row = test_cell(trained.model, cell, c.test, save / cell, trained.best_epoch)
        row["attempts"] = trained.attempts
        row["sound"] = trained.sound
        results.add(row)  # after every cell: a stopped run keeps what finished
        tries = f", {trained.attempts} attempts" if trained.attempts > 1 else ""
        unsound = ", NOT SOUND" if trained.sound is False else ""
        print(
            f"Cell {cell}: test AUC {row['auc']:.4f}, accuracy {row['accuracy']:.4f}, "
            f"best epoch {trained.best_epoch}{tries}{unsound}, {time.time() - start:.0f}s",
            flush=True,
        )


def pool_plan(args, cells: list[str]) -> pooling.Plan:
    """What this pooled run pools and tests (pooling.py): --mix tests every pooled cell on its
    test split; fine-tuning also validates each fine-tuned cell on its valid split, and
    leave-one-out pools every cell but the one it tests."""
    if args.finetune:
        targets = [args.holdout_cell] if args.holdout_cell else cells
        pool, splits = pretraining_cells(args, cells), ("valid", "test")
    else:
        targets, pool, splits = cells, cells, ("test",)
    return pooling.plan(
        args.data_dir, pool, targets, splits, args.pooling, args.pool_split, args.features
    )


def load_pool(args, plan: pooling.Plan, tests: bool):
    """The pooled data of a plan, the plan's counts said on the console."""
    mix = data.load_data_mix(
        args.data_dir,
        plan.pool,
        seed=args.seed,
        additional_features=args.features,
        tests=tests,
        leave_out=plan.left_out if len(plan.left_out) else None,
        by_gene=plan.split == "gene",
    )
    for line in plan.describe():
        print(line, flush=True)
    return mix


def run_mix(args, cells: list[str], save: Path, results: Results) -> None:
    import Convnet

    todo = [c for c in cells if not results.done(c)]
    if not todo:
        return
    plan = pool_plan(args, cells)
    mix = load_pool(args, plan, tests=True)
    STOP.check()
    print(
        f"Mixed: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation genes "
        f"pooled from {len(cells)} cells, {split_words(plan, mix)}",
        flush=True,
    )
    best_epoch, attempts, sound = train_mixed(args, mix, save, cells, plan)
    if not args.chief:
        return  # testing involves no other worker: the chief's alone
    model = Convnet.load_model(str(save / "best_model.keras"))
    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            continue
        STOP.check()
        row = test_cell(model, cell, mix.tests[cell], save / cell, best_epoch)
        row.update(attempts=attempts, sound=sound, **plan.row_counts(cell))
        results.add(row)
        print(
            f"Cell {i}/{len(cells)}: {cell}: test AUC {row['auc']:.4f}, "
            f"accuracy {row['accuracy']:.4f}",
            flush=True,
        )


def split_words(plan: pooling.Plan, mix) -> str:
    """How the pool was split, for the console."""
    if plan.split == "gene":
        return "split by gene (no gene on both sides)"
    return (
        f"split by row, the paper's ({pooling.genes_on_both_sides(mix):,} genes have rows "
        "on both sides)"
    )


def train_mixed(args, mix, save: Path, cells: list[str], plan: pooling.Plan):
    """Train the mixed model into save/best_model.keras unless a resumed run already did;
    return (its best epoch, the attempts it took, whether it is sound). save/trained.json
    records that training finished, on what it trained, and what it left out."""
    marker = save / "trained.json"
    if args.chief_trained:  # a worker: the chief's model is finished
        return None, None, None
    if args.resume and marker.exists() and (save / "best_model.keras").exists():
        trained = json.loads(marker.read_text())
        best_epoch = trained["best_epoch"]
        print(f"Mixed model trained earlier (best epoch {best_epoch}), kept", flush=True)
        return best_epoch, trained.get("attempts"), trained.get("sound")
    for name in MIX_TRAINING_FILES:  # an interrupted training's remains
        path = save / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    trained = train_model(args, mix.train, mix.valid, save, args.seed, what="the mixed model")
    files.write_json(
        marker,
        {
            "best_epoch": trained.best_epoch,
            "attempts": trained.attempts,
            "sound": trained.sound,
            "cells": cells,
            "genes": {"train": len(mix.train.ids), "valid": len(mix.valid.ids)},
            **plan.record(),
            "genes_on_both_sides": pooling.genes_on_both_sides(mix),
        },
    )
    return trained.best_epoch, trained.attempts, trained.sound


def mixed_memory_check(args, cells: list[str]) -> None:
    """Refuse the mixed experiment before loading it when it would not fit in memory."""
    need = data.mixed_bytes(args.data_dir, cells, additional_features=args.features)
    # Training holds the pooled arrays plus TensorFlow's own copy of the batch pipeline's
    # source (measured: about one more copy of the training arrays) and the framework itself.
    need = int(need * 2 + 1.5 * 2**30)
    limit = args.max_memory * 2**30 if args.max_memory is not None else files.available_memory()
    if limit and need > limit:
        where = "--max_memory" if args.max_memory is not None else "available memory"
        raise ExperimentError(
            f"the mixed experiment on {len(cells)} cells needs about {need / 2**30:.1f} GiB, "
            f"more than the {limit / 2**30:.1f} GiB of {where}; choose fewer cells with "
            "--cells, or override with --max_memory GIB (0: no check)"
        )


def run_finetune(args, cells: list[str], save: Path, results: Results) -> None:
    """Pre-train the mixed model (or take --weights), then per cell: test it, fine-tune it on
    the cell's own train/valid splits, and test the fine-tuned model. With --holdout_cell the
    pre-training pool leaves that cell out and only that cell is fine-tuned."""
    import Convnet

    targets = [args.holdout_cell] if args.holdout_cell else cells
    if all(results.done(c) for c in targets):
        return
    if args.weights:
        (pretrained,) = weights_paths(args, cells)  # checked by check_weights before the run
        marker = pretrained.parent / "trained.json"
        trained = json.loads(marker.read_text()) if marker.exists() else {}
        best_mixed, attempts_mixed = trained.get("best_epoch"), trained.get("attempts")
        sound_mixed = trained.get("sound")
        plan = pooling.of_saved_model(args.data_dir, trained, targets, args.features)
        for line in plan.describe():
            print(line, flush=True)
    else:
        plan = pool_plan(args, cells)
        mix = load_pool(args, plan, tests=False)
        STOP.check()
        print(
            f"Pre-training: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation "
            f"genes pooled from {len(plan.pool)} cells, {split_words(plan, mix)}",
            flush=True,
        )
        best_mixed, attempts_mixed, sound_mixed = train_mixed(args, mix, save, plan.pool, plan)
        del mix  # the pooled arrays are not needed for fine-tuning
        pretrained = save / "best_model.keras"
        if args.chief_trained:
            # A worker resuming with the chief: it needs the chief's pre-trained model.
            pretrained = Path(args.save_dir) / "best_model.keras"
            if not pretrained.is_file():
                raise ExperimentError(
                    f"{pretrained}: this worker needs the chief's pre-trained "
                    "model: put --save_dir on a shared file system"
                )
    for cell, c, start in unfinished_cells(args, targets, save, results, ": fine-tuning"):
        mixed = test_cell(
            Convnet.load_model(str(pretrained)), cell, c.test, save / cell / "mixed", best_mixed
        )
        trained = train_model(
            args,
            c.train,
            c.valid,
            save / cell,
            cell_seed(args, cell),
            start=pretrained,
            epochs=args.finetune_epochs,
            lr=args.finetune_lr,
        )
        best_epoch = trained.best_epoch
        tuned = test_cell(trained.model, cell, c.test, save / cell, best_epoch)
        results.add(
            {
                "cell": cell,
                "auc_mixed": mixed["auc"],
                "auc_finetuned": tuned["auc"],
                "accuracy_mixed": mixed["accuracy"],
                "accuracy_finetuned": tuned["accuracy"],
                "n_test": tuned["n_test"],
                "best_epoch_mixed": best_mixed,
                "best_epoch_finetuned": best_epoch,
                "attempts_mixed": attempts_mixed,
                "attempts_finetuned": trained.attempts,
                "sound_mixed": sound_mixed,
                "sound_finetuned": trained.sound,
                **plan.row_counts(cell),
            }
        )
        print(
            f"Cell {cell}: test AUC mixed {mixed['auc']:.4f}, fine-tuned {tuned['auc']:.4f}, "
            f"best epoch {best_epoch}, {time.time() - start:.0f}s",
            flush=True,
        )


def pretraining_cells(args, cells: list[str]) -> list[str]:
    """The cells whose train and valid splits pre-train the model: all but a held-out one."""
    pool = [c for c in cells if c != args.holdout_cell]
    if not pool:
        raise ExperimentError(f"--holdout_cell {args.holdout_cell} leaves no cell to pre-train on")
    return pool


def saved_models(args, cells: list[str], results: Results):
    """For each unfinished chosen cell, in order: (its number from 1, cell, the --weights model
    file for it, the loaded model, whether the model reads the additional features). One model
    is kept in memory at a time."""
    paths = dict(zip(cells, weights_paths(args, cells)))
    loaded = {}
    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            continue
        STOP.check()
        path = paths[cell]
        if path not in loaded:
            loaded = {path: load_saved_model(path)}
        model = loaded[path]
        yield i, cell, path, model, model.input_shape[1] == data.input_length(True)


def run_weights(args, cells: list[str], save: Path, results: Results) -> None:
    """Test saved model(s) on each chosen cell's test split, without training."""
    for i, cell, path, model, features in saved_models(args, cells, results):
        split = data.load_cell(Path(args.data_dir) / cell, additional_features=features).test
        row = test_cell(model, cell, split, save / cell, None)
        row["sound"] = recorded_soundness(path)
        results.add(row)
        print(f"Cell {i}/{len(cells)}: {cell}: test AUC {row['auc']:.4f} ({path})", flush=True)


def run_predict(args, cells: list[str], save: Path, results: Results) -> None:
    """Predict every gene of each chosen cell with saved model(s), labels or not: per cell,
    predictions.csv over its three splits; the test split's AUC only where it has labels."""
    import Convnet

    for i, cell, path, model, features in saved_models(args, cells, results):
        splits = data.load_cell(
            Path(args.data_dir) / cell, additional_features=features, unlabeled_ok=True
        )
        predicted = {}
        for name in data.SPLITS:
            split = getattr(splits, name)
            predicted[name] = (split, Convnet.predict_proba(model, split.x))
        folder = save / cell
        folder.mkdir(parents=True, exist_ok=True)
        write_cell_predictions(folder, predicted)
        proba = np.concatenate([p for _, p in predicted.values()])
        test, test_proba = predicted["test"]
        auc = Convnet.roc_auc(test.y, test_proba) if test.y is not None else None
        row = {
            "cell": cell,
            "n_genes": len(proba),
            "predicted_high": float(np.mean(proba >= 0.5)),
            "auc": auc,
            "n_test": len(test.ids),
            "model": str(path),
            "sound": recorded_soundness(path),
        }
        results.add(row)
        scored = f", test AUC {auc:.4f}" if auc is not None else " (no labels)"
        print(
            f"Cell {i}/{len(cells)}: {cell}: {len(proba):,} genes predicted, "
            f"{row['predicted_high']:.1%} high{scored} ({path})",
            flush=True,
        )


def recorded_soundness(path: Path) -> bool | None:
    """Whether the saved model `path` was judged sound when it was trained, from the record
    beside it (training.json; a mixed model's trained.json); None when there is none."""
    for name in (TRAINING_RECORD, "trained.json"):
        try:
            found = json.loads((path.parent / name).read_text()).get("sound")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, bool):
            return found
    return None


def weights_paths(args, cells: list[str]) -> list[Path]:
    """The saved model(s) that --weights names for these cells, in cell order: for fine-tuning,
    the one mixed model; otherwise a .keras file for every cell, or a run folder's mixed model,
    or each cell's own model in it."""
    weights = Path(args.weights)
    if args.finetune:
        pretrained = weights if weights.is_file() else weights / "best_model.keras"
        if not pretrained.is_file():
            raise ExperimentError(
                f"{weights}: no best_model.keras (a mixed run's folder, or a "
                ".keras file, is needed to fine-tune from)"
            )
        return [pretrained]
    paths = []
    for cell in cells:
        if weights.is_file():
            paths.append(weights)
            continue
        for candidate in (weights / "best_model.keras", weights / cell / "best_model.keras"):
            if candidate.is_file():
                paths.append(candidate)
                break
        else:
            raise ExperimentError(f"{weights}: no best_model.keras for cell {cell}")
    return paths


def check_weights(args, cells: list[str]) -> None:
    """Load every model --weights names and refuse any that is not this project's network,
    before the save folder is made."""
    for path in dict.fromkeys(weights_paths(args, cells)):
        load_saved_model(path)
    if args.holdout_cell:
        check_held_out(args.holdout_cell, weights_paths(args, cells)[0])


def check_held_out(cell: str, model: Path) -> None:
    """Leave-one-out from a saved model: refuse unless the trained.json beside it shows that
    the held-out cell was not in the model's pool."""
    marker = model.parent / "trained.json"
    try:
        pool = json.loads(marker.read_text()).get("cells")
    except (OSError, ValueError, AttributeError):
        pool = None
    if not isinstance(pool, list):
        raise ExperimentError(
            f"{marker}: no readable record of the cells {model.name} was trained on, so "
            f"leaving {cell} out cannot be checked; pre-train here instead (without --weights)"
        )
    if cell in pool:
        raise ExperimentError(
            f"{marker}: --holdout_cell {cell} was in the pool {model.name} was trained on, so "
            "it is not held out; pre-train without it (leave --weights out)"
        )


def load_saved_model(path: Path):
    """A saved Conv1DNet, its layers checked against the network's variants; any other file or
    model is refused with one line saying what was found."""
    import zipfile

    import Convnet

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise ExperimentError(
            f"{path}: cannot load as a Keras model: "
            f"{'an empty file' if not size else 'not a zip archive, so truncated or damaged'} "
            "(a .keras file is a zip archive)"
        )
    try:
        model = Convnet.load_model(str(path))
    except Exception as e:  # Keras raises many types for a bad or foreign file
        raise ExperimentError(
            f"{path}: cannot load as a Keras model "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None
    if Convnet.variant_of(model) is None:
        found = " > ".join(Convnet.describe_layers(model))
        if len(found) > 160:
            found = found[:157] + "..."
        raise ExperimentError(
            f"{path}: not this project's network (Conv1DNet, any of {', '.join(data.VARIANTS)}); "
            f"its layers: {found}"
        )
    return model
