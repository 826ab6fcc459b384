"""RocAucCallback: exact sklearn AUC in the logs, NaN (warned once) when undefined."""

import math
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

import Convnet  # noqa: E402
from roc_auc_callback import RocAucCallback, TrainingAuc, accuracy, roc_auc  # noqa: E402


def random_split(rng, n, labels=None):
    """Random x float32 (n, 505, 1) and one-hot y float32 (n, 2)."""
    x = rng.random((n, 505, 1), dtype=np.float32)
    labels = rng.integers(0, 2, n) if labels is None else labels
    return x, np.eye(2, dtype=np.float32)[labels]


def fit_frozen(train, valid, log_path, epochs=2, **callback_kwargs):
    """Fit with lr=0, so predictions after fit are those the callback scored."""
    keras.utils.set_random_seed(0)
    model = Convnet.compile_model(Convnet.Conv1DNet(), lr=0.0)
    callback = RocAucCallback(train, valid, batch_size=16, **callback_kwargs)
    model.fit(
        *train,
        validation_data=valid,
        epochs=epochs,
        batch_size=16,
        callbacks=[callback, keras.callbacks.CSVLogger(str(log_path))],
        verbose=2,
    )
    return model, pd.read_csv(log_path)


@pytest.mark.slow
def test_auc_logged_equals_sklearn(tmp_path, capsys):
    rng = np.random.default_rng(1)
    train, valid = random_split(rng, 48), random_split(rng, 32)
    model, log = fit_frozen(train, valid, tmp_path / "log.csv")
    for key, (x, y) in (("auc", train), ("val_auc", valid)):
        proba = model.predict(x, verbose=0)[:, 1]
        np.testing.assert_allclose(log[key], roc_auc_score(y[:, 1], proba), rtol=1e-12)
    # Keras appends its progress bar after our callback, so it prints both keys.
    out = capsys.readouterr().out
    assert out.count(" - auc: ") == 2 and out.count(" - val_auc: ") == 2


def test_one_class_validation_is_nan_and_warned_once(tmp_path):
    rng = np.random.default_rng(2)
    train, valid = random_split(rng, 32), random_split(rng, 16, labels=np.ones(16, dtype=int))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, log = fit_frozen(train, valid, tmp_path / "log.csv", epochs=3)
    ours = [w for w in caught if "undefined" in str(w.message)]
    assert len(ours) == 1 and "val_auc" in str(ours[0].message)
    assert log["val_auc"].isna().all() and len(log) == 3
    assert log["auc"].notna().all()


def test_missing_data_gives_nan_without_warning():
    callback = RocAucCallback()
    logs = {"loss": 0.5}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.on_epoch_end(0, logs)
    assert math.isnan(logs["auc"]) and math.isnan(logs["val_auc"])


def test_train_subsample_is_fixed_subset():
    rng = np.random.default_rng(3)
    x, y = random_split(rng, 100)
    x[:, 0, 0] = np.arange(100)  # row ids, to find the drawn genes
    a = RocAucCallback((x, y), train_subsample=30, seed=5)
    b = RocAucCallback((x, y), train_subsample=30, seed=5)
    ids = a.training_data[0][:, 0, 0].astype(int)
    assert len(set(ids)) == 30 and np.array_equal(ids, b.training_data[0][:, 0, 0])
    np.testing.assert_array_equal(a.training_data[1], y[ids])
    assert RocAucCallback((x, y), train_subsample=500).training_data[0] is x


def test_roc_auc_helper():
    y = np.eye(2, dtype=np.float32)[[0, 1, 1, 0, 1]]
    p = np.array([0.1, 0.8, 0.4, 0.3, 0.9], dtype=np.float32)
    assert roc_auc(y, p) == pytest.approx(roc_auc_score(y[:, 1], p))
    assert roc_auc(y[:, 1], p) == roc_auc(y, p)
    assert math.isnan(roc_auc(y[[0, 3]], p[[0, 3]]))
    assert math.isnan(roc_auc(y, np.array([0.1, np.nan, 0.4, 0.3, 0.9])))


