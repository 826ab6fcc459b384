"""Restarts of a stalled or collapsed training (restarts.py: the rule and the attempt loop).

The rule is checked on made-up validation curves; the attempts' bookkeeping (which attempt is
tested, where each one's files go, attempts.csv) with a fake training; and main.py end to end
on tiny data with a stall forced on the first attempt, against --restarts 0.
"""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import restarts
from conftest import ROOT

# ---------------------------------------------------------------------------------------------
# The rule


def verdicts(val_auc, val_accuracy, epochs=20, majority=0.5):
    """restarts.failure after each epoch, as the callback calls it."""
    return [
        restarts.failure(val_auc[: e + 1], val_accuracy[: e + 1], majority, epochs)
        for e in range(len(val_auc))
    ]


def test_a_network_that_learns_is_never_stopped():
    auc = [0.55, 0.81, 0.84, 0.85, 0.86]
    acc = [0.52, 0.74, 0.76, 0.77, 0.78]
    assert verdicts(auc, acc) == [None] * 5


def test_a_stall_is_seen_after_the_second_epoch():
    (first, second) = verdicts([0.52, 0.55], [0.56, 0.57])
    assert first is None
    assert second.kind == "stalled" and second.epoch == 2
    assert "0.550" in second.why and str(restarts.LEARNED) in second.why
    # A dead network giving every gene one class, at chance, is stalled too.
    assert verdicts([0.50, 0.50], [0.50, 0.50])[1].kind == "stalled"
    # Learning in the second epoch is in time.
    assert verdicts([0.50, 0.70], [0.50, 0.64]) == [None, None]


def test_a_network_that_ranks_but_gives_one_class_is_not_stalled():
    # Seen on a 2,000-gene cell: val AUC 0.74-0.79 while every gene got the majority class
    # (val accuracy = its rate, 0.508); its threshold moved in the third epoch.
    out = verdicts([0.74, 0.79, 0.80, 0.81], [0.508, 0.508, 0.70, 0.72], majority=0.508)
    assert out == [None] * 4
    # Every gene given the minority class, ranking well: not stalled either.
    assert verdicts([0.70, 0.72], [0.4936, 0.4936], majority=0.5064) == [None, None]


def test_one_class_in_every_planned_epoch_is_judged_at_the_end():
    out = verdicts([0.70, 0.75, 0.78], [0.5, 0.5, 0.505], epochs=3)
    assert out[:2] == [None, None]
    assert out[2].kind == "one class" and out[2].epoch == 3 and "all 3 epochs" in out[2].why
    # One epoch with both classes is enough.
    assert verdicts([0.70, 0.75, 0.78], [0.5, 0.6, 0.505], epochs=3) == [None] * 3


def test_the_majority_rate_is_the_validation_splits():
    # 0.70 accuracy is one class when 70% of the validation genes are of one class.
    assert restarts.one_class([0.70, 0.75], 0.7).tolist() == [True, False]
    assert restarts.one_class([0.70], 0.5).tolist() == [False]
    # Every gene given the minority class: accuracy is the minority's rate, 0.4936 on a split
    # of 50.64% low genes, 0.0128 from the majority's rate.
    assert restarts.one_class([0.4936, 0.52], 0.5064).tolist() == [True, False]
    assert restarts.majority_rate([1, 1, 1, 0]) == 0.75
    assert restarts.majority_rate([0, 0, 0, 1]) == 0.75


def test_a_learner_that_falls_back_to_chance_has_collapsed():
    # Back below LEARNED after reaching it, though by less than COLLAPSE_DROP.
    out = verdicts([0.68, 0.66, 0.58], [0.60, 0.59, 0.55])
    assert out[:2] == [None, None]
    assert out[2].kind == "collapsed" and "fell back to 0.580" in out[2].why
    # One class for ONE_CLASS_EPOCHS epochs in a row after giving both classes.
    out = verdicts([0.80, 0.78, 0.77, 0.76], [0.70, 0.50, 0.50, 0.50])
    assert out[:2] == [None, None]
    assert out[2].kind == "collapsed" and out[2].epoch == 3
    assert "epochs 2 to 3" in out[2].why and "both classes at epoch 1" in out[2].why
    # One class before it ever gave both is not a collapse (it ranks, and may yet move).
    assert verdicts([0.70, 0.75, 0.78], [0.5, 0.5, 0.5]) == [None] * 3


