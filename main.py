"""1D Convolutional Network on Histone Modification Signals: train and test from the command line.

    python main.py --data_dir sample_data --epochs 2        # one model per cell
    python main.py --data_dir sample_data --mix             # one model for all cells
    python main.py --data_dir sample_data --weights logs/RUN/S001/best_model.keras --cells S001

TensorFlow is imported only after the arguments are parsed, so ``-h`` and argument errors
answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib
from pathlib import Path

import data
import distribute

RESULT_COLUMNS = ["cell", "auc", "accuracy", "n_test", "best_epoch"]
NO_DATA_HELP = (
    "the data (56 cell types, Zenodo record 2652278) is not in {data_dir}. Download it from "
    "https://zenodo.org/record/2652278 and unpack it as <data_dir>/<cell>/classification/"
    "{{train,valid,test}}.csv, or try the bundled sample: python main.py --data_dir sample_data"
)


class UsageError(Exception):
    """A bad command line; reported in one line with exit status 2."""


def str2bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """States each default; flags whose default is None explain theirs in their own help."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) and not action.default \
                and action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump: the user asked for -h if they want it.
        raise UsageError(f"{message} (see python main.py -h)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="main.py",
               description="1D Convolutional Network on Histone Modification Signals.",
               formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="training epochs")
    p.add_argument("--batch_size", type=int, default=100,
                   help="genes per training step; global: with several replicas each gets "
                        "its share, so the training maths does not depend on the hardware")
    p.add_argument("--lr", type=float, default=0.001, help="initial learning rate (Adam)")
    p.add_argument("--lr_decay", type=float, default=0.9,
                   help="the learning rate at epoch e is lr * lr_decay**e; "
                        "set a larger value for more epochs")
    p.add_argument("--data_dir", default="./data",
                   help="the data: <data_dir>/<cell>/classification/{train,valid,test}.csv")
    p.add_argument("--debug", action="store_true",
                   help="write weight histograms to the TensorBoard logs (default: off)")
    p.add_argument("--save_dir", default=None,
                   help="where results go (default: a folder under logs/ named after the "
                        "experiment, variant, epochs, batch size, lr and decay)")
    p.add_argument("--mix", type=str2bool, nargs="?", const=True, default=False,
                   help="train one model on all cells pooled, then test it on each cell's "
                        "own test split; a bare --mix or --mix true/false")
    p.add_argument("--cells", default=None,
                   help="comma-separated subset of cells, e.g. E003,E005 (default: all cells "
                        "in data_dir)")
    p.add_argument("--variant", default="full",
                   choices=["full", "no_spatial_dropout", "no_additional_features"],
                   help="the paper's model (full), without spatial dropout (the released "
                        "code), or without the 5 additional features (input length 500)")
    p.add_argument("--monitor", default="val_accuracy", choices=["val_accuracy", "val_auc"],
                   help="validation metric that picks the best epoch (the checkpoint tested)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed every source of randomness and make TensorFlow's ops "
                        "deterministic, for reproducible runs (default: a random seed, "
                        "recorded in args.json)")
    p.add_argument("--weights", default=None,
                   help="test a saved model without training: a .keras file (used for every "
                        "chosen cell) or a run folder (its mixed model, or each cell's own); "
                        "default: none, train new models")
    p.add_argument("--overwrite", action="store_true",
                   help="allow writing into a save_dir that holds an earlier run's results "
                        "(default: off)")
    hw = p.add_argument_group("bigger hardware (README: Bigger hardware)")
    hw.add_argument("--distribute", default="none", choices=distribute.STRATEGIES,
                    help="none: one device (the first GPU, else the CPU); mirrored: one "
                         "replica per local GPU (tf.distribute.MirroredStrategy); multiworker: "
                         "one process per machine, the cluster from the TF_CONFIG environment "
                         "variable (tf.distribute.MultiWorkerMirroredStrategy), the chief alone "
                         "writing results")
    hw.add_argument("--devices", default=None,
                    help="with --distribute mirrored, the devices to use, e.g. GPU:0,GPU:2; "
                         "CPU:0,CPU:1 splits the CPU into logical devices (tests and demos, "
                         "not faster) (default: every local GPU, else the CPU)")
    hw.add_argument("--scale_lr", action="store_true",
                    help="multiply --lr by the number of replicas (the linear scaling rule, "
                         "for a --batch_size raised as much) (default: off)")
    hw.add_argument("--mixed_precision", nargs="?", const="auto", default="off",
                    choices=distribute.PRECISIONS,
                    help="compute in float16 or bfloat16, the output layer and the weights "
                         "in float32; a bare --mixed_precision means float16 on a GPU, "
                         "bfloat16 on a CPU")
    hw.add_argument("--jit", action="store_true",
                    help="compile the training steps with XLA; not with --seed, whose "
                         "deterministic ops exclude XLA (default: off)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if not 0 < args.lr_decay <= 1:
        raise UsageError(f"--lr_decay must be in (0, 1], got {args.lr_decay}")
    if args.jit and args.seed is not None:
        raise UsageError("--jit cannot be combined with --seed: TensorFlow's deterministic "
                         "ops exclude XLA")
    try:
        distribute.check_args(args)
    except distribute.DeviceError as e:
        raise UsageError(str(e)) from None
    if args.weights and not Path(args.weights).exists():
        raise UsageError(f"--weights {args.weights}: no such file or folder")
    if args.save_dir is None:
        # A default folder never collides with an earlier run: -2, -3, ... are appended.
        base = Path("logs") / default_run_name(args)
        save, n = base, 1
        while holds_results(save):
            n += 1
            save = base.with_name(f"{base.name}-{n}")
        args.save_dir = str(save)
    return args


def holds_results(save: Path) -> list[str]:
    """Names of an earlier run's record files in ``save``."""
    return [p.name for p in (save / "args.json", save / "output.csv", save / "output-mix.csv")
            if p.exists()]


def default_run_name(args) -> str:
    if args.weights:
        w = Path(args.weights)
        return f"test-{w.parent.name}-{w.stem}" if w.is_file() else f"test-{w.name}"
    experiment = "mix" if args.mix else "percell"
    return (f"{experiment}-{args.variant}-e{args.epochs}-b{args.batch_size}"
            f"-lr{args.lr:g}-d{args.lr_decay:g}")


# ---------------------------------------------------------------------------------------------
# Writing results


def write_json(path: Path, obj) -> None:
    from utils import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def write_table(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    from utils import write_csv

    write_csv(path, pd.DataFrame(rows, columns=RESULT_COLUMNS))


def write_predictions(folder: Path, split, proba) -> None:
    import pandas as pd

    from utils import write_csv

    write_csv(folder / "predictions.csv",
              pd.DataFrame({"gene_id": split.ids, "label": split.labels, "probability": proba}))


def test_cell(model, cell: str, split, folder: Path, best_epoch) -> dict:
    """Test on one cell's test split; write predictions.csv and roc.png; return a results row."""
    import Convnet
    from utils import plot_roc

    folder.mkdir(parents=True, exist_ok=True)
    res = Convnet.test(model, split.x, split.y)
    write_predictions(folder, split, res["proba"])
    plot_roc(split.labels, res["proba"], folder / "roc.png",
             title=f"{cell}: test ROC (n = {res['n']})")
    return {"cell": cell, "auc": res["auc"], "accuracy": res["accuracy"], "n_test": res["n"],
            "best_epoch": best_epoch}


def train_model(args, train, valid, folder: Path, seed: int):
    """Train a fresh network, draw its curves, and return (best model, best epoch)."""
    import keras

    import Convnet
    from utils import plot_log

    keras.utils.set_random_seed(seed)  # initial weights, then shuffling and dropout
    # Weights, optimizer and metrics are created under the strategy and dtype policy.
    with distribute.scope(args, args.strategy):
        model = Convnet.Conv1DNet(train.x.shape[1:], variant=args.variant)
        fit = Convnet.train(model, (train.x, train.y), (valid.x, valid.y), str(folder),
                            epochs=args.epochs, batch_size=args.batch_size,
                            lr=distribute.learning_rate(args, args.strategy),
                            lr_decay=args.lr_decay, monitor=args.monitor, debug=args.debug,
                            seed=seed, jit_compile=args.jit)
    plot_log(folder)
    return Convnet.load_model(fit.best_model_path), fit.best_epoch


# ---------------------------------------------------------------------------------------------
# The experiments


def run_per_cell(args, cells: list[str], save: Path, table: Path) -> list[dict]:
    import keras

    rows = []
    for i, cell in enumerate(cells, 1):
        print(f"Cell {i}/{len(cells)}: {cell}", flush=True)
        start = time.time()
        c = data.load_cell(Path(args.data_dir) / cell, additional_features=args.features)
        keras.backend.clear_session()  # a fresh graph per cell keeps memory flat over 56 cells
        # A seed per cell: a cell's result depends on the run's seed and the cell alone,
        # not on which other cells the run includes.
        seed = (args.seed + zlib.crc32(cell.encode())) % 2**31
        model, best_epoch = train_model(args, c.train, c.valid, save / cell, seed)
        row = test_cell(model, cell, c.test, save / cell, best_epoch)
        rows.append(row)
        write_table(table, rows)  # after every cell: a stopped run keeps what finished
        print(f"Cell {cell}: test AUC {row['auc']:.4f}, accuracy {row['accuracy']:.4f}, "
              f"best epoch {best_epoch}, {time.time() - start:.0f}s", flush=True)
    return rows


def run_mix(args, cells: list[str], save: Path, table: Path) -> list[dict]:
    mix = data.load_data_mix(args.data_dir, cells, seed=args.seed,
                             additional_features=args.features)
    print(f"Mixed: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation genes "
          f"pooled from {len(cells)} cells", flush=True)
    model, best_epoch = train_model(args, mix.train, mix.valid, save, args.seed)
    rows = []
    for i, cell in enumerate(cells, 1):
        row = test_cell(model, cell, mix.tests[cell], save / cell, best_epoch)
        rows.append(row)
        print(f"Cell {i}/{len(cells)}: {cell}: test AUC {row['auc']:.4f}, "
              f"accuracy {row['accuracy']:.4f}", flush=True)
    write_table(table, rows)
    return rows


def load_saved_model(path: Path):
    import Convnet

    try:
        model = Convnet.load_model(str(path))
    except Exception as e:  # Keras raises many types for a bad or foreign file
        raise UsageError(f"{path}: cannot load as a Keras model "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    shape = tuple(model.input_shape[1:])
    if shape not in ((505, 1), (500, 1)) or tuple(model.output_shape[1:]) != (2,):
        raise UsageError(f"{path}: not this project's network (input {shape}, "
                         f"output {model.output_shape[1:]})")
    return model


def run_weights(args, cells: list[str], save: Path, table: Path) -> list[dict]:
    """Test saved model(s) on each chosen cell's test split, without training."""
    weights = Path(args.weights)

    def model_for(cell):
        if weights.is_file():
            return weights
        for candidate in (weights / "best_model.keras", weights / cell / "best_model.keras"):
            if candidate.is_file():
                return candidate
        raise UsageError(f"{weights}: no best_model.keras for cell {cell}")

    rows, loaded = [], {}
    for i, cell in enumerate(cells, 1):
        path = model_for(cell)
        if path not in loaded:
            loaded = {path: load_saved_model(path)}  # keep one model in memory at a time
        model = loaded[path]
        features = model.input_shape[1] == data.input_length(True)
        split = data.load_cell(Path(args.data_dir) / cell, additional_features=features).test
        row = test_cell(model, cell, split, save / cell, None)
        rows.append(row)
        write_table(table, rows)
        print(f"Cell {i}/{len(cells)}: {cell}: test AUC {row['auc']:.4f} ({path})", flush=True)
    return rows


def prepare_save_dir(args) -> tuple[Path, Path]:
    save = Path(args.save_dir)
    name = "output-mix.csv" if args.mix else "output.csv"
    earlier = holds_results(save)
    if earlier and not args.overwrite:
        raise UsageError(f"{save} already holds an earlier run ({', '.join(earlier)}); "
                         "choose another --save_dir or pass --overwrite")
    save.mkdir(parents=True, exist_ok=True)
    return save, save / name


def worker_save_dir(args) -> tuple[Path, Path]:
    """A worker other than the chief trains in step with it but writes nothing into save_dir:
    its logs, models and tables go to a temporary folder, deleted when it exits."""
    import atexit
    import shutil
    import tempfile

    save = Path(tempfile.mkdtemp(prefix="worker-"))
    atexit.register(shutil.rmtree, save, ignore_errors=True)
    return save, save / ("output-mix.csv" if args.mix else "output.csv")


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        data_dir = Path(args.data_dir)
        if not data_dir.is_dir():
            raise data.DataError(NO_DATA_HELP.format(data_dir=data_dir))
        cells = data.select_cells(data_dir, args.cells)
        args.features = args.variant != "no_additional_features"
        # Parse and check every file before TensorFlow starts, so bad data fails in seconds,
        # not after hours of training, and leaves no empty save folder behind; the parsed
        # arrays are cached for the run itself.
        for cell in cells:
            data.load_cell(data_dir / cell, additional_features=args.features)
        save, table = prepare_save_dir(args) if args.chief else worker_save_dir(args)
    except (UsageError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # TensorFlow's C++ start-up chatter (and harmless graph-version notices) hide the epoch lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        args.strategy = distribute.setup(args)  # before any other TensorFlow op
    except distribute.DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        if args.chief and not any(save.iterdir()):
            save.rmdir()
        return 2
    tf.get_logger().setLevel("ERROR")  # retracing notices from predicting splits of new sizes

    import Convnet
    from utils import plot_model

    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
        tf.config.experimental.enable_op_determinism()
    else:
        args.seed = int(np.random.SeedSequence().entropy % 2**31)  # recorded, for the split
    args.seed = distribute.shared_seed(args.strategy, args.seed)
    print(f"Devices: {distribute.describe(args, args.strategy)}; "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}", flush=True)
    if args.chief:
        print(f"Saving to {save}", flush=True)
    else:
        print(f"Not the chief: results go to {args.save_dir} from the chief; this worker's "
              f"files go to {save}, deleted at exit (seed {args.seed})", flush=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("features", "chief", "strategy")}
    settings["cells"] = cells
    write_json(save / "args.json", settings)
    if not args.weights:
        plot_model(Convnet.Conv1DNet(variant=args.variant), save / "model.png")

    experiment = run_weights if args.weights else run_mix if args.mix else run_per_cell
    try:
        rows = experiment(args, cells, save, table)
    except (UsageError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    aucs = np.array([r["auc"] for r in rows], dtype=float)
    print(f"Results: {table}: {len(rows)} cells, mean AUC {np.nanmean(aucs):.4f}, "
          f"median AUC {np.nanmedian(aucs):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
