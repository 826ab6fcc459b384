"""Conv1DNet (Chaubey et al., SSCI 2019) and its train / test loops: build, compile, fit with
the AUC callback and checkpoints, save and load, predict and score one split.

It reads no data files and draws nothing (data.py and utils.py do). Inputs everywhere: x float32
(n, L, 1) with L = input_length(variant), y float32 one-hot (n, 2) over {low, high} expression.
"""

import dataclasses
import functools
import importlib.util
import math
import os
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers

import data
import files
import restarts
from config import ExperimentError
from roc_auc_callback import RocAucCallback, TrainingAuc, accuracy, high_probability, roc_auc

VARIANTS = data.VARIANTS


def input_length(variant):
    """Length of one gene's feature vector: 100 bins x 5 marks (+ 5 additional features)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return data.input_length(additional_features=variant != "no_additional_features")


def Conv1DNet(input_shape=None, variant="full", name="Conv1DNet"):
    """Build the paper's network (Chaubey et al., SSCI 2019); no I/O, not compiled.

    Args:
        input_shape: (L, 1); None means (input_length(variant), 1).
        variant: one of VARIANTS. "no_spatial_dropout" drops SpatialDropout1D;
            "no_additional_features" only changes the input length to 500.
        name: model name.

    Returns:
        keras.Model mapping float32 (n, L, 1) to float32 (n, 2) softmax.
    """
    expected = input_length(variant)
    input_shape = tuple(input_shape or (expected, 1))
    if input_shape != (expected, 1):
        raise ValueError(
            f"variant {variant!r} expects input_shape {(expected, 1)}, got {input_shape}"
        )

    # Under a mixed-precision policy only conv2 and conv3, 99% of the arithmetic, compute in its
    # bfloat16 or float16 (MixedConv1D); under float32 every layer is Keras' own, the paper's
    # arithmetic bit for bit.
    mixed = keras.mixed_precision.global_policy().compute_dtype != "float32"
    conv = MixedConv1D if mixed else layers.Conv1D
    f32 = "float32" if mixed else None
    inputs = keras.Input(shape=input_shape, name="input")
    # conv1 in float32: over one input channel bfloat16 has no depth to work on, and it ran
    # slower than float32 (bench/RESULTS.md, "bfloat16, second measurement").
    x = layers.Conv1D(64, 17, padding="valid", activation="tanh", dtype=f32, name="conv1")(inputs)
    x = layers.MaxPooling1D(3, name="pool1")(x)
    if variant != "no_spatial_dropout":
        x = layers.SpatialDropout1D(0.4, name="spatial_dropout")(x)
    x = conv(128, 13, padding="valid", activation="tanh", name="conv2")(x)
    x = conv(256, 11, padding="valid", activation="tanh", name="conv3")(x)
    x = layers.MaxPooling1D(4, name="pool2")(x)
    x = layers.Dropout(0.6, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    # The dense layers in float32: 0.5% of the arithmetic, and in bfloat16 their bias gradients
    # are sums over the batch rounded at every step (MixedConv1D says more).
    x = layers.Dense(35, activation="tanh", dtype=f32, name="dense1")(x)
    x = layers.Dropout(0.5, name="dropout2")(x)
    x = layers.Dense(16, activation="tanh", dtype=f32, name="dense2")(x)
    x = layers.Dense(8, activation="tanh", dtype=f32, name="dense3")(x)
    # float32 even under a mixed-precision policy: softmax and the loss need it.
    outputs = layers.Dense(2, activation="softmax", dtype="float32", name="output")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="Convnet")
class MixedConv1D(layers.Conv1D):
    """Conv1D under a mixed-precision policy: the convolution in the compute dtype (bfloat16),
    then the bias, the activation and their gradients in float32; the output in bfloat16.

    Keras adds the bias in the compute dtype, and TensorFlow (2.21, CPU) then sums the bias
    gradient over batch x positions (14,100 terms for conv3) in bfloat16, rounding at every
    step: on one layer, 12.5% off float32's, where the kernel gradient (accumulated in float32
    by the convolution) is off by 0.17%, bfloat16's own rounding. In the network the bias
    gradients of conv2 and conv3 were 9% to 11% off; summed in float32 they are 0.3% to 0.4%
    off, below their kernels' 2.7% to 2.9% (bench/RESULTS.md, "bfloat16, third measurement";
    tests/test_convnet.py checks every bias gradient within 2%). tanh in float32 also keeps its
    gradient: bfloat16 rounds tanh(x) to exactly +-1 from |x| of about 3.1 on, where
    1 - tanh^2 is 0 (bench/RESULTS.md, "bfloat16, first measurement").
    """

    def call(self, inputs):
        y = keras.ops.cast(self.convolution_op(inputs, self.kernel), "float32")
        if self.use_bias:
            y = y + keras.ops.cast(self.bias, "float32")
        if self.activation is not None:
            y = self.activation(y)
        return keras.ops.cast(y, self.compute_dtype)


def in_current_policy(model):
    """`model` computing in the current dtype policy: a loaded model keeps the layers and policy
    it was saved with, so a model trained in float32 would fine-tune in float32 under a bfloat16
    run (and the other way round). Rebuilt, same network and weights, when its layers
    compute otherwise than Conv1DNet builds them now; returned as it is when they compute the
    same or it is not this network."""
    variant = variant_of(model)
    if variant is None:
        return model
    fresh = Conv1DNet(model.input_shape[1:], variant=variant, name=model.name)
    if _arithmetic(fresh) == _arithmetic(model):
        return model
    fresh.set_weights(model.get_weights())
    return fresh


def _arithmetic(model) -> list[tuple]:
    """Per layer with weights: its class, dtype policy and activation, what decides how it
    computes. (Layers without weights are left out: Keras reloads SpatialDropout1D in float32
    whatever the policy it was saved under.)"""
    return [
        (type(layer), layer.dtype_policy.name, getattr(layer, "activation", None))
        for layer in model.layers
        if layer.weights
    ]


def _activation_name(config) -> str | None:
    """A layer config's activation by name."""
    found = config.get("activation")
    if isinstance(found, dict):  # a registered function: {"config": "name", ...}
        found = found.get("config")
    return found