def test_a_collapse_is_a_fall_of_more_than_the_threshold():
    out = verdicts([0.80, 0.85, 0.66, 0.40], [0.7, 0.75, 0.6, 0.5])
    assert out[:2] == [None, None]
    assert out[2] is None  # 0.19 below the best: not yet
    assert out[3].kind == "collapsed" and out[3].epoch == 4
    assert "0.400" in out[3].why and "0.850" in out[3].why
    # Exactly the threshold, as floats write it, is not more than it.
    best = 0.85
    assert verdicts([best, best - restarts.COLLAPSE_DROP], [0.7, 0.6]) == [None, None]


def test_nan_never_counts_as_learned_and_never_collapses():
    out = verdicts([math.nan, math.nan], [0.5, 0.5])
    assert out[0] is None and out[1].kind == "stalled"
    assert verdicts([0.8, math.nan, 0.79], [0.7, 0.7, 0.7]) == [None, None, None]


def test_the_guard_needs_a_validation_split_it_can_judge():
    assert restarts.guard_applies(np.r_[np.zeros(300), np.ones(300)]) is None
    assert "fewer than the 500" in restarts.guard_applies(np.r_[np.zeros(100), np.ones(100)])
    assert "one class" in restarts.guard_applies(np.ones(600))


def test_attempt_seeds_start_with_the_plain_runs_own_and_are_fixed():
    assert restarts.attempt_seed(1234, 1) == 1234
    seeds = [restarts.attempt_seed(1234, n) for n in range(1, 5)]
    assert len(set(seeds)) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert seeds == [restarts.attempt_seed(1234, n) for n in range(1, 5)]
    assert restarts.attempt_seed(2**31 - 1, 3) < 2**31


def attempt(number, value, outcome="learned", best_epoch=3, top=None):
    top = value if top is None else top
    return restarts.Attempt(number, number, 5, best_epoch, value, value, outcome, top_val_auc=top)


def test_choice_prefers_sound_attempts_then_the_validation_metric():
    a, b, c = attempt(1, 0.80, "collapsed"), attempt(2, 0.70), attempt(3, 0.75)
    assert restarts.choose([a, b, c], "val_accuracy") is c
    assert restarts.choose([a, b], "val_accuracy") is b  # sound beats a better collapsed one
    assert restarts.choose([attempt(1, 0.7), attempt(2, 0.7)], "val_accuracy").number == 1
    assert restarts.choose([attempt(1, 0.3), attempt(2, 0.2)], "val_loss").number == 2
    # Without a model (diverged before any epoch was kept) an attempt cannot be chosen.
    f = attempt(1, math.nan, "diverged", best_epoch=None)
    assert restarts.choose([f], "val_accuracy") is None
    assert restarts.choose([f, attempt(2, math.nan, "stalled")], "val_accuracy").number == 2


def test_when_every_attempt_failed_the_choice_is_by_val_auc():
    # The 2,000-gene cell: five attempts tied on val_accuracy (every gene one class); the tie
    # went to attempt 1 (val AUC 0.500), though attempt 3 ranked at 0.786.
    tied = [
        attempt(n, 0.508, "stalled", top=top)
        for n, top in enumerate([0.500, 0.738, 0.786, 0.55, 0.782], 1)
    ]
    assert restarts.choose(tied, "val_accuracy").number == 3
    assert restarts.choose(tied, "val_loss").number == 3
    # A NaN AUC loses; ties go to the earlier attempt.
    nan = attempt(1, 0.6, "stalled", top=math.nan)
    assert (
        restarts.choose([nan, attempt(2, 0.5, "collapsed", top=0.52)], "val_accuracy").number == 2
    )
    same = [attempt(1, 0.5, "stalled", top=0.7), attempt(2, 0.6, "stalled", top=0.7)]
    assert restarts.choose(same, "val_accuracy").number == 1


