"""The experiments main.py runs: per-cell, mixed, fine-tuning (and leave-one-out) and saved-model
runs, cell by cell into a results table, and the mixed run's memory check.

Each takes the run (config.Run: the settings, the strategy, the seed, the precision; where only
settings are read, a config.Config does as well). It parses no command line (main.py does, and
turns ExperimentError into exit status 2); the run folder is rundir.py's, the restarts
restarts.py's, the network Convnet.py's, the data data.py's and pooling.py's, the table format
results.py's, the figures utils.py's.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

import config
import data
import distribute
import files
import pooling
import restarts
import rundir
from config import ExperimentError
from results import (
    Results,
    write_cell_predictions,
    write_predictions,
)

PRETRAINING = "pretraining"  # a held-out cell's pre-training, in leave-one-out over several

# Training outputs of the mixed model in the run folder, removed before it is trained again.
MIX_TRAINING_FILES = (
    *restarts.TRAINING_FILES,
    restarts.TRAINING_RECORD,
    "trained.json",
    "attempts",
    "attempts.csv",
)


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


def train_model(
    run, train, valid, folder: Path, seed: int, start=None, epochs=None, lr=None, what=None
) -> restarts.Trained:
    """Train a fresh network (or continue `start`, a model file) into `folder`, with the
    restarts of restarts.train, and return the model to test with its record. ``what`` names
    the model in messages (default: the folder's name, the cell)."""
    import Convnet

    def step(attempt_seed, planned, majority):
        return _train_once(run, train, valid, folder, attempt_seed, start, planned, lr, majority)

    trained = restarts.train(
        step,
        folder,
        seed,
        valid.labels,
        epochs or run.epochs,
        restarts=run.restarts,
        monitor=run.monitor,
        recipe=run.recipe,
        lr=lr or run.lr,
        what=what,
    )
    trained.model = Convnet.load_model(str(folder / "best_model.keras"))
    return trained


def _train_once(run, train, valid, folder: Path, seed, start, epochs, lr, majority):
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
    with distribute.scope(run, run.strategy):
        if start is None:
            model = Convnet.Conv1DNet(train.x.shape[1:], variant=run.variant)
        else:
            model = Convnet.in_current_policy(Convnet.load_model(str(start)))
            if run.freeze_conv:
                for layer in model.layers:
                    layer.trainable = not isinstance(layer, keras.layers.Conv1D)
        # --scale_lr scales the fine-tuning rate as it scales --lr.
        scale = distribute.learning_rate(run, run.strategy) / run.lr
        fit = Convnet.train(
            model,
            (train.x, train.y),
            (valid.x, valid.y),
            str(folder),
            epochs=epochs,
            batch_size=run.batch_size,
            lr=(lr or run.lr) * scale,
            lr_decay=run.lr_decay,
            monitor=run.monitor,
            debug=run.debug,
            seed=seed,
            jit_compile=run.jit,
            callbacks=[rundir.STOP.callback(), *guard],
            warmup=restarts.warmup_steps(run.recipe, len(train.x), run.batch_size),
        )
    plot_log(folder)
    return fit, guard[0].failure if guard else None


def cell_seed(run, cell: str) -> int:
    # A seed per cell: a cell's result depends on the run's seed and the cell alone, not on
    # which other cells the run includes.
    return (run.seed + zlib.crc32(cell.encode())) % 2**31


def unfinished_cells(run, cells: list[str], save: Path, results: Results, doing=""):
    """Yield (cell, its data, start time) for each cell not finished yet; finished ones are
    announced and skipped, and what an interrupted attempt left (its row never reached the
    table) is removed first."""
    import keras

    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            print(f"Cell {i}/{len(cells)}: {cell}: finished earlier, kept", flush=True)
            continue
        rundir.STOP.check()
        print(f"Cell {i}/{len(cells)}: {cell}{doing}", flush=True)
        start = time.time()
        shutil.rmtree(save / cell, ignore_errors=True)
        c = data.load_cell(Path(run.data_dir) / cell, additional_features=run.features)
        rundir.STOP.check()
        keras.backend.clear_session()  # a fresh graph per cell keeps memory flat over 56 cells
        yield cell, c, start


# ---------------------------------------------------------------------------------------------
# The experiments


def run_per_cell(run, cells: list[str], save: Path, results: Results) -> None:
    for cell, c, start in unfinished_cells(run, cells, save, results):
        row = train_and_test(run, cell, c, save / cell)
        results.add(row)  # after every cell: a stopped run keeps what finished
        print(per_cell_line(row, time.time() - start), flush=True)


def train_and_test(run, cell: str, c, folder: Path, _=None) -> dict:
    """One cell of the per-cell experiment, its files written into `folder`: train a model on
    its train split (validated on its valid split), test it on its test split; its row."""
    trained = train_model(run, c.train, c.valid, folder, cell_seed(run, cell))
    row = test_cell(trained.model, cell, c.test, folder, trained.best_epoch)
    row["attempts"] = trained.attempts
    row["sound"] = trained.sound
    return row


def per_cell_line(row: dict, seconds: float) -> str:
    """The console line of a finished cell."""
    tries = f", {row['attempts']} attempts" if row["attempts"] > 1 else ""
    unsound = ", NOT SOUND" if row["sound"] is False else ""
    return (
        f"Cell {row['cell']}: test AUC {row['auc']:.4f}, accuracy {row['accuracy']:.4f}, "
        f"best epoch {row['best_epoch']}{tries}{unsound}, {seconds:.0f}s"
    )


def pool_plan(run, cells: list[str]) -> pooling.Plan:
    """What this pooled run pools and tests (pooling.py): --mix tests every pooled cell on its
    test split; fine-tuning also validates each fine-tuned cell on its valid split, and
    leave-one-out pools every cell but the one it tests."""
    if run.finetune:
        targets = fine_tuned_cells(run, cells)
        pool, splits = pretraining_cells(run, cells), ("valid", "test")
    else:
        targets, pool, splits = cells, cells, ("test",)
    return pooling.plan(
        run.data_dir, pool, targets, splits, run.pooling, run.pool_split, run.features
    )


def load_pool(run, plan: pooling.Plan, tests: bool):
    """The pooled data of a plan, the plan's counts said on the console."""
    mix = pooling.load_data_mix(
        run.data_dir,
        plan.pool,
        seed=run.seed,
        additional_features=run.features,
        tests=tests,
        leave_out=plan.left_out if len(plan.left_out) else None,
        by_gene=plan.split == "gene",
    )
    for line in plan.describe():
        print(line, flush=True)
    return mix


def run_mix(run, cells: list[str], save: Path, results: Results) -> None:
    import Convnet

    todo = [c for c in cells if not results.done(c)]
    if not todo:
        return
    plan = pool_plan(run, cells)
    mix = load_pool(run, plan, tests=True)
    rundir.STOP.check()
    print(
        f"Mixed: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation genes "
        f"pooled from {len(cells)} cells, {split_words(plan, mix)}",
        flush=True,
    )
    best_epoch, attempts, sound = train_mixed(run, mix, save, cells, plan)
    if not run.chief:
        return  # testing involves no other worker: the chief's alone
    model = Convnet.load_model(str(save / "best_model.keras"))
    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            continue
        rundir.STOP.check()
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


def train_mixed(run, mix, save: Path, cells: list[str], plan: pooling.Plan):
    """Train the mixed model into save/best_model.keras unless a resumed run already did;
    return (its best epoch, the attempts it took, whether it is sound). save/trained.json
    records that training finished, on what it trained, and what it left out."""
    marker = save / "trained.json"
    if run.chief_trained:  # a worker: the chief's model is finished
        return None, None, None
    if run.resume and marker.exists() and (save / "best_model.keras").exists():
        trained = json.loads(marker.read_text())
        best_epoch = trained["best_epoch"]
        print(f"Mixed model trained earlier (best epoch {best_epoch}), kept", flush=True)
        return best_epoch, trained.get("attempts"), trained.get("sound")
    for name in MIX_TRAINING_FILES:  # an interrupted training's remains
        path = save / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    trained = train_model(run, mix.train, mix.valid, save, run.seed, what="the mixed model")
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


def check_pools(cfg, cells: list[str], at_once: int = 1) -> None:
    """Before a pooled run starts: refuse a pool that would not fit in memory `at_once` times
    (unless --max_memory 0) or that its held-out pooling leaves too small, for each held-out
    cell's pool in leave-one-out over several."""
    runs = [cfg]
    if leaves_each_out(cfg):
        runs = [holding_out(cfg, cell) for cell in held_out_cells(cfg, cells)]
    if cfg.max_memory != 0:  # the pools differ by one cell: the first stands for them all
        one = runs[0]
        mixed_memory_check(one, pretraining_cells(one, cells) if one.finetune else cells, at_once)
    for one in runs:
        pool_plan(one, cells).check(one.data_dir)


def mixed_memory_check(run, cells: list[str], at_once: int = 1) -> None:
    """Refuse the mixed experiment before loading it when it would not fit in memory, in
    `at_once` processes side by side (leave-one-out on a local Dask cluster)."""
    need = pooling.mixed_bytes(run.data_dir, cells, additional_features=run.features)
    # Training holds the pooled arrays plus TensorFlow's own copy of the batch pipeline's
    # source (measured: about one more copy of the training arrays) and the framework itself.
    need = int(need * 2 + 1.5 * 2**30) * at_once
    limit = run.max_memory * 2**30 if run.max_memory is not None else files.available_memory()
    if limit and need > limit:
        where = "--max_memory" if run.max_memory is not None else "available memory"
        workers = f" for {at_once} workers at once (--workers)" if at_once > 1 else ""
        raise ExperimentError(
            f"the mixed experiment on {len(cells)} cells needs about {need / 2**30:.1f} GiB"
            f"{workers}, more than the {limit / 2**30:.1f} GiB of {where}; choose fewer cells "
            "with --cells, or override with --max_memory GIB (0: no check)"
        )


@dataclasses.dataclass
class Pretrained:
    """The mixed model that fine-tuning starts from: its file, its best epoch, attempts and
    soundness (None where unknown), and the pooling plan whose counts each row reports."""

    path: Path
    best_epoch: int | None
    attempts: int | None
    sound: bool | None
    plan: pooling.Plan


def fine_tuned_cells(run, cells: list[str]) -> list[str]:
    """The cells fine-tuning tests: the held-out cell(s), or every chosen cell."""
    return held_out_cells(run, cells) if run.holdout_cell else cells


def held_out_cells(run, cells: list[str]) -> list[str]:
    """--holdout_cell's cells: one, several (comma-separated, in the given order) or ``all``
    (every chosen cell)."""
    if not run.holdout_cell:
        return []
    if run.holdout_cell == config.ALL_CELLS:
        return list(cells)
    return data.names(run.holdout_cell)


def leaves_each_out(run) -> bool:
    """Whether the run is leave-one-out over several cells (--holdout_cell all, or a list):
    each held-out cell is then a unit of its own, pre-training included, in its own folder.
    One held-out cell keeps the run folder's layout of --finetune (pre-training at its top),
    and so does --weights, whose one model (checked to hold none of them) every cell starts
    from: nothing is pre-trained."""
    return config.several_held_out(run.holdout_cell) and not run.weights


def holding_out(run, cell: str):
    """The run (or configuration) of leaving `cell` out: --holdout_cell that cell alone."""
    if isinstance(run, config.Run):
        return dataclasses.replace(run, config=holding_out(run.config, cell))
    return dataclasses.replace(run, holdout_cell=cell)


def run_finetune(run, cells: list[str], save: Path, results: Results) -> None:
    """Pre-train the mixed model (or take --weights), then per cell: test it, fine-tune it on
    the cell's own train/valid splits, and test the fine-tuned model. With --holdout_cell the
    pre-training pool leaves that cell out and only that cell is fine-tuned; with several
    held-out cells, each is pre-trained for and fine-tuned in turn (leave_out)."""
    targets = fine_tuned_cells(run, cells)
    if all(results.done(c) for c in targets):
        return
    if leaves_each_out(run):
        for cell, c, start in unfinished_cells(run, targets, save, results, ": left out"):
            row = leave_out(run, cell, c, save / cell, cells)
            results.add(row)
            print(finetune_line(row, time.time() - start), flush=True)
        return
    pre = pretrain(run, cells, save)
    for cell, c, start in unfinished_cells(run, targets, save, results, ": fine-tuning"):
        row = finetune_cell(run, cell, c, save / cell, pre)
        results.add(row)
        print(finetune_line(row, time.time() - start), flush=True)


def pretrain(run, cells: list[str], save: Path) -> Pretrained:
    """The mixed model fine-tuning starts from: --weights' model (its record read from the
    trained.json beside it), or one pre-trained here on the pool (unless a resumed run did)."""
    if run.weights:
        (pretrained,) = weights_paths(run, cells)  # checked by check_weights before the run
        marker = pretrained.parent / "trained.json"
        trained = json.loads(marker.read_text()) if marker.exists() else {}
        plan = pooling.of_saved_model(
            run.data_dir, trained, fine_tuned_cells(run, cells), run.features
        )
        for line in plan.describe():
            print(line, flush=True)
        return Pretrained(
            pretrained,
            trained.get("best_epoch"),
            trained.get("attempts"),
            trained.get("sound"),
            plan,
        )
    plan = pool_plan(run, cells)
    mix = load_pool(run, plan, tests=False)
    rundir.STOP.check()
    print(
        f"Pre-training: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation "
        f"genes pooled from {len(plan.pool)} cells, {split_words(plan, mix)}",
        flush=True,
    )
    best, attempts, sound = train_mixed(run, mix, save, plan.pool, plan)
    del mix  # the pooled arrays are not needed for fine-tuning
    pretrained = save / "best_model.keras"
    if run.chief_trained:
        # A worker resuming with the chief: it needs the chief's pre-trained model.
        pretrained = Path(run.save_dir) / "best_model.keras"
        if not pretrained.is_file():
            raise ExperimentError(
                f"{pretrained}: this worker needs the chief's pre-trained "
                "model: put --save_dir on a shared file system"
            )
    return Pretrained(pretrained, best, attempts, sound, plan)


def finetune_cell(run, cell: str, c, folder: Path, pre: Pretrained) -> dict:
    """One cell of fine-tuning, its files written into `folder`: test the mixed model on the
    cell's test split (folder/mixed), fine-tune it on the cell's train/valid splits, test the
    fine-tuned model; its row."""
    import Convnet

    mixed = test_cell(
        Convnet.load_model(str(pre.path)), cell, c.test, folder / "mixed", pre.best_epoch
    )
    trained = train_model(
        run,
        c.train,
        c.valid,
        folder,
        cell_seed(run, cell),
        start=pre.path,
        epochs=run.finetune_epochs,
        lr=run.finetune_lr,
    )
    tuned = test_cell(trained.model, cell, c.test, folder, trained.best_epoch)
    return {
        "cell": cell,
        "auc_mixed": mixed["auc"],
        "auc_finetuned": tuned["auc"],
        "accuracy_mixed": mixed["accuracy"],
        "accuracy_finetuned": tuned["accuracy"],
        "n_test": tuned["n_test"],
        "best_epoch_mixed": pre.best_epoch,
        "best_epoch_finetuned": trained.best_epoch,
        "attempts_mixed": pre.attempts,
        "attempts_finetuned": trained.attempts,
        "sound_mixed": pre.sound,
        "sound_finetuned": trained.sound,
        **pre.plan.row_counts(cell),
    }


def leave_out(run, cell: str, c, folder: Path, cells: list[str]) -> dict:
    """One held-out cell of leave-one-out over several cells, its files written into `folder`:
    pre-train on every other chosen cell into folder/pretraining (or take --weights), then
    fine-tune and test on the cell (finetune_cell); its row. The row is the one a run of
    --holdout_cell with this cell alone and the same seed gives."""
    run = holding_out(run, cell)
    (folder / PRETRAINING).mkdir(parents=True, exist_ok=True)
    pre = pretrain(run, cells, folder / PRETRAINING)
    return finetune_cell(run, cell, c, folder, pre)


def finetune_line(row: dict, seconds: float) -> str:
    """The console line of a fine-tuned cell."""
    return (
        f"Cell {row['cell']}: test AUC mixed {row['auc_mixed']:.4f}, fine-tuned "
        f"{row['auc_finetuned']:.4f}, best epoch {row['best_epoch_finetuned']}, {seconds:.0f}s"
    )


def pretraining_cells(run, cells: list[str]) -> list[str]:
    """The cells whose train and valid splits pre-train the model: all but a held-out one."""
    pool = [c for c in cells if c != run.holdout_cell]
    if not pool:
        raise ExperimentError(f"--holdout_cell {run.holdout_cell} leaves no cell to pre-train on")
    return pool


def saved_models(run, cells: list[str], results: Results):
    """For each unfinished chosen cell, in order: (its number from 1, cell, the --weights model
    file for it, the loaded model, whether the model reads the additional features). One model
    is kept in memory at a time."""
    import Convnet

    paths = dict(zip(cells, weights_paths(run, cells)))
    loaded = {}
    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            continue
        rundir.STOP.check()
        path = paths[cell]
        if path not in loaded:
            loaded = {path: Convnet.load_checked(path)}
        model = loaded[path]
        yield i, cell, path, model, model.input_shape[1] == data.input_length(True)


def run_weights(run, cells: list[str], save: Path, results: Results) -> None:
    """Test saved model(s) on each chosen cell's test split, without training."""
    for i, cell, path, model, features in saved_models(run, cells, results):
        c = unit_data(run, cell, features, "weights")
        row = with_record(test_saved(run, cell, c, save / cell, model), path, "weights")
        results.add(row)
        print(saved_line("weights", i, len(cells), row, path), flush=True)


def run_predict(run, cells: list[str], save: Path, results: Results) -> None:
    """Predict every gene of each chosen cell with saved model(s), labels or not: per cell,
    predictions.csv over its three splits; the test split's AUC only where it has labels."""
    for i, cell, path, model, features in saved_models(run, cells, results):
        c = unit_data(run, cell, features, "predict")
        row = with_record(predict_saved(run, cell, c, save / cell, model), path, "predict")
        results.add(row)
        print(saved_line("predict", i, len(cells), row, path), flush=True)


def unit_data(run, cell: str, features: bool, kind: str):
    """A cell's data as a unit of work of `kind` reads it ("per_cell", "finetune", "weights",
    "predict"): with the additional features or not (a saved model's input says which); only
    --predict takes cells without labels."""
    return data.load_cell(
        Path(run.data_dir) / cell, additional_features=features, unlabeled_ok=kind == "predict"
    )


def test_saved(run, cell: str, c, folder: Path, model) -> dict:
    """One cell's test split tested with a saved model, into `folder`; its row (without the
    model's record: with_record adds it)."""
    return test_cell(model, cell, c.test, folder, None)


def predict_saved(run, cell: str, c, folder: Path, model) -> dict:
    """Every gene of one cell predicted with a saved model, into folder/predictions.csv; its
    row (without the model's record: with_record adds it)."""
    import Convnet

    predicted = {}
    for name in data.SPLITS:
        split = getattr(c, name)
        predicted[name] = (split, Convnet.predict_proba(model, split.x))
    folder.mkdir(parents=True, exist_ok=True)
    write_cell_predictions(folder, predicted)
    proba = np.concatenate([p for _, p in predicted.values()])
    test, test_proba = predicted["test"]
    return {
        "cell": cell,
        "n_genes": len(proba),
        "predicted_high": float(np.mean(proba >= 0.5)),
        "auc": Convnet.roc_auc(test.y, test_proba) if test.y is not None else None,
        "n_test": len(test.ids),
    }


def with_record(row: dict, path: Path, kind: str) -> dict:
    """A saved model's row completed with what is known of the model file `path`: whether it
    was judged sound when trained, and (for --predict) its path."""
    if kind == "predict":
        row["model"] = str(path)
    row["sound"] = recorded_soundness(path)
    return row


def saved_line(kind: str, i: int, n: int, row: dict, path: Path) -> str:
    """The console line of a cell tested (--weights) or predicted (--predict)."""
    if kind == "weights":
        return f"Cell {i}/{n}: {row['cell']}: test AUC {row['auc']:.4f} ({path})"
    scored = f", test AUC {row['auc']:.4f}" if row["auc"] is not None else " (no labels)"
    return (
        f"Cell {i}/{n}: {row['cell']}: {row['n_genes']:,} genes predicted, "
        f"{row['predicted_high']:.1%} high{scored} ({path})"
    )


def recorded_soundness(path: Path) -> bool | None:
    """Whether the saved model `path` was judged sound when it was trained, from the record
    beside it (training.json; a mixed model's trained.json); None when there is none."""
    for name in (restarts.TRAINING_RECORD, "trained.json"):
        try:
            found = json.loads((path.parent / name).read_text()).get("sound")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(found, bool):
            return found
    return None


def weights_paths(run, cells: list[str]) -> list[Path]:
    """The saved model(s) that --weights names for these cells, in cell order: for fine-tuning,
    the one mixed model; otherwise a .keras file for every cell, or a run folder's mixed model,
    or each cell's own model in it."""
    weights = Path(run.weights)
    if run.finetune:
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


def check_weights(run, cells: list[str]) -> None:
    """Load every model --weights names and refuse any that is not this project's network,
    before the save folder is made."""
    import Convnet

    paths = weights_paths(run, cells)
    for path in dict.fromkeys(paths):
        Convnet.load_checked(path)
    for cell in held_out_cells(run, cells):
        check_held_out(cell, paths[0])


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
