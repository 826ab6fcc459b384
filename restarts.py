"""When a training attempt has stalled or collapsed, and which attempt to keep.

The paper's tanh network sometimes dies in its first steps: every unit of dense1 saturates,
the output is one constant probability for every gene and no gradient reaches the layers below
(bench/RESULTS.md, "Stalls"). Sometimes a network that learned falls back to chance. Both are
seen on the validation split after an epoch, so a run can restart that model from a fresh
seed instead of testing a dead one (main.py --restarts). The learning-rate warm-up of the
default recipe (warmup_steps, Convnet.LearningRate) aims at the cause, the size of the first
steps (measured in bench/RESULTS.md, "Stall benchmark, wide cells"); the rule stays as the
safety net, and is the paper recipe's only one.

The rule reads the validation split only, never the test split:

- an epoch **learned** when its val_auc is at least LEARNED: the network ranks the genes,
  even if it still gives every gene one class (its threshold has not moved yet: a ranking
  network's accuracy follows within an epoch or a few);
- **stalled**: none of the first STALL_EPOCHS epochs learned (checked after epoch
  min(STALL_EPOCHS, epochs), so a 1-epoch run is judged after its only epoch);
- **collapsed**: after an epoch that learned, an epoch's val_auc is more than COLLAPSE_DROP
  below the best before it, or back below LEARNED; or, after an epoch that learned and gave
  both classes, ONE_CLASS_EPOCHS epochs in a row give one class (val_accuracy within
  MAJORITY_TOL of either class's rate);
- **one class**: at the end of the planned epochs, no epoch ever gave both classes (a model
  that ranks but calls every gene low, or every gene high, is not one to test).

An attempt that ends in none of these is **sound**. The attempt tested is the best sound one by
the metric that picks the best epoch (--monitor); when every attempt failed, the one that
ranked the validation genes best (its best val_auc) is trained on to the full epochs and
tested, and its row says it is not sound.

The same thresholds define a stalled or collapsed run in the stall benchmarks
(bench/stalls.py, bench/wide_stalls.py), which import them from here. This module imports no
TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

import files
from config import ExperimentError

LEARNED = 0.6  # val_auc at or above it: learned (the network ranks the genes)
MAJORITY_TOL = 0.01  # val_accuracy this close to either class's rate: one class predicted
COLLAPSE_DROP = 0.2  # val_auc this far below its best so far: a collapse
STALL_EPOCHS = 2  # a network that learned in none of its first epochs has stalled
ONE_CLASS_EPOCHS = 2  # one class this many epochs in a row, after both: collapsed
# Below this many validation genes the rule is off: with 500 genes in two equal classes a
# chance AUC has a standard deviation of about 0.026, so 0.6 sits four of them above chance;
# on the tiny sample data a slow first epoch and a dead network look alike.
MIN_VALID_GENES = 500
# About 1 attempt in 5 fails, in float32 and bfloat16 alike, so 3 attempts all fail about 0.8% of
# the time and 5 about 0.03% (bench/RESULTS.md, "bfloat16, second measurement").
DEFAULT_RESTARTS = 4
EPS = 1e-9  # a difference of exactly the threshold, as written, is not "more than" it


# The training recipes (main.py --recipe): the default warms the learning rate up over the first
# epoch (Convnet.LearningRate), the paper's starts at the full rate.
RECIPES = ("default", "paper")


def warmup_steps(recipe: str, n_train: int, batch_size: int) -> int:
    """How many first training steps the learning rate warms up over: one epoch's steps
    (ceil(n_train / batch_size)) in the default recipe, none in the paper's."""
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    return 0 if recipe == "paper" else math.ceil(n_train / batch_size)


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` (1-based) of a model whose own seed is ``seed``: the
    first attempt is the plain run, bit for bit; later ones get seeds derived from it, so a
    seeded run with restarts is reproducible."""
    if attempt == 1:
        return seed
    return (seed + zlib.crc32(f"attempt {attempt}".encode())) % 2**31


def majority_rate(labels) -> float:
    """The fraction of the validation split's more frequent class."""
    share = float(np.mean(np.asarray(labels)))
    return max(share, 1 - share)


def guard_applies(labels) -> str | None:
    """None when the rule can judge training on this validation split; else why not."""
    labels = np.asarray(labels)
    if len(labels) < MIN_VALID_GENES:
        return (
            f"the validation split has {len(labels)} genes, fewer than the {MIN_VALID_GENES} "
            "it takes to tell a stalled network from a slow one"
        )
    if labels.min() == labels.max():
        return "the validation split holds one class, so its AUC is undefined"
    return None


@dataclasses.dataclass
class Failure:
    kind: str  # "stalled" or "collapsed"
    epoch: int  # 1-based epoch after which it was seen
    why: str  # one clause for the console and attempts.csv


def one_class(val_accuracy, majority: float) -> np.ndarray:
    """Per epoch: is val_accuracy within MAJORITY_TOL of the rate of either class, as when every
    gene is given the majority class or every gene the minority one? (On a nearly balanced
    split the two rates are close, and a network predicting the minority class for all genes
    sits just beyond MAJORITY_TOL of the majority's rate.)"""
    acc = np.asarray(val_accuracy, dtype=np.float64)
    off = np.minimum(np.abs(acc - majority), np.abs(acc - (1 - majority)))
    return off <= MAJORITY_TOL + EPS


def learned(val_auc) -> np.ndarray:
    """Per epoch: did it learn, i.e. rank the validation genes (val_auc >= LEARNED)? NaN never
    counts as learned."""
    auc = np.asarray(val_auc, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return auc >= LEARNED


def failure(val_auc, val_accuracy, majority: float, epochs: int) -> Failure | None:
    """The verdict after the last epoch of the lists (one value per epoch so far), for a
    training planned to last ``epochs`` epochs; None while the attempt is sound (see the module
    docstring for the rule)."""
    auc = np.asarray(val_auc, dtype=np.float64)
    done = len(auc)
    if done == 0:
        return None
    last, acc = auc[-1], float(val_accuracy[-1])
    ranked = learned(auc)
    single = one_class(val_accuracy, majority)
    if done > 1 and not np.all(np.isnan(auc[:-1])):
        best = float(np.nanmax(auc[:-1]))
        if best - last > COLLAPSE_DROP + EPS:
            return Failure(
                "collapsed",
                done,
                f"val AUC fell to {last:.3f} at epoch {done}, from {best:.3f} earlier",
            )
        if ranked[:-1].any() and not ranked[-1] and not np.isnan(last):
            return Failure(
                "collapsed",
                done,
                f"val AUC fell back to {last:.3f} at epoch {done}, below {LEARNED} after "
                f"reaching {best:.3f}",
            )
        both = np.flatnonzero(ranked[:-ONE_CLASS_EPOCHS] & ~single[:-ONE_CLASS_EPOCHS])
        if len(both) and single[-ONE_CLASS_EPOCHS:].all():
            return Failure(
                "collapsed",
                done,
                f"one class predicted in epochs {done - ONE_CLASS_EPOCHS + 1} to {done} (val "
                f"accuracy {acc:.3f} against a majority-class rate of {majority:.3f}), after "
                f"both classes at epoch {both[0] + 1}",
            )
    check = min(STALL_EPOCHS, epochs)
    if done == check and not ranked.any():
        return Failure(
            "stalled",
            done,
            f"no epoch of the first {done} learned (epoch {done}: val AUC {last:.3f} against "
            f"{LEARNED} to count as learned)",
        )
    if done == epochs and single.all():
        return Failure(
            "one class",
            done,
            f"one class predicted in all {done} epochs (last: val accuracy {acc:.3f} against a "
            f"majority-class rate of {majority:.3f}, val AUC {last:.3f})",
        )
    return None


@dataclasses.dataclass
class Attempt:
    """One training of a model: its seed, how it ended and what it kept."""

    number: int  # 1-based
    seed: int
    epochs: int  # epochs trained
    best_epoch: int | None  # 1-based epoch of its best model; None: no model kept
    best_value: float  # the monitored metric at best_epoch (NaN when none)
    best_val_auc: float  # the val_auc at best_epoch
    outcome: str  # "learned", "stalled", "collapsed", "one class" or "diverged"
    why: str = ""
    folder: str = "."  # where its files are, relative to the model's folder
    top_val_auc: float = math.nan  # the largest val_auc of any epoch: how well it ranked
    trained_on: bool = False  # every attempt failed, and this one was trained on to the end

    @property
    def failed(self) -> bool:
        return self.outcome != "learned"


def best_of(history: dict, best_epoch: int | None, monitor: str) -> tuple[float, float]:
    """(the monitored metric, val_auc) at best_epoch; NaN where there is none."""
    if best_epoch is None:
        return math.nan, math.nan

    def at(key):
        values = history.get(key, [])
        return float(values[best_epoch - 1]) if len(values) >= best_epoch else math.nan

    return at(monitor), at("val_auc")


def top_val_auc(history: dict) -> float:
    """The largest val_auc of any epoch (NaN when none is defined)."""
    values = np.asarray(history.get("val_auc", []), dtype=np.float64)
    return math.nan if np.all(np.isnan(values)) else float(np.nanmax(values))


def choose(attempts: list[Attempt], monitor: str) -> Attempt | None:
    """The attempt to test, judged on the validation split alone.

    A sound attempt (outcome "learned") before any that failed; among sound ones, the best model
    by ``monitor`` (the metric that already picks the best epoch), maximised or, for a loss,
    minimised. When every attempt failed, the one that ranked the validation genes best (its
    largest val_auc over its epochs): a failed attempt's best epoch by val_accuracy is often a
    tie between networks that all give one class, which says nothing of how well they rank.
    Ties go to the earlier attempt; a NaN value loses to any other; None when no attempt kept a
    model."""
    kept = [a for a in attempts if a.best_epoch is not None]
    if not kept:
        return None
    sound = [a for a in kept if not a.failed]
    sign = 1 if monitor.endswith("loss") else -1

    def key(value, a):
        nan = math.isnan(value)
        return (nan, 0 if nan else value, a.number)

    if sound:
        return min(sound, key=lambda a: key(sign * a.best_value, a))
    return min(kept, key=lambda a: key(-a.top_val_auc, a))


ATTEMPT_COLUMNS = [
    "attempt",
    "seed",
    "epochs",
    "outcome",
    "best_epoch",
    "best_value",
    "best_val_auc",
    "top_val_auc",
    "chosen",
    "trained_on",
    "folder",
    "why",
]


def attempt_rows(attempts: list[Attempt], chosen: Attempt | None) -> list[dict]:
    """attempts.csv's rows, one per attempt."""
    return [
        {
            "attempt": a.number,
            "seed": a.seed,
            "epochs": a.epochs,
            "outcome": a.outcome,
            "best_epoch": a.best_epoch,
            "best_value": a.best_value,
            "best_val_auc": a.best_val_auc,
            "top_val_auc": a.top_val_auc,
            "chosen": a is chosen,
            "trained_on": a.trained_on,
            "folder": a.folder,
            "why": a.why,
        }
        for a in attempts
    ]


def verdict(val_auc, val_accuracy, majority: float, epochs: int) -> Failure | None:
    """The first failure the rule finds when replayed epoch by epoch over a finished training's
    log, as the guard would have seen it; None when it never fires."""
    for done in range(1, len(val_auc) + 1):
        found = failure(val_auc[:done], val_accuracy[:done], majority, epochs)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# The attempt loop: the training step is passed in, so this module imports no TensorFlow

# A training's files in its model's folder; an attempt replaced by a restart keeps them in
# <folder>/attempts/<n>/.
TRAINING_FILES = ("log.csv", "log.png", "best_model.keras", "final_model.keras", "tensorboard")
# The record of a trained model, in its folder: recipe, attempts, best epoch and soundness.
TRAINING_RECORD = "training.json"

_SAID = set()


@dataclasses.dataclass
class Trained:
    """What train returns: the best epoch (1-based) of the model kept in the folder, how many
    attempts it took (1 without a restart), and whether it is sound (it learned and did not
    collapse; None where the rule cannot judge, on a small or one-class validation split);
    the caller loads the model."""

    best_epoch: int | None
    attempts: int
    sound: bool | None = None
    model: object = None


def train(
    step, folder: Path, seed: int, valid_labels, epochs: int, *, restarts, monitor, recipe, lr,
    what=None,
) -> Trained:  # fmt: skip
    """Train a model into `folder` by ``step(seed, epochs, majority)``, one attempt, which
    returns (the fit: its history, best_epoch and diverged_epoch; the guard's Failure or None):
    with ``majority`` (the validation split's majority-class rate) a guard judges every epoch
    and stops the attempt at the first failure; with None it is never stopped.

    Every training is judged on its validation split when the split is large enough. With
    ``restarts`` N, an attempt that stalled or collapsed is stopped and trained again from a
    fresh seed, up to N times; each replaced attempt's files move to folder/attempts/<n>/,
    attempts.csv lists them all, and the attempt kept is the best sound one by the validation
    metric ``monitor``: its files are the ones in `folder`. When every attempt failed, the one
    that ranked the validation genes best is trained again from its seed to the full epochs,
    without stopping, and tested as not sound. A training that diverges (NaN or infinite loss)
    stops at once and counts as failed too; ExperimentError is raised when no attempt kept a
    model (``lr``, the rate trained with, is named in its message). ``what`` names the model
    in messages (default: the folder's name, the cell). folder/training.json records the
    outcome and ``recipe``."""
    what = what or folder.name
    planned = epochs
    off = guard_applies(valid_labels)
    if restarts and off and off not in _SAID:
        _SAID.add(off)  # once per run, not once per cell
        print(f"No restarts: {off}", flush=True)
    majority = None if off else majority_rate(valid_labels)
    stop = majority is not None and restarts > 0
    shutil.rmtree(folder / "attempts", ignore_errors=True)
    (folder / "attempts.csv").unlink(missing_ok=True)
    attempts = []
    total = restarts + 1 if stop else 1
    for number in range(1, total + 1):
        seed_n = attempt_seed(seed, number)
        fit, seen = step(seed_n, planned, majority if stop else None)
        judge = "guard" if stop else "replay" if majority is not None else None
        attempt = _attempt(number, seed_n, fit, seen, judge, monitor, majority, planned)
        attempts.append(attempt)
        if not attempt.failed:
            break
        if number < total:
            attempt.folder = f"attempts/{number}"
            _move_training(folder, folder / attempt.folder)
            print(
                f"{what}: attempt {number} of {total} {attempt.outcome}: {attempt.why}; "
                f"restarting from seed {attempt_seed(seed, number + 1)} (attempt "
                f"{number + 1}); attempt {number}'s log is in {folder / attempt.folder}",
                flush=True,
            )
    chosen = choose(attempts, monitor)
    if chosen is not None and chosen is not attempts[-1]:
        # An earlier attempt wins: its files take the folder, the last one's move aside.
        _bring_back(folder, chosen, attempts[-1])
    if chosen is not None and chosen.failed and chosen.outcome != "diverged":
        if chosen.epochs < planned:
            chosen = _train_on(step, folder, attempts, chosen, planned, monitor)
    if len(attempts) > 1:
        files.write_csv(
            folder / "attempts.csv",
            pd.DataFrame(attempt_rows(attempts, chosen), columns=ATTEMPT_COLUMNS),
        )
    _report(what, folder, attempts, chosen, lr, monitor)
    # A diverged model is never sound; otherwise the rule's verdict, where it can judge.
    sound = (
        False if chosen.outcome == "diverged" else None if majority is None else not chosen.failed
    )
    files.write_json(
        folder / TRAINING_RECORD,
        {
            "recipe": recipe,
            "attempts": len(attempts),
            "best_epoch": chosen.best_epoch,
            "outcome": chosen.outcome,
            "sound": sound,
        },
    )
    return Trained(chosen.best_epoch, len(attempts), sound)


def _attempt(number, seed, fit, seen, judge, monitor, majority, planned) -> Attempt:
    """One finished attempt, judged: with judge "guard", by the verdict `seen` of the guard that
    watched every epoch (and stopped the training there); with "replay", by the rule replayed
    over its log (--restarts 0: judged, never stopped); with None, not at all (the rule cannot
    judge this validation split): "learned"."""
    value, val_auc = best_of(fit.history, fit.best_epoch, monitor)
    attempt = Attempt(
        number,
        seed,
        len(fit.history.get("loss", [])),
        fit.best_epoch,
        value,
        val_auc,
        "learned",
        top_val_auc=top_val_auc(fit.history),
    )
    if fit.diverged_epoch is not None:
        loss = fit.history["loss"][fit.diverged_epoch - 1]
        attempt.outcome = "diverged"
        attempt.why = f"training diverged at epoch {fit.diverged_epoch} (loss {loss:g})"
    elif judge == "guard" and seen is not None:
        attempt.outcome, attempt.why = seen.kind, seen.why
    elif judge == "replay":
        found = verdict(
            fit.history.get("val_auc", []), fit.history.get("val_accuracy", []), majority, planned
        )
        if found is not None:
            attempt.outcome, attempt.why = found.kind, found.why
    return attempt


def _train_on(step, folder, attempts, chosen, planned, monitor):
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
    fit, _ = step(chosen.seed, planned, None)
    on = _attempt(len(attempts) + 1, chosen.seed, fit, None, None, monitor, None, planned)
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


def _move_training(source: Path, target: Path) -> None:
    """Move one training's files (TRAINING_FILES) from `source` to the folder `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TRAINING_FILES:
        if (source / name).exists():
            shutil.rmtree(target / name, ignore_errors=True)
            os.replace(source / name, target / name)


def _report(what, folder, attempts, chosen, lr, monitor) -> None:
    """Say which attempt is tested, and warn when it is not a sound one."""
    if chosen is None:
        last = attempts[-1]
        raise ExperimentError(
            f"{what}: {last.why} before any epoch could be kept, so there is no model to test "
            f"(see {folder / 'log.png'}); lower the learning rate ({lr:g})"
        )
    if len(attempts) > 1:
        others = ", ".join(
            f"attempt {a.number}: {a.best_value:.4f}" for a in attempts if a is not chosen
        )
        print(
            f"{what}: attempt {chosen.number} of {len(attempts)} is tested (best {monitor} "
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
