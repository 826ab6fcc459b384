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
from roc_auc_callback import RocAucCallback, roc_auc  # noqa: E402


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
