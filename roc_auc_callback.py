"""Per-epoch exact ROC AUC (scikit-learn) added to Keras' epoch logs."""

import warnings

import keras
import numpy as np
from sklearn.metrics import roc_auc_score


def roc_auc(y, proba):
    """ROC AUC of the class-1 probability, NaN where it is undefined.

    Args:
        y: one-hot labels, (n, 2), any numeric dtype; or class-1 labels, (n,).
        proba: class-1 probability, (n,), float.

    Returns:
        float AUC; NaN when only one class is present (sklearn would warn on
        every call) or `proba` is not finite (a diverged model; sklearn raises).
    """
    y = np.asarray(y)
    y1 = y[:, 1] if y.ndim == 2 else y
    proba = np.asarray(proba)
    if np.unique(y1).size < 2 or not np.all(np.isfinite(proba)):
        return float("nan")
    return float(roc_auc_score(y1, proba))


class RocAucCallback(keras.callbacks.Callback):
    """Adds `auc` and `val_auc` (exact ROC AUC of the class-1 probability) to the logs.

    Put it first in the callback list: callbacks share one `logs` dict in list
    order, so CSVLogger, ModelCheckpoint, TensorBoard and the progress bar (which
    Keras appends last) all see both keys. Both keys are written every epoch so
    CSVLogger's columns, fixed at the first epoch, always include them; a value
    is NaN when undefined (one class only, non-finite predictions: warned once
    per `fit`) or when its data is None (no warning: that was asked for).

    Args:
        training_data: (x, y) with x float32 (n, L, 1) and y one-hot (n, 2),
            or None to skip the training AUC.
        validation_data: same for the validation split, or None. Always exact.
        batch_size: prediction batch size; memory only, results are unaffected.
        train_subsample: if an int smaller than the training set, the training
            AUC uses that many genes, drawn once (fixed over epochs, so the
            curve is comparable). Predicting all 6,601 training genes costs
            about 13% of an epoch on CPU, the validation split as much again.
            None (default) uses all genes.
        seed: seed of that draw.

    Example:
        >>> cb = RocAucCallback((x_tr, y_tr), (x_va, y_va))
        >>> model.fit(x_tr, y_tr, validation_data=(x_va, y_va),
        ...           callbacks=[cb, keras.callbacks.CSVLogger("log.csv")])
    """

    def __init__(
        self,
        training_data=None,
        validation_data=None,
        batch_size=1000,
        train_subsample=None,
        seed=0,
    ):
        super().__init__()
        if training_data is not None and train_subsample is not None:
            n = len(training_data[0])
            if train_subsample < n:
                idx = np.sort(np.random.default_rng(seed).choice(n, train_subsample, replace=False))
                training_data = (training_data[0][idx], training_data[1][idx])
        self.training_data = training_data
        self.validation_data = validation_data
        self.batch_size = batch_size
        self._warned = False

    def on_train_begin(self, logs=None):
        self._warned = False

    def _auc(self, data, key, epoch):
        if data is None:
            return float("nan")
        x, y = data
        proba = self.model.predict(x, batch_size=self.batch_size, verbose=0)[:, 1]
        auc = roc_auc(y, proba)
        if np.isnan(auc) and not self._warned:
            self._warned = True
            warnings.warn(
                f"{key} undefined at epoch {epoch + 1} (one class only or non-finite "
                "predictions); logging NaN. Not repeated in this run.",
                stacklevel=2,
            )
        return auc

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:  # only when called by hand: nothing downstream to feed
            return
        logs["auc"] = self._auc(self.training_data, "auc", epoch)
        logs["val_auc"] = self._auc(self.validation_data, "val_auc", epoch)