def keras_class(layer) -> type:
    """The Keras layer class `layer` is or extends (Conv1D for MixedConv1D)."""
    return next(c for c in type(layer).__mro__ if c.__module__.startswith("keras"))


def layer_signature(model) -> list[tuple] | None:
    """Per layer: type, output shape (without the batch axis) and activation; None for a model
    whose layers have no fixed output (not a functional or sequential model)."""
    try:
        return [
            (
                keras_class(layer).__name__,
                tuple(layer.output.shape[1:]),
                _activation_name(layer.get_config()),
            )
            for layer in model.layers
        ]
    except Exception:  # a subclassed model's layers have no symbolic output
        return None


@functools.cache
def _variant_signatures() -> dict:
    return {v: layer_signature(Conv1DNet(variant=v)) for v in VARIANTS}


def variant_of(model) -> str | None:
    """Which of VARIANTS `model` is, by its layers' types, output shapes and activations;
    None when it is not this network."""
    found = layer_signature(model)
    return next((v for v, sig in _variant_signatures().items() if sig == found), None)


def describe_layers(model) -> list[str]:
    """Each layer as "Type(shape..., activation)", to say what a refused model holds."""
    out = []
    for kind, shape, activation in layer_signature(model) or [(type(model).__name__, (), None)]:
        parts = [str(d) for d in shape] + ([activation] if activation else [])
        out.append(f"{kind}({', '.join(parts)})")
    return out


