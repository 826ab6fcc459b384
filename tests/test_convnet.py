"""Conv1DNet's shapes and sizes, the lr schedule and the best-epoch checkpoint."""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import Convnet  # noqa: E402
import restarts  # noqa: E402

# Keras 3.15 reads variables through an __array__ without numpy 2's copy keyword when it saves a
# model (each checkpoint): upstream noise, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

SHAPES = {
    "full": {
        "conv1": (489, 64),
        "pool1": (163, 64),
        "spatial_dropout": (163, 64),
        "conv2": (151, 128),
        "conv3": (141, 256),
        "pool2": (35, 256),
        "dropout1": (35, 256),
        "flatten": (8960,),
        "dense1": (35,),
        "dropout2": (35,),
        "dense2": (16,),
        "dense3": (8,),
        "output": (2,),
    },
    "no_additional_features": {
        "conv1": (484, 64),
        "pool1": (161, 64),
        "spatial_dropout": (161, 64),
        "conv2": (149, 128),
        "conv3": (139, 256),
        "pool2": (34, 256),
        "flatten": (8704,),
        "output": (2,),
    },
}
SHAPES["no_spatial_dropout"] = {k: v for k, v in SHAPES["full"].items() if k != "spatial_dropout"}


def expected_params(length):
    """Parameter count from the layer sizes alone (weights + biases)."""

    def conv(kernel, c_in, c_out):
        return kernel * c_in * c_out + c_out

    def dense(n_in, n_out):
        return n_in * n_out + n_out

    pooled = ((length - 17 + 1) // 3 - 13 + 1 - 11 + 1) // 4
    return (
        conv(17, 1, 64)
        + conv(13, 64, 128)
        + conv(11, 128, 256)
        + dense(pooled * 256, 35)
        + dense(35, 16)
        + dense(16, 8)
        + dense(8, 2)
    )


def random_split(rng, n, length=505, labels=None):
    """Random x float32 (n, length, 1) and one-hot y float32 (n, 2)."""
    x = rng.random((n, length, 1), dtype=np.float32)
    labels = rng.integers(0, 2, n) if labels is None else labels
    return x, np.eye(2, dtype=np.float32)[labels]


@pytest.mark.parametrize("variant", Convnet.VARIANTS)
def test_layer_output_shapes(variant):
    model = Convnet.Conv1DNet(variant=variant)
    assert model.input.shape[1:] == (Convnet.input_length(variant), 1)
    for name, shape in SHAPES[variant].items():
        assert tuple(model.get_layer(name).output.shape[1:]) == shape, name
    names = [layer.name for layer in model.layers]
    assert ("spatial_dropout" in names) == (variant != "no_spatial_dropout")


@pytest.mark.parametrize("variant", Convnet.VARIANTS)
def test_parameter_count(variant):
    model = Convnet.Conv1DNet(variant=variant)
    assert model.count_params() == expected_params(Convnet.input_length(variant))


def test_parameter_count_values():
    # The paper's network (Chaubey et al., SSCI 2019) has about 783k parameters.
    assert expected_params(505) == 782_845
    assert expected_params(500) == 773_885


def test_input_length_and_bad_arguments():
    assert [Convnet.input_length(v) for v in Convnet.VARIANTS] == [505, 505, 500]
    with pytest.raises(ValueError):
        Convnet.input_length("attention")
    with pytest.raises(ValueError):
        Convnet.Conv1DNet((505, 1), variant="no_additional_features")


def test_output_is_float32_even_under_mixed_precision():
    assert Convnet.Conv1DNet().output.dtype == "float32"
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = Convnet.Conv1DNet()
        assert model.get_layer("conv2").compute_dtype == "float16"
        assert model.get_layer("conv1").compute_dtype == "float32"  # one input channel
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_loss_is_binary_cross_entropy_of_the_softmax_probabilities():
    """The paper's loss: mean over genes and both outputs of -[y log p + (1 - y) log(1 - p)].
    Keras 3's "binary_crossentropy" on a softmax output scores the logits instead."""
    keras.utils.set_random_seed(2)
    model = Convnet.compile_model(Convnet.Conv1DNet(), 0.001)
    out = model.get_layer("output")
    kernel, bias = out.get_weights()
    out.set_weights([kernel * 20, bias])  # confident outputs: the two losses far apart
    rng = np.random.default_rng(2)
    x = rng.random((64, 505, 1), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 64)]
    p = model.predict(x, verbose=0).astype(np.float64)
    paper = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, paper, rtol=1e-5)
    # Not the logits-as-sigmoids loss, which differs from it by far more than the tolerance.
    features = keras.Model(model.input, model.get_layer("dense3").output).predict(x, verbose=0)
    z = features @ (kernel * 20) + bias
    sigmoid = 1 / (1 + np.exp(-z.astype(np.float64)))
    other = -np.mean(y * np.log(sigmoid) + (1 - y) * np.log(1 - sigmoid))
    assert abs(other - paper) > 100 * 1e-5 * paper


