"""Per-epoch ROC AUC in Keras' epoch logs, at the cost of one prediction pass per epoch, and the
AUC, accuracy and class-1 probability of a split's predictions; it writes no files.

`RocAucCallback` predicts the validation split once per epoch and logs its exact AUC, and also
its loss and accuracy when `fit` was given no validation data (Keras would otherwise predict
the split a second time). The training AUC comes for free from `TrainingAuc`, a compiled
metric fed by the training batches' own outputs.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops
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


def high_probability(pred):
    """The class-1 (high expression) column of softmax outputs (n, 2), as float32 (n,)."""
    return np.asarray(pred)[:, 1].astype(np.float32)


def accuracy(y, pred):
    """Keras' "accuracy" on a one-hot target (categorical accuracy): argmax match rate.

    y: one-hot (n, 2); pred: probabilities (n, 2). Returns a float.
    """
    return float(np.mean(np.argmax(pred, axis=1) == np.argmax(y, axis=1)))


@keras.saving.register_keras_serializable(package="roc_auc_callback")
class TrainingAuc(keras.metrics.AUC):
    """Streaming ROC AUC of the class-1 probability over one epoch's training batches.

    It measures what Keras' training `loss` and `accuracy` measure: the outputs the model
    gave each batch as it trained on it (dropout on, weights moving through the epoch), with
    no extra pass over the data. Scores are binned on `num_thresholds` evenly spaced
    thresholds, so it is the exact AUC of the probabilities rounded up to the next multiple
    of 1 / (num_thresholds - 1), ties counting half: within a few 1e-4 of the unbinned AUC.
    NaN while the batches seen hold one class only.

    Args:
        num_thresholds: number of thresholds in [0, 1].
        name: log key.

    Example:
        >>> model.compile("adam", "categorical_crossentropy", metrics=["accuracy", TrainingAuc()])
    """

    def __init__(self, num_thresholds=10_001, name="auc", **kwargs):
        super().__init__(num_thresholds=num_thresholds, name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # One-hot (n, 2) target and softmax output: only the class-1 column is the score.
        return super().update_state(y_true[:, 1], y_pred[:, 1], sample_weight)

    def result(self):
        positives = self.true_positives[0] + self.false_negatives[0]
        negatives = self.false_positives[0] + self.true_negatives[0]
        defined = ops.logical_and(positives > 0, negatives > 0)
        return ops.where(defined, super().result(), math.nan)


class RocAucCallback(keras.callbacks.Callback):
    """Adds `auc` and `val_auc` (ROC AUC of the class-1 probability) to the epoch logs.

    The validation split is predicted once per epoch. That gives the exact `val_auc` and, if
    `fit` got no validation data (no `val_loss` in the logs), `val_loss` and `val_accuracy`
    too, from the same forward pass: the model's compiled loss computed exactly as Keras'
    `evaluate` does (averaged over genes), and argmax accuracy (Keras' "accuracy" on one-hot
    targets). So pass the validation split here instead of to `fit`, and it is predicted
    once per epoch instead of twice.

    `auc` is the exact AUC of the end-of-epoch model on `training_data` when that is given
    (one more prediction pass); otherwise the value a compiled `TrainingAuc` metric already
    put in the logs is kept (NaN if there is none).

    Put it first in the callback list: callbacks share one `logs` dict in list order, so
    CSVLogger, ModelCheckpoint, TensorBoard and the progress bar (which Keras appends last)
    all see its keys. They are written every epoch so CSVLogger's columns, fixed at the first
    epoch, always include them; an AUC is NaN when undefined (one class only, non-finite
    predictions: warned once per `fit`, except after a NaN training loss, a divergence that
    `Convnet.train` reports) or when its data is None (no warning).

    Args:
        training_data: (x, y) with x float32 (n, L, 1) and y one-hot (n, 2), or None
            (use the compiled TrainingAuc instead).
        validation_data: same for the validation split, or None.
        batch_size: prediction batch size; memory only, results are unaffected.
        train_subsample: if an int smaller than the training set, the training AUC uses
            that many genes, drawn once (fixed over epochs, so the curve is comparable).
            None (default) uses all of training_data.
        seed: seed of that draw.

    Example:
        >>> model.compile("adam", "categorical_crossentropy", metrics=["accuracy", TrainingAuc()])
        >>> model.fit(x_tr, y_tr, callbacks=[RocAucCallback(validation_data=(x_va, y_va)),
        ...                                  keras.callbacks.CSVLogger("log.csv")])
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
        self._step = None  # (model, loss, traced step), reused across fits of the same model

    def on_train_begin(self, logs=None):
        self._warned = False

    def _check(self, auc, key, epoch, logs):
        # A NaN training loss means the model diverged: its AUC is undefined for that reason
        # alone, which Convnet.train reports (and stops at); no warning to add to it.
        diverged = not math.isfinite(float(logs.get("loss", 0.0)))
        if np.isnan(auc) and not self._warned and not diverged:
            self._warned = True
            warnings.warn(
                f"{key} undefined at epoch {epoch + 1} (one class only or non-finite "
                "predictions); logging NaN. Not repeated in this run.",
                stacklevel=3,
            )
        return auc

    def _predict(self, x):
        return self.model.predict(x, batch_size=self.batch_size, verbose=0)

    def _evaluate(self, x, y):
        """One forward pass: probabilities float32 (n, 2) and the mean compiled loss.

        Each batch's loss comes from the model's own `compute_loss` on its symbolic output,
        as in Keras' `test_step` (Keras 3 hands a softmax's logits to the loss that way), and
        batches are weighted by their size, as `evaluate` does.
        """
        model = self.model
        if self._step is None or self._step[:2] != (model, model.loss):

            @tf.function(reduce_retracing=True)
            def step(xb, yb):
                pred = model(xb, training=False)
                return pred, model.compute_loss(x=xb, y=yb, y_pred=pred, training=False)

            self._step = (model, model.loss, step)
        preds, total = [], 0.0
        for start in range(0, len(x), self.batch_size):
            pred, loss = self._step[2](
                x[start : start + self.batch_size], y[start : start + self.batch_size]
            )
            preds.append(pred.numpy())
            total += float(loss) * len(preds[-1])
        return np.concatenate(preds), total / len(x)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:  # only when called by hand: nothing downstream to feed
            return
        if self.training_data is not None:
            x, y = self.training_data
            logs["auc"] = self._check(
                roc_auc(y, high_probability(self._predict(x))), "auc", epoch, logs
            )
        elif "auc" in logs:
            logs["auc"] = self._check(float(logs["auc"]), "auc", epoch, logs)
        else:
            logs["auc"] = math.nan
        if self.validation_data is None:
            logs["val_auc"] = math.nan
            return
        x, y = self.validation_data
        if "val_loss" in logs:  # fit evaluated the split already: only its AUC is missing
            pred = self._predict(x)
        else:
            pred, logs["val_loss"] = self._evaluate(x, y)
            logs["val_accuracy"] = accuracy(y, pred)
        logs["val_auc"] = self._check(roc_auc(y, high_probability(pred)), "val_auc", epoch, logs)