# ---------------------------------------------------------------------------------------------
# The attempts' bookkeeping, with a fake training (no TensorFlow training)


def fake_training(script, folder):
    """A stand-in for the training step restarts.train is given (experiments._train_once in a
    run): attempt n writes files naming its seed and returns script[n - 1] = (val_accuracy per
    epoch, best epoch or None, Failure or None)."""
    import Convnet

    calls = []

    def step(seed, epochs, majority):
        val_acc, best, failure = script[len(calls)]
        calls.append((seed, majority))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "log.csv").write_text(f"seed {seed}\n")
        (folder / "log.png").write_text(f"seed {seed}\n")
        if best is not None:
            (folder / "best_model.keras").write_text(f"seed {seed}\n")
        history = {
            "loss": [0.5] * len(val_acc),
            "val_accuracy": val_acc,
            "val_auc": [v + 0.1 for v in val_acc],
        }
        diverged = len(val_acc) if failure == "diverged" else None
        if diverged:
            history["loss"][-1] = math.nan
            failure = None
        result = Convnet.TrainResult(history, best, "", "", diverged)
        return result, failure

    return step, calls


def fake_split(n=600):
    return np.arange(n) % 2


@pytest.fixture
def fake_run():
    def go(script, folder, restarts_=2, labels=None):
        step, calls = fake_training(script, folder)
        trained = restarts.train(
            step,
            folder,
            11,
            fake_split() if labels is None else labels,
            5,
            restarts=restarts_,
            monitor="val_accuracy",
            recipe="default",
            lr=0.001,
        )
        # The model tested: the caller loads the folder's best_model.keras.
        trained.model = (folder / "best_model.keras").read_text()
        return trained, calls

    return go


def stalled(epoch=2):
    return restarts.Failure("stalled", epoch, "made up")


def collapsed(epoch):
    return restarts.Failure("collapsed", epoch, "made up")


def test_a_restart_moves_the_failed_attempt_aside(fake_run, tmp_path, capsys):
    folder = tmp_path / "S001"
    trained, calls = fake_run([([0.5, 0.5], 1, stalled()), ([0.6, 0.7, 0.8], 3, None)], folder)
    seeds = [restarts.attempt_seed(11, n) for n in (1, 2)]
    assert [s for s, _ in calls] == seeds
    assert calls[0][1] == 0.5  # the validation split's majority-class rate
    assert (trained.best_epoch, trained.attempts) == (3, 2)
    assert trained.model == f"seed {seeds[1]}\n"  # the chosen attempt's best model
    assert (folder / "log.csv").read_text() == f"seed {seeds[1]}\n"
    assert (folder / "attempts" / "1" / "log.csv").read_text() == f"seed {seeds[0]}\n"
    assert (folder / "attempts" / "1" / "best_model.keras").exists()
    table = pd.read_csv(folder / "attempts.csv", keep_default_na=False)
    assert table.columns.tolist() == restarts.ATTEMPT_COLUMNS
    assert table.seed.tolist() == seeds
    assert table.outcome.tolist() == ["stalled", "learned"]
    assert table.chosen.tolist() == [False, True]
    assert table.folder.tolist() == ["attempts/1", "."]
    assert table.best_value.tolist() == [0.5, 0.8]
    out = capsys.readouterr().out
    assert f"S001: attempt 1 of 3 stalled: made up; restarting from seed {seeds[1]}" in out
    assert "S001: attempt 2 of 2 is tested (best val_accuracy 0.8000 at epoch 3" in out