def test_step_rate_paper_and_warmup():
    # The paper's schedule: lr * 0.9**epoch, whatever the step.
    paper = [Convnet.step_rate(0.001, 0.9, 0, step, e) for step, e in ((0, 0), (70, 1), (140, 2))]
    np.testing.assert_allclose(paper, [0.001, 0.0009, 0.00081])
    # Warm-up over 4 steps: lr/4, 2lr/4, 3lr/4, lr in the first epoch; later epochs the paper's.
    warm = [Convnet.step_rate(0.001, 0.9, 4, step, 0) for step in range(5)]
    np.testing.assert_allclose(warm, [0.00025, 0.0005, 0.00075, 0.001, 0.001])
    assert Convnet.step_rate(0.001, 0.9, 4, 5, 1) == Convnet.step_rate(0.001, 0.9, 0, 5, 1)


def test_warmup_steps_by_recipe():
    assert restarts.warmup_steps("paper", 6601, 100) == 0
    assert restarts.warmup_steps("default", 6601, 100) == 67  # one epoch's steps
    assert restarts.warmup_steps("default", 2000, 100) == 20
    with pytest.raises(ValueError):
        restarts.warmup_steps("other", 10, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-epoch run on 64 random genes, shared by the tests below."""
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    train, valid = random_split(rng, 64), random_split(rng, 48)
    save_dir = tmp_path_factory.mktemp("run")
    rates = RateRecorder()
    result = Convnet.train(
        Convnet.Conv1DNet(),
        train,
        valid,
        save_dir,
        epochs=3,
        batch_size=16,
        verbose=0,
        seed=3,
        callbacks=[rates],
        warmup=restarts.warmup_steps("default", 64, 16),  # 4 steps: one epoch
    )
    log = pd.read_csv(save_dir / "log.csv")
    return result, log, valid, rates.seen


class RateRecorder(keras.callbacks.Callback):
    """The optimizer's learning rate as each training step starts."""

    def on_train_begin(self, logs=None):
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        self.seen.append(float(self.model.optimizer.learning_rate.numpy()))


@pytest.mark.slow
def test_the_warmup_schedule_step_by_step(trained):
    # The default recipe: the first epoch's 4 steps at lr/4, 2lr/4, 3lr/4, lr; then the paper's
    # lr * 0.9**epoch for every step of the later epochs.
    *_, seen = trained
    expected = [0.00025, 0.0005, 0.00075, 0.001] + [0.0009] * 4 + [0.00081] * 4
    np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_the_paper_schedule_step_by_step(tmp_path):
    rng = np.random.default_rng(4)
    rates = RateRecorder()
    Convnet.train(
        Convnet.Conv1DNet(),
        random_split(rng, 32),
        random_split(rng, 16),
        tmp_path,
        epochs=2,
        batch_size=16,
        verbose=0,
        seed=4,
        callbacks=[rates],
    )
    np.testing.assert_allclose(rates.seen, [0.001, 0.001, 0.0009, 0.0009], rtol=1e-6)


def test_log_columns_and_learning_rate(trained):
    result, log, *_ = trained
    assert list(log.columns) == [
        "epoch",
        "accuracy",
        "auc",
        "learning_rate",
        "loss",
        "val_accuracy",
        "val_auc",
        "val_loss",
    ]
    assert list(log["epoch"]) == [0, 1, 2]
    # Logged from the float32 optimizer variable: equal to float32 precision.
    np.testing.assert_allclose(log["learning_rate"], [0.001, 0.0009, 0.00081], rtol=1e-6)
    assert result.history["learning_rate"] == list(log["learning_rate"])


def test_checkpoint_keeps_best_validation_epoch(trained):
    result, log, valid, _ = trained
    best = int(np.argmax(log["val_accuracy"].to_numpy()))  # first of ties
    assert result.best_epoch == best + 1
    scores = Convnet.test(Convnet.load_model(result.best_model_path), *valid)
    assert scores["accuracy"] == pytest.approx(log["val_accuracy"][best], abs=1e-6)
    # val_auc is continuous, so it fingerprints which epoch's weights were saved
    # even when val_accuracy ties (random labels: the majority class every epoch).
    assert scores["auc"] == pytest.approx(log["val_auc"][best], abs=1e-9)
    final = Convnet.test(Convnet.load_model(result.final_model_path), *valid)
    assert final["auc"] == pytest.approx(log["val_auc"].iloc[-1], abs=1e-9)


def test_test_scores(trained):
    result, _, (x, y), _ = trained
    from sklearn.metrics import roc_auc_score

    model = Convnet.load_model(result.final_model_path)
    scores = Convnet.test(model, x, y, batch_size=7)
    proba = Convnet.predict_proba(model, x)
    assert scores["proba"].dtype == np.float32 and scores["proba"].shape == (len(x),)
    np.testing.assert_allclose(scores["proba"], proba, rtol=1e-6)
    assert scores["n"] == len(x)
    assert scores["auc"] == pytest.approx(roc_auc_score(y[:, 1], proba))
    assert scores["accuracy"] == pytest.approx(np.mean((proba > 0.5) == (y[:, 1] == 1)))
    assert np.isnan(Convnet.test(model, x, np.eye(2, dtype=np.float32)[[0] * len(x)])["auc"])


def test_all_nan_monitor_keeps_last_epoch(tmp_path):
    rng = np.random.default_rng(0)
    train = random_split(rng, 32)
    valid = random_split(rng, 16, labels=np.zeros(16, dtype=int))  # one class: val_auc NaN
    with pytest.warns(UserWarning, match="val_auc undefined"):
        result = Convnet.train(
            Convnet.Conv1DNet(),
            train,
            valid,
            tmp_path,
            epochs=2,
            batch_size=16,
            monitor="val_auc",
            verbose=0,
        )
    assert result.best_epoch == 2
    assert np.isnan(result.history["val_auc"]).all()
    assert os.path.exists(result.best_model_path) and os.path.exists(result.final_model_path)


def test_validation_logged_from_one_pass_matches_evaluate(trained):
    result, log, valid, _ = trained
    # The split is not given to fit: the callback's single pass produced these columns.
    model = keras.saving.load_model(result.final_model_path)  # compiled, TrainingAuc included
    scores = model.evaluate(*valid, batch_size=16, verbose=0, return_dict=True)
    assert scores["loss"] == pytest.approx(log["val_loss"].iloc[-1], rel=1e-5)
    assert scores["accuracy"] == pytest.approx(log["val_accuracy"].iloc[-1], abs=1e-6)
    # The training AUC is streamed from the training batches: defined, in [0, 1].
    assert log["auc"].between(0, 1).all()


class PoisonAt(keras.callbacks.Callback):
    """Turn the first layer's kernel to NaN when epoch ``at`` (0-based) begins: that epoch's
    loss is NaN, as after a divergence."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            kernel = self.model.get_layer("conv1").kernel
            kernel.assign(np.full(kernel.shape, np.nan, dtype=np.float32))


def test_diverged_training_stops_and_keeps_the_best_epoch_before_it(tmp_path):
    rng = np.random.default_rng(4)
    train, valid = random_split(rng, 48), random_split(rng, 24)
    keras.utils.set_random_seed(4)
    result = Convnet.train(
        Convnet.Conv1DNet(), train, valid, tmp_path, epochs=4, batch_size=16, verbose=0,
        callbacks=[PoisonAt(1)],
    )  # fmt: skip
    assert result.diverged_epoch == 2 and result.best_epoch == 1
    assert len(result.history["loss"]) == 2  # stopped at the diverged epoch
    assert np.isnan(result.history["loss"][1])
    best = Convnet.load_model(result.best_model_path)
    assert all(np.isfinite(w).all() for w in best.get_weights())
    assert not os.path.exists(result.final_model_path)  # no NaN model is saved
    assert len(pd.read_csv(tmp_path / "log.csv")) == 2


def test_training_diverged_from_the_first_epoch_leaves_no_model(tmp_path):
    rng = np.random.default_rng(5)
    train, valid = random_split(rng, 32), random_split(rng, 16)
    result = Convnet.train(
        Convnet.Conv1DNet(), train, valid, tmp_path, epochs=3, batch_size=16, verbose=0,
        callbacks=[PoisonAt(0)],
    )  # fmt: skip
    assert result.diverged_epoch == 1 and result.best_epoch is None
    assert not os.path.exists(result.best_model_path)
    assert not os.path.exists(result.final_model_path)


def test_variant_of_recognises_the_network_and_nothing_else():
    for variant in Convnet.VARIANTS:
        assert Convnet.variant_of(Convnet.Conv1DNet(variant=variant)) == variant
    inp = keras.Input((505, 1))
    flat = keras.Model(inp, layers.Dense(2, activation="softmax")(layers.Flatten()(inp)))
    assert Convnet.variant_of(flat) is None
    assert Convnet.describe_layers(flat) == [
        "InputLayer(505, 1)",
        "Flatten(505)",
        "Dense(2, softmax)",
    ]
    # The same layers with another activation are another network.
    relu = Convnet.Conv1DNet()
    config = relu.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "Dense" and layer["config"]["activation"] == "tanh":
            layer["config"]["activation"] = "relu"
    assert Convnet.variant_of(keras.Model.from_config(config)) is None


def _gradients(model, x, y):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(y, model(x, training=False))
    found = tape.gradient(loss, model.trainable_variables)
    return {v.path: g.numpy().astype(np.float64) for v, g in zip(model.trainable_variables, found)}


def test_bias_gradients_and_tanh_are_float32_under_bfloat16():
    """Under bfloat16, conv2 and conv3 are MixedConv1D (bias, tanh and their gradients in
    float32) and the dense layers float32. Keras' own Conv1D sums the bias gradient over the
    batch and positions in bfloat16 (about 10% off in this network); here every bias gradient
    is within bfloat16's rounding of the float32 network's, on the same weights."""
    import distribute

    keras.utils.set_random_seed(0)
    reference = Convnet.Conv1DNet(variant="no_spatial_dropout")
    rng = np.random.default_rng(0)
    x = rng.random((100, 505, 1), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 100)]
    want = _gradients(reference, x, y)
    with distribute.dtype_policy("mixed_bfloat16"):
        mixed = Convnet.in_current_policy(reference)
        got = _gradients(mixed, x, y)
    assert [type(mixed.get_layer(n)) for n in ("conv2", "conv3")] == [Convnet.MixedConv1D] * 2
    assert all(mixed.get_layer(n).compute_dtype == "float32" for n in ("dense1", "dense3"))
    for path, g in want.items():
        error = np.linalg.norm(got[path] - g) / np.linalg.norm(g)
        assert error < (0.02 if path.endswith("bias") else 0.1), (path, error)

    # tanh in float32 keeps its gradient where bfloat16 would round tanh(5) to exactly 1.
    import tensorflow as tf

    with distribute.dtype_policy("mixed_bfloat16"):
        layer = Convnet.MixedConv1D(1, 1, activation="tanh", bias_initializer="ones")
        inputs = tf.constant([[[4.0], [-6.0], [0.0]]], dtype=tf.bfloat16)
        layer.build(inputs.shape)
        layer.kernel.assign([[[1.0]]])
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = layer(inputs)
    grad = tape.gradient(out, inputs).numpy().astype(np.float32).ravel()
    assert out.dtype == tf.bfloat16 and (grad > 1e-4).all(), grad  # tanh(5), tanh(-5), tanh(1)


def test_a_loaded_model_is_rebuilt_in_the_runs_policy():
    """A saved model keeps the dtype policy it was saved with; in_current_policy gives the same
    network and weights computing in the current one, and leaves a model already in it alone."""
    import distribute

    keras.utils.set_random_seed(0)
    saved = Convnet.Conv1DNet(variant="no_spatial_dropout")
    x = np.random.default_rng(0).random((8, 505, 1), dtype=np.float32)
    assert Convnet.in_current_policy(saved) is saved
    with distribute.dtype_policy("mixed_bfloat16"):
        mixed = Convnet.in_current_policy(saved)
        assert Convnet.in_current_policy(mixed) is mixed
    assert mixed is not saved and Convnet.variant_of(mixed) == "no_spatial_dropout"
    assert mixed.get_layer("conv2").dtype_policy.name == "mixed_bfloat16"
    for name in ("conv1", "dense1", "dense2", "dense3", "output"):
        assert mixed.get_layer(name).dtype_policy.name == "float32"
    for a, b in zip(mixed.get_weights(), saved.get_weights(), strict=True):
        assert a.dtype == np.float32 and np.array_equal(a, b)
    got, want = mixed.predict(x, verbose=0), saved.predict(x, verbose=0)
    assert got.dtype == np.float32 and not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, atol=0.05)
    back = Convnet.in_current_policy(mixed)  # and back to float32
    np.testing.assert_array_equal(back.predict(x, verbose=0), want)