def compile_model(model, lr=0.001, jit_compile=False, train_auc=False):
    """Adam + binary cross-entropy on the 2-way softmax's probabilities, as the paper.

    Compiled as "categorical_crossentropy", which on a 2-way softmax and a one-hot target is
    that loss exactly: each of the two binary terms is -log(probability of the true class).
    Not "binary_crossentropy": Keras 3 hands it the softmax's logits and scores them as two
    independent sigmoid logits, a different loss (the paper's Keras 2 code scored the
    probabilities).

    "accuracy" resolves (Keras 3, by shapes) to categorical accuracy on the
    (n, 2) one-hot target, i.e. argmax match; logged as accuracy / val_accuracy.
    jit_compile: XLA-compile the steps. False, not Keras' "auto", by default:
    "auto" would turn XLA on whenever a GPU is present.
    Under a tf.distribute strategy, call inside its scope (optimizer variables).
    train_auc adds TrainingAuc: the training batches' AUC, logged as auc.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="categorical_crossentropy",
        metrics=["accuracy"] + ([TrainingAuc()] if train_auc else []),
        jit_compile=jit_compile,
    )
    return model


def step_rate(lr, lr_decay, warmup, step, epoch) -> float:
    """The learning rate of training step ``step`` (0-based, counted over the whole fit), in
    epoch ``epoch`` (0-based): lr * lr_decay**epoch, times (step + 1) / warmup during the first
    ``warmup`` steps. With warmup 0 it is the paper's schedule; with one epoch's steps, the
    first epoch's rate climbs linearly from lr / warmup to lr and every later epoch is the
    paper's."""
    rate = lr * lr_decay**epoch
    if step < warmup:
        rate *= (step + 1) / warmup
    return float(rate)


class LearningRate(keras.callbacks.Callback):
    """The learning rate of every step (step_rate): set at each epoch's start, and before each
    of the first ``warmup`` steps; with warmup 0, what Keras' LearningRateScheduler did with the
    paper's per-epoch schedule, bit for bit. The rate at the epoch's end goes into the logs as
    learning_rate.

    Why warm up: with the paper's schedule, Adam's first steps move each of dense1's 8,960
    weights by about the full rate whatever the gradient's size, and can push all 35 of its tanh
    units into saturation, after which no gradient reaches the layers below and the network
    gives every gene one probability (bench/RESULTS.md, "Stalls"). The warm-up makes those
    first steps small (measured in bench/RESULTS.md, "Stall benchmark, wide cells")."""

    def __init__(self, lr, lr_decay, warmup=0):
        super().__init__()
        self.lr, self.lr_decay, self.warmup = lr, lr_decay, int(warmup)

    def on_train_begin(self, logs=None):
        self.step, self.epoch = 0, 0

    def _set(self, rate):
        self.model.optimizer.learning_rate.assign(rate)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self._set(step_rate(self.lr, self.lr_decay, self.warmup, self.step, epoch))

    def on_train_batch_begin(self, batch, logs=None):
        if self.step <= self.warmup and self.warmup:  # the warm-up, and the step after it
            self._set(step_rate(self.lr, self.lr_decay, self.warmup, self.step, self.epoch))
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        # The rate in force at the epoch's end, read back as the optimizer holds it (float32).
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


def diverged(logs) -> bool:
    """Whether an epoch's training or validation loss is NaN or infinite: its weights are
    garbage (a NaN model still scores an accuracy: argmax of NaN is class 0)."""
    return not all(math.isfinite(float((logs or {}).get(k, 0.0))) for k in ("loss", "val_loss"))


class StopOnDivergence(keras.callbacks.Callback):
    """End fit after the first epoch whose loss is not finite (``epoch``: that epoch, 1-based;
    None while training is sound). Checked once per epoch: a batch-end hook would make Keras
    fetch every batch's metrics."""

    def on_train_begin(self, logs=None):
        self.epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if diverged(logs):
            self.epoch = epoch + 1
            self.model.stop_training = True