def tiny_model(lr=0.0, train_auc=True):
    """No dropout: with lr=0 its training-mode outputs equal model.predict's."""
    model = keras.Sequential(
        [keras.Input((505, 1)), keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")]
    )
    metrics = ["accuracy"] + ([TrainingAuc()] if train_auc else [])
    model.compile(keras.optimizers.Adam(lr), "binary_crossentropy", metrics=metrics)
    return model


@pytest.mark.parametrize("loss", ["binary_crossentropy", "categorical_crossentropy"])
def test_validation_metrics_from_one_pass_match_keras_evaluate(tmp_path, loss):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(4)
    train, valid = random_split(rng, 48), random_split(rng, 40)
    model = Convnet.Conv1DNet()
    model.compile(keras.optimizers.Adam(0.0), loss, metrics=["accuracy"])
    calls = []

    class Counting(RocAucCallback):
        def _predict(self, x):
            calls.append(("predict", len(x)))
            return super()._predict(x)

        def _evaluate(self, x, y):
            calls.append(("evaluate", len(x)))
            return super()._evaluate(x, y)

    log_path = tmp_path / "log.csv"
    model.fit(
        *train,
        epochs=2,
        batch_size=16,
        callbacks=[
            Counting(validation_data=valid, batch_size=16),
            keras.callbacks.CSVLogger(str(log_path)),
        ],
        verbose=0,
    )
    log = pd.read_csv(log_path)
    assert calls == [("evaluate", 40)] * 2  # the validation split only, once per epoch
    assert list(log.columns) == [
        "epoch",
        "accuracy",
        "auc",
        "loss",
        "val_accuracy",
        "val_auc",
        "val_loss",
    ]
    # lr=0: evaluate after fit sees the weights the callback saw. 40 genes in batches of 16:
    # the last batch is smaller, so batch weighting is checked too.
    loss_value, acc = model.evaluate(*valid, batch_size=16, verbose=0)
    np.testing.assert_allclose(log["val_loss"], loss_value, rtol=1e-6)
    np.testing.assert_allclose(log["val_accuracy"], acc, rtol=1e-6)
    assert log["auc"].isna().all()  # no training data and no TrainingAuc: NaN, not missing
    proba = model.predict(valid[0], verbose=0)[:, 1]
    np.testing.assert_allclose(log["val_auc"], roc_auc_score(valid[1][:, 1], proba), rtol=1e-12)


def test_accuracy_helper_matches_keras():
    rng = np.random.default_rng(5)
    p1 = rng.random(200, dtype=np.float32)
    pred = np.stack([1 - p1, p1], axis=1)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, len(p1))]
    metric = keras.metrics.CategoricalAccuracy()
    metric.update_state(y, pred)
    assert accuracy(y, pred) == pytest.approx(float(metric.result()), abs=1e-7)


def test_training_auc_is_binned_auc_of_batch_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(7)
    x, y = random_split(rng, 300)
    x[y[:, 1] == 1] += 0.02  # some signal, so the AUC is not near 0.5 by chance only
    model = tiny_model()
    history = model.fit(
        x, y, epochs=2, batch_size=32, verbose=0, callbacks=[RocAucCallback(validation_data=(x, y))]
    )
    proba = model.predict(x, verbose=0)[:, 1]
    exact = roc_auc_score(y[:, 1], proba)
    # lr=0 and no dropout: the batches' outputs are the predictions; binned on 10,001
    # thresholds, the streamed AUC is the exact AUC of the probabilities rounded up.
    binned = roc_auc_score(y[:, 1], np.ceil(proba.astype(np.float64) * 10_000))
    np.testing.assert_allclose(history.history["auc"], binned, atol=1e-5)
    np.testing.assert_allclose(history.history["auc"], exact, atol=1e-3)
    np.testing.assert_allclose(history.history["val_auc"], exact, rtol=1e-12)


def test_training_auc_one_class_is_nan_and_warned():
    rng = np.random.default_rng(8)
    train = random_split(rng, 32, labels=np.zeros(32, dtype=int))
    with pytest.warns(UserWarning, match="auc undefined at epoch 1"):
        history = tiny_model().fit(
            *train, epochs=2, batch_size=16, verbose=0, callbacks=[RocAucCallback()]
        )
    assert np.isnan(history.history["auc"]).all()