def test_when_every_attempt_fails_the_best_ranked_is_trained_on_and_not_sound(
    fake_run, tmp_path, capsys
):
    folder = tmp_path / "S001"
    script = [
        ([0.70, 0.60, 0.40], 1, collapsed(3)),  # val AUC up to 0.80
        ([0.50, 0.50], 1, stalled()),  # the best by val_accuracy: 0.5 is a tie, but top AUC 0.6
        ([0.60], None, "diverged"),  # diverged before any epoch was kept
        ([0.70, 0.72, 0.74, 0.75, 0.73], 4, None),  # attempt 1 again, to all 5 epochs
    ]
    trained, calls = fake_run(script, folder)
    seeds = [s for s, _ in calls]
    assert seeds[3] == seeds[0]  # trained again from attempt 1's seed
    assert calls[3][1] is None  # with no guard: never stopped
    assert (trained.best_epoch, trained.attempts, trained.sound) == (4, 4, False)
    assert trained.model == f"seed {seeds[0]}\n"
    for n in (1, 2, 3):
        assert (folder / "attempts" / str(n) / "log.csv").read_text() == f"seed {seeds[n - 1]}\n"
    table = pd.read_csv(folder / "attempts.csv", keep_default_na=False)
    assert table.outcome.tolist() == ["collapsed", "stalled", "diverged", "trained on"]
    assert table.chosen.tolist() == [False, False, False, True]
    assert table.trained_on.tolist() == [False, False, False, True]
    assert table.epochs.tolist() == [3, 2, 1, 5]
    assert table.folder.tolist() == ["attempts/1", "attempts/2", "attempts/3", "."]
    record = json.loads((folder / "training.json").read_text())
    assert record["sound"] is False and record["outcome"] == "trained on"
    err = capsys.readouterr().err
    assert "S001: not sound: all 3 attempts failed" in err and "attempt 1 (collapsed)" in err
    assert "test" not in err.split("not sound")[1].split(";")[0]  # read from validation only


def test_a_failed_attempt_already_at_full_length_is_not_trained_again(fake_run, tmp_path):
    # --restarts 0: judged by the rule replayed over the log, never stopped, never restarted.
    trained, calls = fake_run([([0.50, 0.50, 0.5, 0.5, 0.5], 1, None)], tmp_path / "a", 0)
    assert len(calls) == 1 and calls[0][1] is None
    # val AUC 0.6 ranks (not stalled), but one class in all 5 epochs
    assert (trained.attempts, trained.sound) == (1, False)
    assert json.loads((tmp_path / "a" / "training.json").read_text())["outcome"] == "one class"


def test_no_attempt_with_a_model_is_an_experiment_error(fake_run, tmp_path):
    import config

    script = [([0.5], None, "diverged")] * 3
    with pytest.raises(config.ExperimentError, match="before any epoch could be kept"):
        fake_run(script, tmp_path / "S001")


def test_restarts_0_and_a_small_validation_split_train_once(fake_run, tmp_path, capsys):
    restarts._SAID.clear()
    trained, calls = fake_run([([0.5, 0.7], 2, None)], tmp_path / "a", restarts_=0)
    assert trained.attempts == 1 and calls[0][1] is None  # no guard
    assert trained.sound is True  # judged all the same
    assert not (tmp_path / "a" / "attempts.csv").exists()
    trained, calls = fake_run([([0.5, 0.5], 2, None)], tmp_path / "b", labels=fake_split(100))
    assert trained.attempts == 1 and calls[0][1] is None
    assert trained.sound is None  # too few validation genes to judge
    assert "No restarts: the validation split has 100 genes" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# main.py end to end: a stall forced on the first attempt

FORCED = """
import sys
sys.path.insert(0, {root!r})
import restarts
restarts.MIN_VALID_GENES = 0  # the tiny cells have 40 validation genes
real = restarts.failure
seen = []
def failure(val_auc, val_accuracy, majority, epochs):
    if len(val_auc) == 1:
        seen.append(1)  # a new attempt's first epoch
    if ({mode!r} == "first" and len(seen) == 1) or {mode!r} == "always":
        return restarts.Failure("stalled", len(val_auc), "forced by the test")
    return None
restarts.failure = failure
import main
sys.exit(main.main({argv!r}))
"""


