"""What the paper's network looks like when it stalls (issue 15, item 2): one generated full-size
cell, several seeds of the per-cell protocol's first epochs, and per run the network's insides.

    python bench/stall_anatomy.py                    # 10 seeds x 2 epochs, full size
    python bench/stall_anatomy.py --seeds 0-3 --epochs 1 --genes 600   # a quick look

Each run is the protocol of experiments.train_model (seed, Conv1DNet, Convnet.train) with the
cell seed given; after each epoch it records, on 1,000 validation genes in inference mode:
val AUC, the spread of the softmax's class-1 probability (its standard deviation over genes:
near 0 means the network answers the same for every gene), the fraction of saturated tanh units
(|activation| > 0.99) in each tanh layer, and the gradient norm of each layer's kernel on one
training batch of 100 genes. With --swap, it also trains each stalled seed's initial weights
with a learning seed's batch order and dropout (and the reverse), to tell whether a stall is
set by the initial weights or by what happens during training.

It prints a Markdown table per run and a summary; nothing is written unless --out is given.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
import synth  # noqa: E402

TANH_LAYERS = ("conv1", "conv2", "conv3", "dense1", "dense2", "dense3")
KERNELS = ("conv1", "conv2", "conv3", "dense1", "dense2", "dense3", "output")


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(s) for s in text.split(",")]


def inside(model, valid, train, tf):
    """Softmax spread, tanh saturation per layer (validation, inference) and kernel gradient
    norms per layer (one training batch, training mode)."""
    import keras

    x = valid[0][:1000]
    names = list(TANH_LAYERS)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names] + [model.output])
    outs = probe.predict(x, batch_size=500, verbose=0)
    saturated = {n: float(np.mean(np.abs(a) > 0.99)) for n, a in zip(names, outs[:-1])}
    p1 = outs[-1][:, 1]
    xb = tf.constant(train[0][:100])
    yb = tf.constant(train[1][:100])
    with tf.GradientTape() as tape:
        pred = model(xb, training=True)
        loss = keras.losses.categorical_crossentropy(yb, pred)
        loss = tf.reduce_mean(loss)
    kernels = [model.get_layer(n).kernel for n in KERNELS]
    grads = tape.gradient(loss, kernels)
    norms = {n: float(tf.norm(g)) for n, g in zip(KERNELS, grads)}
    return float(np.std(p1)), float(np.mean(p1)), saturated, norms


def run(cell, seed, train_seed, epochs, lr, tf, keras, Convnet, roc_auc):
    """Train like experiments.train_model; the initial weights come from ``seed`` and the batch
    order and dropout from ``train_seed``. Returns one row per epoch (epoch 0: before)."""
    keras.utils.set_random_seed(seed)
    model = Convnet.Conv1DNet()
    Convnet.compile_model(model, lr)
    train, valid = (cell.train.x, cell.train.y), (cell.valid.x, cell.valid.y)
    rows = []

    def record(epoch, loss):
        spread, mean, sat, norms = inside(model, valid, train, tf)
        auc = roc_auc(valid[1], Convnet.predict_proba(model, valid[0]))
        rows.append(dict(epoch=epoch, loss=loss, val_auc=auc, p1_std=spread, p1_mean=mean,
                         **{f"sat_{k}": v for k, v in sat.items()},
                         **{f"grad_{k}": v for k, v in norms.items()}))  # fmt: skip

    record(0, float("nan"))
    keras.utils.set_random_seed(train_seed)
    for epoch in range(epochs):
        model.optimizer.learning_rate.assign(lr * 0.9**epoch)
        hist = model.fit(train[0], train[1], batch_size=100, epochs=1, shuffle=True, verbose=0)
        record(epoch + 1, float(hist.history["loss"][0]))
    return rows


def table(rows, title):
    cols = ["epoch", "loss", "val_auc", "p1_std", "p1_mean"]
    cols += [f"sat_{k}" for k in TANH_LAYERS] + [f"grad_{k}" for k in KERNELS]
    out = [f"**{title}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{r[c]:.3g}" if c != "epoch" else str(r[c]) for c in cols))
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0-9", help="cell seeds, e.g. 0-9 or 3,7 [%(default)s]")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run [%(default)s]")
    p.add_argument("--genes", type=int, default=6601, help="genes per split [%(default)s]")
    p.add_argument("--noise", type=float, default=0.9, help="the cell's noise [%(default)s]")
    p.add_argument("--lr", type=float, default=0.001, help="learning rate [%(default)s]")
    p.add_argument("--swap", action="store_true", help="also swap init and training seeds")
    p.add_argument("--out", default=None, help="write the report here (Markdown)")
    args = p.parse_args(argv)

    import keras
    import tensorflow as tf

    import Convnet
    from roc_auc_callback import roc_auc

    tf.get_logger().setLevel("ERROR")
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        synth.synthesize(tmp, n_genes=args.genes, seed=0, names=["S001"], noise=args.noise)
        cell = data.load_cell(Path(tmp) / "S001", cache=False)
    report = [
        f"Cell: generated, {args.genes} genes per split, noise {args.noise}, data seed 0; "
        f"lr {args.lr}, decay 0.9, batch 100; TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}.\n"
    ]
    finals = {}
    for seed in seeds_of(args.seeds):
        rows = run(cell, seed, seed, args.epochs, args.lr, tf, keras, Convnet, roc_auc)
        finals[seed] = rows[-1]["val_auc"]
        report.append(table(rows, f"seed {seed}"))
        print(report[-1], flush=True)
    stalled = [s for s, a in finals.items() if a < 0.6]
    learned = [s for s, a in finals.items() if a >= 0.6]
    summary = (
        f"After {args.epochs} epoch(s): {len(stalled)} of {len(finals)} seeds below val AUC 0.6 "
        f"(stalled: {stalled or 'none'}; learned: {learned or 'none'})."
    )
    report.append(summary + "\n")
    print(summary, flush=True)
    if args.swap and stalled and learned:
        good = learned[0]
        for bad in stalled[:3]:
            for init, order in ((bad, good), (good, bad)):
                rows = run(cell, init, order, args.epochs, args.lr, tf, keras, Convnet, roc_auc)
                title = f"initial weights of seed {init}, batch order and dropout of seed {order}"
                report.append(table(rows, title))
                print(report[-1], flush=True)
    report.append(f"Wall time {time.time() - start:.0f} s.\n")
    if args.out:
        Path(args.out).write_text("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
