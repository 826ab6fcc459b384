"""When a training attempt has stalled or collapsed, and which attempt to keep.

The paper's tanh network sometimes dies in its first steps: every unit of dense1 saturates,
the output is one constant probability for every gene and no gradient reaches the layers below
(bench/RESULTS.md, "Stalls"). Sometimes a network that learned falls back to chance. Both are
seen on the validation split after an epoch, so a run can restart that model from a fresh
seed instead of testing a dead one (main.py --restarts).

The rule reads the validation split only, never the test split:

- an epoch **learned** when its val_auc is at least LEARNED and its val_accuracy is more than
  MAJORITY_TOL away from the rate of either class in the validation split (a network that
  gives every gene one class, the majority's or the minority's, can still rank genes a little
  above chance);
- **stalled**: none of the first STALL_EPOCHS epochs learned (checked after epoch
  min(STALL_EPOCHS, epochs), so a 1-epoch run is judged after its only epoch);
- **collapsed**: an epoch's val_auc is more than COLLAPSE_DROP below the best val_auc of the
  epochs before it.

The same thresholds define a stalled or collapsed run in the stall benchmark
(bench/stalls.py), which imports them from here. This module imports no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

LEARNED = 0.6  # val_auc at or above it, with an accuracy beyond one class: learned
MAJORITY_TOL = 0.01  # val_accuracy this close to either class's rate: one class predicted
COLLAPSE_DROP = 0.2  # val_auc this far below its best so far: a collapse
STALL_EPOCHS = 2  # a network that learned in none of its first epochs has stalled
# Below this many validation genes the rule is off: with 500 genes in two equal classes a
# chance AUC has a standard deviation of about 0.026, so 0.6 sits four of them above chance;
# on the tiny sample data a slow first epoch and a dead network look alike.
MIN_VALID_GENES = 500
# About 1 attempt in 5 fails, in float32 and bfloat16 alike, so 3 attempts all fail about 0.8% of
# the time and 5 about 0.03% (bench/RESULTS.md, "bfloat16, second measurement").
DEFAULT_RESTARTS = 4
EPS = 1e-9  # a difference of exactly the threshold, as written, is not "more than" it


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


def learned(val_auc, val_accuracy, majority: float) -> np.ndarray:
    """Per epoch: did it learn (see the module docstring)? NaN never counts as learned."""
    auc = np.asarray(val_auc, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (auc >= LEARNED) & ~one_class(val_accuracy, majority)


def failure(val_auc, val_accuracy, majority: float, epochs: int) -> Failure | None:
    """The verdict after the last epoch of the lists (one value per epoch so far), for a
    training planned to last ``epochs`` epochs; None while the attempt is sound."""
    auc = np.asarray(val_auc, dtype=np.float64)
    done = len(auc)
    if done == 0:
        return None
    last, acc = auc[-1], float(val_accuracy[-1])
    if done > 1 and not np.all(np.isnan(auc[:-1])):
        best = float(np.nanmax(auc[:-1]))
        if best - last > COLLAPSE_DROP + EPS:
            return Failure(
                "collapsed",
                done,
                f"val AUC fell to {last:.3f} at epoch {done}, from {best:.3f} earlier",
            )
    check = min(STALL_EPOCHS, epochs)
    if done == check and not learned(auc, val_accuracy, majority).any():
        return Failure(
            "stalled",
            done,
            f"no epoch of the first {done} learned (epoch {done}: val AUC {last:.3f}, val "
            f"accuracy {acc:.3f} against a majority-class rate of {majority:.3f})",
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
    outcome: str  # "learned", "stalled", "collapsed" or "diverged"
    why: str = ""
    folder: str = "."  # where its files are, relative to the model's folder

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


def choose(attempts: list[Attempt], monitor: str) -> Attempt | None:
    """The attempt to test, judged on the validation split alone: an attempt that trained
    soundly (outcome "learned") before any that stalled, collapsed or diverged (a collapsed
    one's best epoch came before its fall, but its training was unstable); among those, the
    best model by ``monitor`` (the metric that already picks the best epoch), maximised or, for
    a loss, minimised; ties go to the earlier attempt. A model with a NaN value loses to any
    other; None when no attempt kept a model."""
    kept = [a for a in attempts if a.best_epoch is not None]
    if not kept:
        return None
    sign = 1 if monitor.endswith("loss") else -1

    def key(a):
        value = a.best_value
        nan = math.isnan(value)
        return (a.failed, nan, 0 if nan else sign * value, a.number)

    return min(kept, key=key)


ATTEMPT_COLUMNS = [
    "attempt",
    "seed",
    "epochs",
    "outcome",
    "best_epoch",
    "best_value",
    "best_val_auc",
    "chosen",
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
            "chosen": a is chosen,
            "folder": a.folder,
            "why": a.why,
        }
        for a in attempts
    ]