def forced_run(tiny_dir, save, mode, *flags):
    argv = [
        str(a)
        for a in [
            "--data_dir",
            tiny_dir,
            "--cells",
            "S001",
            "--epochs",
            2,
            "--batch_size",
            16,
            "--seed",
            3,
            "--save_dir",
            save,
            *flags,
        ]
    ]
    res = subprocess.run(
        [sys.executable, "-c", FORCED.format(root=str(ROOT), argv=argv, mode=mode)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


@pytest.mark.slow
def test_a_forced_stall_restarts_and_restarts_0_is_the_plain_recipe(tiny_dir, tmp_path):
    # The guard on but never firing changes nothing: the same files as --restarts 0.
    plain = tmp_path / "plain"
    forced_run(tiny_dir, plain, "never", "--restarts", 0)
    quiet = tmp_path / "quiet"
    forced_run(tiny_dir, quiet, "never")
    for name in ("output.csv", "S001/log.csv", "S001/predictions.csv"):
        assert (plain / name).read_bytes() == (quiet / name).read_bytes(), name
    assert not (plain / "S001" / "attempts").exists()
    assert pd.read_csv(plain / "output.csv").attempts.tolist() == [1]
    assert json.loads((plain / "args.json").read_text())["restarts"] == 0

    save = tmp_path / "forced"
    res = forced_run(tiny_dir, save, "first", "--restarts", 1)
    cell = save / "S001"
    seed = json.loads((save / "args.json").read_text())["seed"]
    import experiments

    cell_seed = experiments.cell_seed(SimpleNamespace(seed=seed), "S001")
    second = restarts.attempt_seed(cell_seed, 2)
    assert f"S001: attempt 1 of 2 stalled: forced by the test; restarting from seed {second}" in (
        res.stdout
    )
    table = pd.read_csv(cell / "attempts.csv", keep_default_na=False)
    assert table.seed.tolist() == [cell_seed, second]
    assert table.outcome.tolist() == ["stalled", "learned"]
    assert table.epochs.tolist() == [1, 2]  # the first stopped after its stalled epoch
    # The sound attempt is tested, and its files are the cell's.
    assert table.chosen.tolist() == [False, True]
    assert len(pd.read_csv(cell / "log.csv")) == 2
    first_log = pd.read_csv(cell / "attempts" / "1" / "log.csv")
    assert len(first_log) == 1
    # The stopped first attempt is the plain run's first epoch, bit for bit.
    assert first_log.iloc[0].equals(pd.read_csv(plain / "S001" / "log.csv").iloc[0])
    row = pd.read_csv(save / "output.csv").iloc[0]
    assert row.attempts == 2 and row.best_epoch == table.best_epoch[1]
    assert bool(row.sound) is True and "all 1 judged sound" in res.stdout
    assert json.loads((cell / "training.json").read_text())["recipe"] == "default"


@pytest.mark.slow
def test_when_every_attempt_stalls_the_best_is_trained_to_the_end_and_not_sound(tiny_dir, tmp_path):
    save = tmp_path / "dead"
    res = forced_run(tiny_dir, save, "always", "--restarts", 1)
    cell = save / "S001"
    table = pd.read_csv(cell / "attempts.csv", keep_default_na=False)
    assert table.outcome.tolist() == ["stalled", "stalled", "trained on"]
    assert table.epochs.tolist() == [1, 1, 2]  # trained on to all --epochs 2
    assert table.chosen.tolist() == [False, False, True]
    first = table.top_val_auc[:2].tolist()
    assert table.seed[2] == table.seed[first.index(max(first))]  # the better-ranked one
    assert len(pd.read_csv(cell / "log.csv")) == 2
    row = pd.read_csv(save / "output.csv").iloc[0]
    assert row.attempts == 3 and not bool(row.sound)
    assert "1 of 1 not sound" in res.stdout
    assert "S001: not sound: all 2 attempts failed" in res.stderr