class StopOnStall(keras.callbacks.Callback):
    """End fit after the epoch whose validation metrics show a stalled or collapsed network
    (restarts.failure; ``failure``: that verdict, None while training is sound). Reads the
    logs only: a run it never stops is the same run without it, bit for bit."""

    def __init__(self, majority: float, epochs: int):
        super().__init__()
        self.majority, self.epochs = majority, epochs

    def on_train_begin(self, logs=None):
        self.failure, self.val_auc, self.val_accuracy = None, [], []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.val_auc.append(float(logs.get("val_auc", math.nan)))
        self.val_accuracy.append(float(logs.get("val_accuracy", math.nan)))
        self.failure = restarts.failure(self.val_auc, self.val_accuracy, self.majority, self.epochs)
        if self.failure is not None:
            self.model.stop_training = True


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever `monitor` strictly improves (so ties keep the first epoch).

    Like ModelCheckpoint(save_best_only=True), but each save is atomic (`save_model`), and an
    epoch whose value is NaN or missing never counts as best (Keras' default baseline accepts a
    first NaN, after which nothing beats it), nor does an epoch whose loss diverged.
    """

    def __init__(self, path, monitor="val_accuracy", mode="max"):
        super().__init__()
        self.path, self.monitor, self.mode = path, monitor, mode

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get(self.monitor, math.nan))
        if math.isnan(value) or diverged(logs):
            return
        if value < self.best if self.mode == "min" else value > self.best:
            self.best = value
            files.save_model(self.model, self.path)


class EpochLog(keras.callbacks.Callback):
    """log.csv with one row per epoch (epoch 0-based, then the logs' keys sorted, as Keras'
    CSVLogger), rewritten whole through a rename each epoch: never a torn last line."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        keys = sorted({k for row in self.rows for k in row} - {"epoch"})
        lines = [",".join(["epoch", *keys])]
        lines += [
            ",".join([str(r["epoch"]), *(repr(r.get(k, math.nan)) for k in keys)])
            for r in self.rows
        ]
        files.write_text(self.path, "\n".join(lines) + "\n")


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    history: per-epoch logs, key -> list (one float per epoch); keys are
        accuracy, auc, learning_rate, loss, val_accuracy, val_auc, val_loss.
    best_epoch: 1-based epoch whose weights are in best_model_path; None when training
        diverged before any epoch could be kept (then there is no best model file).
    diverged_epoch: the 1-based epoch whose loss was NaN or infinite, where training stopped;
        None when it did not diverge. A diverged run saves no final model.
    """

    history: dict
    best_epoch: int | None
    best_model_path: str
    final_model_path: str
    diverged_epoch: int | None = None


def train(
    model,
    train,
    valid,
    save_dir,
    epochs=20,
    batch_size=100,
    lr=0.001,
    lr_decay=0.9,
    monitor="val_accuracy",
    debug=False,
    verbose=2,
    seed=None,
    train_auc_subsample=None,
    jit_compile=False,
    callbacks=(),
    warmup=0,
):
    """Compile and fit `model`, keeping the best epoch by `monitor`.

    Writes to save_dir: log.csv (epoch, accuracy, auc, learning_rate, loss,
    val_accuracy, val_auc, val_loss), best_model.keras, final_model.keras and
    tensorboard/ (weight histograms when `debug`; skipped with a warning when
    the tensorboard package is not installed).

    Args:
        model: an uncompiled or compiled Conv1DNet; it is (re)compiled here.
        train, valid: (x, y), x float32 (n, L, 1), y float32 one-hot (n, 2).
        save_dir: output folder, created if missing.
        monitor: log key maximised by the checkpoint ("...loss" is minimised).
            If it is NaN (or absent) in every epoch, e.g. val_auc on a one-class
            validation split, no epoch is better than another: the last epoch
            is kept and best_model.keras is a copy of final_model.keras.
        seed: if given, seeds Python, NumPy and TensorFlow (shuffling, dropout);
            seed before Conv1DNet too for reproducible initial weights.
        train_auc_subsample: None (default): the training AUC is that of the
            training batches' own outputs during the epoch (TrainingAuc: dropout
            on, like the training loss and accuracy; no extra pass). An int N:
            the exact AUC of the end-of-epoch model on a fixed random N genes of
            the training split (all of them if N >= its size), one more
            prediction pass per epoch. The validation AUC is always exact.
        jit_compile: XLA-compile the training steps (see compile_model).
        warmup: the learning rate warms up linearly over this many first steps
            (step_rate; 0: the paper's schedule, see restarts.warmup_steps).
        callbacks: more Keras callbacks, called after this function's own ones.

    The validation split is predicted once per epoch, by RocAucCallback, which
    logs val_loss, val_accuracy and val_auc from those predictions; it is not
    given to fit, which would predict it a second time.

    Under a tf.distribute strategy, build the model and call this inside its
    scope; batch_size is then the global batch, split over the replicas.

    Returns:
        TrainResult.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    os.makedirs(save_dir, exist_ok=True)
    best_path = os.path.join(save_dir, "best_model.keras")
    final_path = os.path.join(save_dir, "final_model.keras")
    for path in (best_path, final_path):  # an earlier training's models are not this one's
        if os.path.exists(path):
            os.remove(path)
    mode = "min" if monitor.endswith("loss") else "max"

    exact_train_auc = train_auc_subsample is not None
    compile_model(model, lr, jit_compile=jit_compile, train_auc=not exact_train_auc)
    own = [
        # First: later callbacks read the auc / val_* keys it adds to the logs.
        RocAucCallback(
            train if exact_train_auc else None, valid, train_subsample=train_auc_subsample
        ),
        LearningRate(lr, lr_decay, warmup),
        EpochLog(os.path.join(save_dir, "log.csv")),
        BestCheckpoint(best_path, monitor=monitor, mode=mode),
        guard := StopOnDivergence(),
    ]
    # TensorFlow >= 2.20 no longer installs TensorBoard; its callback would crash
    # at the first epoch, so train without it rather than lose the run.
    if importlib.util.find_spec("tensorboard") is not None:
        own.append(
            keras.callbacks.TensorBoard(
                os.path.join(save_dir, "tensorboard"), histogram_freq=1 if debug else 0
            )
        )
    else:
        warnings.warn("tensorboard is not installed: no TensorBoard logs", stacklevel=2)
    # Arrays, not a hand-made tf.data pipeline: Keras already turns them into a
    # prefetched, per-epoch reshuffled, vectorised-gather pipeline.
    fit = model.fit(
        train[0],
        train[1],
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=own + list(callbacks),
        verbose=verbose,
    )
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    diverged_epoch = guard.epoch
    epochs_run = len(history.get("loss", []))
    values = np.asarray(history.get(monitor, [math.nan] * epochs_run), dtype=np.float64)
    if diverged_epoch is not None:
        values[diverged_epoch - 1 :] = np.nan  # never the best, nor anything after it
        if not os.path.exists(best_path):
            return TrainResult(history, None, best_path, final_path, diverged_epoch)
    else:
        files.save_model(model, final_path)
    if np.all(np.isnan(values)):
        best_epoch = len(values)
        files.save_model(model, best_path)
    else:
        # Strict improvement in the checkpoint, first index here: ties -> first.
        best = np.nanargmin(values) if mode == "min" else np.nanargmax(values)
        best_epoch = int(best) + 1
    return TrainResult(history, best_epoch, best_path, final_path, diverged_epoch)


def load_model(path):
    """Load a saved Conv1DNet, uncompiled; safe_mode holds: its layers are Keras' own and the
    registered MixedConv1D, no Python code is deserialized."""
    return keras.saving.load_model(path, safe_mode=True, compile=False)


def load_checked(path):
    """A saved Conv1DNet, its layers checked against the network's variants; any other file or
    model is refused with one line saying what was found."""
    import zipfile

    path = Path(path)
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise ExperimentError(
            f"{path}: cannot load as a Keras model: "
            f"{'an empty file' if not size else 'not a zip archive, so truncated or damaged'} "
            "(a .keras file is a zip archive)"
        )
    try:
        model = load_model(str(path))
    except Exception as e:  # Keras raises many types for a bad or foreign file
        raise ExperimentError(
            f"{path}: cannot load as a Keras model "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120]})"
        ) from None
    if variant_of(model) is None:
        found = " > ".join(describe_layers(model))
        if len(found) > 160:
            found = found[:157] + "..."
        raise ExperimentError(
            f"{path}: not this project's network (Conv1DNet, any of {', '.join(data.VARIANTS)}); "
            f"its layers: {found}"
        )
    return model


def predict_proba(model, x, batch_size=1000):
    """Class-1 (high expression) probability: x float32 (n, L, 1) -> float32 (n,)."""
    return high_probability(model.predict(x, batch_size=batch_size, verbose=0))


def test(model, x, y, batch_size=1000):
    """Score `model` on one split.

    Args:
        x: float32 (n, L, 1). y: one-hot (n, 2).

    Returns:
        dict: auc (float; NaN if y has one class only), accuracy (float,
        argmax match), n (int), proba (float32 (n,), class-1 probability).
    """
    pred = model.predict(x, batch_size=batch_size, verbose=0)
    proba = high_probability(pred)
    y = np.asarray(y)
    return {
        "auc": roc_auc(y, proba),
        "accuracy": accuracy(y, pred),
        "n": int(len(y)),
        "proba": proba,
    }
