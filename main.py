"""1D Convolutional Network on Histone Modification Signals: train and test from the command line.

    python main.py --data_dir sample_data --epochs 2        # one model per cell
    python main.py --data_dir sample_data --mix             # one model for all cells
    python main.py --data_dir sample_data --weights logs/RUN/S001/best_model.keras --cells S001

TensorFlow is imported only after the arguments are parsed, so ``-h`` and argument errors
answer at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
import zlib
from pathlib import Path

import data
import distribute

RESULT_COLUMNS = ["cell", "auc", "accuracy", "n_test", "best_epoch"]
# Fine-tuning: per cell, the mixed model alone and the same model fine-tuned on the cell.
FINETUNE_COLUMNS = ["cell", "auc_mixed", "auc_finetuned", "accuracy_mixed",
                    "accuracy_finetuned", "n_test", "best_epoch_mixed", "best_epoch_finetuned"]
TABLES = ("output.csv", "output-mix.csv", "output-finetune.csv")
# Settings that may change between a run and its --resume: where things go and what is
# logged, not what is computed.
RESUME_FREE = {"save_dir", "resume", "overwrite", "debug", "max_memory", "distribute",
               "devices"}
# Training outputs of the mixed model in the run folder, removed before it is trained again.
MIX_TRAINING_FILES = ("log.csv", "log.png", "best_model.keras", "final_model.keras",
                      "tensorboard", "trained.json")
NO_DATA_HELP = (
    "the data (56 cell types, https://zenodo.org/record/2652278) is not in {data_dir}. Get it "
    "with: python data.py download --data_dir {data_dir} (downloads, verifies and unpacks it; "
    "resumes if interrupted), or try the bundled sample: python main.py --data_dir sample_data"
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
    p.add_argument("--finetune", action="store_true",
                   help="after the mixed model is trained, start from it for each cell and "
                        "train on that cell's own train split (validated on its valid split), "
                        "then test both models on the cell's test split; implies --mix; with "
                        "--weights, start from that saved mixed model instead (default: off)")
    p.add_argument("--finetune_epochs", type=int, default=10, help="fine-tuning epochs")
    p.add_argument("--finetune_lr", type=float, default=0.0001,
                   help="fine-tuning's initial learning rate, decayed by --lr_decay per epoch")
    p.add_argument("--freeze_conv", action="store_true",
                   help="keep the three convolution layers as pre-trained while fine-tuning; "
                        "only the dense layers learn (default: off)")
    p.add_argument("--holdout_cell", default=None,
                   help="leave one out: pre-train on all chosen cells but this one, then "
                        "fine-tune and test on it alone; implies --finetune (default: none)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --save_dir: cells already in its results table "
                        "are kept, an interrupted cell is redone; flags not given are taken "
                        "from its args.json, flags given must match it (default: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a save_dir that holds an earlier run, replacing its "
                        "results (default: off)")
    p.add_argument("--max_memory", type=float, default=None,
                   help="GiB the mixed experiment may use; it refuses to start when its "
                        "estimate is larger; 0 turns the check off (default: the memory "
                        "available when the run starts)")
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
    for name in ("epochs", "batch_size", "finetune_epochs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.lr > 0:
        raise UsageError(f"--lr must be positive, got {args.lr}")
    if not args.finetune_lr > 0:
        raise UsageError(f"--finetune_lr must be positive, got {args.finetune_lr}")
    if not 0 < args.lr_decay <= 1:
        raise UsageError(f"--lr_decay must be in (0, 1], got {args.lr_decay}")
    if args.max_memory is not None and args.max_memory < 0:
        raise UsageError(f"--max_memory must be positive (or 0: no check), got {args.max_memory}")
    if args.holdout_cell:
        args.finetune = True
    if args.freeze_conv and not args.finetune:
        raise UsageError("--freeze_conv applies to fine-tuning: add --finetune")
    if args.finetune:
        args.mix = True
    if args.jit and args.seed is not None:
        raise UsageError("--jit cannot be combined with --seed: TensorFlow's deterministic "
                         "ops exclude XLA")
    # Recorded in args.json: a run without --seed still records the seed it drew, but its
    # resumption must not turn deterministic ops on.
    args.deterministic = args.seed is not None
    try:
        distribute.check_args(args)
    except distribute.DeviceError as e:
        raise UsageError(str(e)) from None
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.resume:
        if args.save_dir is None:
            raise UsageError("--resume needs --save_dir, the folder of the run to resume")
        adopt_recorded_settings(args, argv)
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


def explicit_flags(argv) -> set[str]:
    """Destinations of the flags given on the command line (not left at their defaults)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_known_args(argv)[0]))


def _same(key: str, given, recorded) -> bool:
    if key in ("data_dir", "weights"):
        return (given is None) == (recorded is None) and (
            given is None or Path(given).resolve() == Path(recorded).resolve())
    if key == "cells":
        return [c.strip() for c in str(given).split(",") if c.strip()] == list(recorded or [])
    if isinstance(recorded, float) or isinstance(given, float):
        return recorded is not None and float(given) == float(recorded)
    return given == recorded


def adopt_recorded_settings(args, argv) -> None:
    """For --resume: take the run's settings from its args.json; refuse flags that differ."""
    save = Path(args.save_dir)
    if not args.chief and not (save / "args.json").exists():
        return  # another machine's worker: the chief's settings arrive through TensorFlow
    try:
        recorded = json.loads((save / "args.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{save}: no args.json, so no run to resume there") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{save / 'args.json'}: cannot read the run's settings ({e})") from None
    given = explicit_flags(sys.argv[1:] if argv is None else argv)
    differ = [f"--{k} {getattr(args, k)} (the run has {recorded[k]})"
              for k in sorted(given - RESUME_FREE)
              if k in recorded and not _same(k, getattr(args, k), recorded[k])]
    if differ:
        raise UsageError(f"cannot resume {save}: settings differ from its args.json: "
                         f"{'; '.join(differ)}; resume without them, or start a new run")
    for key, value in recorded.items():
        if key in given or key in RESUME_FREE or not hasattr(args, key):
            continue
        setattr(args, key, ",".join(value) if key == "cells" and value else value)


def resume_command(save: Path) -> str:
    return f"python main.py --save_dir {shlex.quote(str(save))} --resume"


def holds_results(save: Path) -> list[str]:
    """Names of an earlier run's record files in ``save``."""
    return [p.name for p in [save / "args.json", *(save / t for t in TABLES)] if p.exists()]


def default_run_name(args) -> str:
    if args.weights and not args.finetune:
        w = Path(args.weights)
        return f"test-{w.parent.name}-{w.stem}" if w.is_file() else f"test-{w.name}"
    experiment = ("percell" if not args.mix else "mix" if not args.finetune
                  else f"loo-{args.holdout_cell}" if args.holdout_cell else "finetune")
    name = (f"{experiment}-{args.variant}-e{args.epochs}-b{args.batch_size}"
            f"-lr{args.lr:g}-d{args.lr_decay:g}")
    if args.finetune:
        name += (f"-fe{args.finetune_epochs}-flr{args.finetune_lr:g}"
                 f"{'-frozen' if args.freeze_conv else ''}")
    if args.weights:
        w = Path(args.weights)
        name += f"-from-{w.parent.name if w.is_file() else w.name}"
    return name


# ---------------------------------------------------------------------------------------------
# Writing results


def write_json(path: Path, obj) -> None:
    from utils import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2) + "\n"))


def write_table(path: Path, rows: list[dict], columns=RESULT_COLUMNS) -> None:
    import pandas as pd

    from utils import write_csv

    write_csv(path, pd.DataFrame(rows, columns=columns))


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


def train_model(args, train, valid, folder: Path, seed: int, start=None, epochs=None,
                lr=None):
    """Train a fresh network (or continue `start`, a model file), draw its curves, and return
    (best model, best epoch)."""
    import keras

    import Convnet
    from utils import plot_log

    keras.utils.set_random_seed(seed)  # initial weights, then shuffling and dropout
    # Weights, optimizer and metrics are created under the strategy and dtype policy.
    with distribute.scope(args, args.strategy):
        if start is None:
            model = Convnet.Conv1DNet(train.x.shape[1:], variant=args.variant)
        else:
            model = Convnet.load_model(str(start))
            if args.freeze_conv:
                for layer in model.layers:
                    layer.trainable = not isinstance(layer, keras.layers.Conv1D)
        # --scale_lr scales the fine-tuning rate as it scales --lr.
        scale = distribute.learning_rate(args, args.strategy) / args.lr
        fit = Convnet.train(model, (train.x, train.y), (valid.x, valid.y), str(folder),
                            epochs=epochs or args.epochs, batch_size=args.batch_size,
                            lr=(lr or args.lr) * scale, lr_decay=args.lr_decay,
                            monitor=args.monitor, debug=args.debug, seed=seed,
                            jit_compile=args.jit, callbacks=[STOP.callback()])
    plot_log(folder)
    return Convnet.load_model(fit.best_model_path), fit.best_epoch


# ---------------------------------------------------------------------------------------------
# The experiments


def read_table(path: Path) -> dict[str, dict]:
    """The rows of a results table, by cell ({} when there is none yet)."""
    import pandas as pd

    if not path.exists():
        return {}
    rows = pd.read_csv(path, dtype={"cell": str}, keep_default_na=False, na_values=[""])
    rows = rows.astype(object).where(rows.notna(), None)
    return {r["cell"]: r for r in rows.to_dict("records")}


class Results:
    """A run's results table, rewritten (atomically) as each cell finishes, rows in cell order.

    A cell is finished exactly when its row is in the table: its other files are written first.
    """

    def __init__(self, path: Path, cells: list[str], resume: bool, columns=RESULT_COLUMNS):
        self.path, self.cells, self.columns = path, cells, columns
        self.rows = {c: r for c, r in read_table(path).items() if c in cells} if resume else {}

    def done(self, cell: str) -> bool:
        return cell in self.rows

    def add(self, row: dict) -> None:
        self.rows[row["cell"]] = row
        write_table(self.path, [self.rows[c] for c in self.cells if c in self.rows],
                    self.columns)

    def values(self) -> list[dict]:
        return [self.rows[c] for c in self.cells if c in self.rows]


def cell_seed(args, cell: str) -> int:
    # A seed per cell: a cell's result depends on the run's seed and the cell alone, not on
    # which other cells the run includes.
    return (args.seed + zlib.crc32(cell.encode())) % 2**31


def unfinished_cells(args, cells: list[str], save: Path, results: Results, doing=""):
    """Yield (cell, its data, start time) for each cell not finished yet; finished ones are
    announced and skipped, and what an interrupted attempt left (its row never reached the
    table) is removed first."""
    import keras

    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            print(f"Cell {i}/{len(cells)}: {cell}: finished earlier, kept", flush=True)
            continue
        STOP.check()
        print(f"Cell {i}/{len(cells)}: {cell}{doing}", flush=True)
        start = time.time()
        shutil.rmtree(save / cell, ignore_errors=True)
        c = data.load_cell(Path(args.data_dir) / cell, additional_features=args.features)
        STOP.check()
        keras.backend.clear_session()  # a fresh graph per cell keeps memory flat over 56 cells
        yield cell, c, start


def run_per_cell(args, cells: list[str], save: Path, results: Results) -> None:
    for cell, c, start in unfinished_cells(args, cells, save, results):
        model, best_epoch = train_model(args, c.train, c.valid, save / cell, cell_seed(args, cell))
        row = test_cell(model, cell, c.test, save / cell, best_epoch)
        results.add(row)  # after every cell: a stopped run keeps what finished
        print(f"Cell {cell}: test AUC {row['auc']:.4f}, accuracy {row['accuracy']:.4f}, "
              f"best epoch {best_epoch}, {time.time() - start:.0f}s", flush=True)
        if row["auc"] < 0.6 and len(c.train.ids) >= 1000:
            # The tanh network sometimes stays at chance on one cell (seen on generated data):
            # say so rather than let it pass as that cell's result.
            print(f"warning: {cell}'s model barely learned (test AUC {row['auc']:.3f}); its "
                  "training may have stalled: look at its log.png, or train it again with "
                  "another --seed", file=sys.stderr, flush=True)


def mixed_memory_check(args, cells: list[str]) -> None:
    """Refuse the mixed experiment before loading it when it would not fit in memory."""
    need = data.mixed_bytes(args.data_dir, cells, additional_features=args.features)
    # Training holds the pooled arrays plus TensorFlow's own copy of the batch pipeline's
    # source (measured: about one more copy of the training arrays) and the framework itself.
    need = int(need * 2 + 1.5 * 2**30)
    limit = args.max_memory * 2**30 if args.max_memory is not None else available_memory()
    if limit and need > limit:
        where = "--max_memory" if args.max_memory is not None else "available memory"
        raise UsageError(
            f"the mixed experiment on {len(cells)} cells needs about {need / 2**30:.1f} GiB, "
            f"more than the {limit / 2**30:.1f} GiB of {where}; choose fewer cells with "
            "--cells, or override with --max_memory GIB (0: no check)")


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((cg / "memory.current").read_text())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def train_mixed(args, mix, save: Path, cells: list[str]) -> int:
    """Train the mixed model into save/best_model.keras unless a resumed run already did;
    return its best epoch. save/trained.json records that training finished."""
    marker = save / "trained.json"
    if getattr(args, "chief_trained", False):  # a worker: the chief's model is finished
        return None
    if args.resume and marker.exists() and (save / "best_model.keras").exists():
        best_epoch = json.loads(marker.read_text())["best_epoch"]
        print(f"Mixed model trained earlier (best epoch {best_epoch}), kept", flush=True)
        return best_epoch
    for name in MIX_TRAINING_FILES:  # an interrupted training's remains
        path = save / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    _, best_epoch = train_model(args, mix.train, mix.valid, save, args.seed)
    write_json(marker, {"best_epoch": best_epoch, "cells": cells,
                        "genes": {"train": len(mix.train.ids), "valid": len(mix.valid.ids)}})
    return best_epoch


def run_finetune(args, cells: list[str], save: Path, results: Results) -> None:
    """Pre-train the mixed model (or take --weights), then per cell: test it, fine-tune it on
    the cell's own train/valid splits, and test the fine-tuned model. With --holdout_cell the
    pre-training pool leaves that cell out and only that cell is fine-tuned."""
    import Convnet

    targets = [args.holdout_cell] if args.holdout_cell else cells
    if all(results.done(c) for c in targets):
        return
    if args.weights:
        weights = Path(args.weights)
        pretrained = weights if weights.is_file() else weights / "best_model.keras"
        if not pretrained.is_file():
            raise UsageError(f"{weights}: no best_model.keras (a mixed run's folder, or a "
                             ".keras file, is needed to fine-tune from)")
        load_saved_model(pretrained)  # refuse a foreign model before any training
        marker = pretrained.parent / "trained.json"
        best_mixed = json.loads(marker.read_text()).get("best_epoch") if marker.exists() else None
    else:
        pool = pretraining_cells(args, cells)
        mix = data.load_data_mix(args.data_dir, pool, seed=args.seed,
                                 additional_features=args.features, tests=False)
        STOP.check()
        print(f"Pre-training: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation "
              f"genes pooled from {len(pool)} cells", flush=True)
        best_mixed = train_mixed(args, mix, save, pool)
        del mix  # the pooled arrays are not needed for fine-tuning
        pretrained = save / "best_model.keras"
        if getattr(args, "chief_trained", False):
            # A worker resuming with the chief: it needs the chief's pre-trained model.
            pretrained = Path(args.save_dir) / "best_model.keras"
            if not pretrained.is_file():
                raise UsageError(f"{pretrained}: this worker needs the chief's pre-trained "
                                 "model: put --save_dir on a shared file system")
    for cell, c, start in unfinished_cells(args, targets, save, results, ": fine-tuning"):
        mixed = test_cell(Convnet.load_model(str(pretrained)), cell, c.test,
                          save / cell / "mixed", best_mixed)
        model, best_epoch = train_model(args, c.train, c.valid, save / cell,
                                        cell_seed(args, cell), start=pretrained,
                                        epochs=args.finetune_epochs, lr=args.finetune_lr)
        tuned = test_cell(model, cell, c.test, save / cell, best_epoch)
        results.add({"cell": cell, "auc_mixed": mixed["auc"], "auc_finetuned": tuned["auc"],
                     "accuracy_mixed": mixed["accuracy"], "accuracy_finetuned": tuned["accuracy"],
                     "n_test": tuned["n_test"], "best_epoch_mixed": best_mixed,
                     "best_epoch_finetuned": best_epoch})
        print(f"Cell {cell}: test AUC mixed {mixed['auc']:.4f}, fine-tuned {tuned['auc']:.4f}, "
              f"best epoch {best_epoch}, {time.time() - start:.0f}s", flush=True)


def pretraining_cells(args, cells: list[str]) -> list[str]:
    """The cells whose train and valid splits pre-train the model: all but a held-out one."""
    pool = [c for c in cells if c != args.holdout_cell]
    if not pool:
        raise UsageError(f"--holdout_cell {args.holdout_cell} leaves no cell to pre-train on")
    return pool


def run_mix(args, cells: list[str], save: Path, results: Results) -> None:
    import Convnet

    todo = [c for c in cells if not results.done(c)]
    if not todo:
        return
    mix = data.load_data_mix(args.data_dir, cells, seed=args.seed,
                             additional_features=args.features)
    STOP.check()
    print(f"Mixed: {len(mix.train.ids)} train / {len(mix.valid.ids)} validation genes "
          f"pooled from {len(cells)} cells", flush=True)
    best_epoch = train_mixed(args, mix, save, cells)
    if not args.chief:
        return  # testing involves no other worker: the chief's alone
    model = Convnet.load_model(str(save / "best_model.keras"))
    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            continue
        STOP.check()
        row = test_cell(model, cell, mix.tests[cell], save / cell, best_epoch)
        results.add(row)
        print(f"Cell {i}/{len(cells)}: {cell}: test AUC {row['auc']:.4f}, "
              f"accuracy {row['accuracy']:.4f}", flush=True)


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


def run_weights(args, cells: list[str], save: Path, results: Results) -> None:
    """Test saved model(s) on each chosen cell's test split, without training."""
    weights = Path(args.weights)

    def model_for(cell):
        if weights.is_file():
            return weights
        for candidate in (weights / "best_model.keras", weights / cell / "best_model.keras"):
            if candidate.is_file():
                return candidate
        raise UsageError(f"{weights}: no best_model.keras for cell {cell}")

    loaded = {}
    for i, cell in enumerate(cells, 1):
        if results.done(cell):
            continue
        STOP.check()
        path = model_for(cell)
        if path not in loaded:
            loaded = {path: load_saved_model(path)}  # keep one model in memory at a time
        model = loaded[path]
        features = model.input_shape[1] == data.input_length(True)
        split = data.load_cell(Path(args.data_dir) / cell, additional_features=features).test
        row = test_cell(model, cell, split, save / cell, None)
        results.add(row)
        print(f"Cell {i}/{len(cells)}: {cell}: test AUC {row['auc']:.4f} ({path})", flush=True)


def table_name(args) -> str:
    return TABLES[2] if args.finetune else TABLES[1] if args.mix else TABLES[0]


def share_resume_state(args, cells: list[str], save: Path, results: Results) -> None:
    """Under several workers, give every worker the chief's view of a resumed run (finished
    cells, a finished mixed model), so all of them train the same models in step."""
    if args.distribute != "multiworker" or distribute.workers() < 2:
        return
    flags = [results.done(c) for c in cells] + [(save / "trained.json").exists()]
    flags = distribute.chief_values(args.strategy, flags)
    if not args.chief:
        results.rows = {c: {"cell": c} for c, done in zip(cells, flags) if done}
        args.chief_trained = bool(flags[-1])


def prepare_save_dir(args) -> tuple[Path, Path]:
    save = Path(args.save_dir)
    name = table_name(args)
    earlier = holds_results(save)
    if earlier and not (args.overwrite or args.resume):
        raise UsageError(f"{save} already holds an earlier run ({', '.join(earlier)}); "
                         "continue it with --resume, replace it with --overwrite, or choose "
                         "another --save_dir")
    try:
        save.mkdir(parents=True, exist_ok=True)
        if args.overwrite:
            for p in [save / "trained.json", *(save / t for t in TABLES)]:
                p.unlink(missing_ok=True)
    except OSError as e:
        raise UsageError(f"{save}: cannot create the save folder ({e.strerror})") from None
    return save, save / name


# An INFO line of TensorFlow's C++ logging, and absl's notice that precedes such lines.
TF_INFO_LINE = re.compile(r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] "
                          r"|WARNING: All log messages before absl::InitializeLog\(\)")


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and Keras without their start-up INFO lines (oneDNN is on, no CUDA
    driver), which hide the run's own first lines: TensorFlow 2.21 prints them at import,
    before TF_CPP_MIN_LOG_LEVEL applies. Whatever else reaches stderr meanwhile (a warning,
    an error) is passed on."""
    import tempfile

    # TensorFlow's C++ messages after start-up (graph-version notices) hide the epoch lines.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401  (imports TensorFlow)
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(x for x in lines if not TF_INFO_LINE.match(x)))
            sys.stderr.flush()


class StopRequest:
    """Ctrl-C (SIGINT) and SIGTERM (a batch system's kill, or `kill PID`) stop the run at the
    next safe point, with the resume command.

    Not Python's default of raising KeyboardInterrupt in the signal handler: the handler runs
    wherever the main thread happens to be, and inside a garbage-collection callback (of
    TensorFlow's weak references, say) Python prints the exception and drops it; a run
    interrupted there went on to finish. So the handler only records the signal, and check()
    raises KeyboardInterrupt where nothing swallows it: before each training batch, after
    each epoch, and between cells. A second signal raises at once."""

    def __init__(self):
        self.signum = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # An ignored signal (a job started with nohup, or in the background by a shell
            # without job control) stays ignored, as with Python's own handler.
            if signal.getsignal(sig) is not signal.SIG_IGN:
                signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: the handler may run while the main thread is inside a print.
        os.write(2, b"\nstopping after the current batch; send it again to stop at once\n")

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt

    def callback(self):
        """A Keras callback for fit that calls check() before every training batch and after
        every epoch."""
        import keras

        stop = self

        class StopOnRequest(keras.callbacks.Callback):
            # Batch *begin* hooks: an end hook would make Keras fetch each batch's metrics.
            def on_train_batch_begin(self, batch, logs=None):
                stop.check()

            def on_epoch_end(self, epoch, logs=None):
                stop.check()

        return StopOnRequest()


STOP = StopRequest()


def worker_save_dir(args) -> tuple[Path, Path]:
    """A worker other than the chief trains in step with it but writes nothing into save_dir:
    its logs, models and tables go to a temporary folder, deleted when it exits."""
    import atexit
    import shutil
    import tempfile

    save = Path(tempfile.mkdtemp(prefix="worker-"))
    atexit.register(shutil.rmtree, save, ignore_errors=True)
    return save, save / table_name(args)


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was written", file=sys.stderr)
        return 130


def _main(argv=None) -> int:
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
        if args.holdout_cell and args.holdout_cell not in cells:
            if args.cells is not None:
                raise UsageError(f"--holdout_cell {args.holdout_cell} is not among --cells")
            data.select_cells(data_dir, args.holdout_cell)  # names the missing cell
        if args.mix and not args.weights and args.max_memory != 0:
            mixed_memory_check(args, pretraining_cells(args, cells) if args.finetune else cells)
        save, table = prepare_save_dir(args) if args.chief else worker_save_dir(args)
    except (UsageError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import_tensorflow_quietly()
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
    from utils import model_title, plot_model

    if args.seed is None:
        args.seed = int(np.random.SeedSequence().entropy % 2**31)  # recorded, for the split
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    args.seed = distribute.shared_seed(args.strategy, args.seed)
    print(f"Devices: {distribute.describe(args, args.strategy)}; "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}", flush=True)
    if args.chief:
        print(f"{'Resuming' if args.resume else 'Saving to'} {save}", flush=True)
    else:
        print(f"Not the chief: results go to {args.save_dir} from the chief; this worker's "
              f"files go to {save}, deleted at exit (seed {args.seed})", flush=True)
    results = Results(table, cells, resume=args.resume,
                      columns=FINETUNE_COLUMNS if args.finetune else RESULT_COLUMNS)
    if args.resume:
        share_resume_state(args, cells, save, results)
    experiment = (run_finetune if args.finetune else run_weights if args.weights
                  else run_mix if args.mix else run_per_cell)
    STOP.install()
    try:
        if not args.resume:  # a resumed run keeps the args.json it was started with
            settings = {k: v for k, v in vars(args).items()
                        if k not in ("features", "resume", "chief", "strategy")}
            settings["cells"] = cells
            write_json(save / "args.json", settings)
        if not (args.weights and not args.finetune) and not (save / "model.png").exists():
            net = Convnet.Conv1DNet(variant=args.variant)
            plot_model(net, save / "model.png", title=model_title(net, args.variant))
        experiment(args, cells, save, results)
    except (UsageError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = [c for c in cells if results.done(c)]
        print(f"interrupted: {len(done)}/{len(cells)} cells finished"
              f"{' (' + ', '.join(done) + ')' if done else ''}, kept in {table}; "
              f"resume with: {resume_command(save)}", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS):
            raise
        done = sum(results.done(c) for c in cells)
        print(f"error: cannot write {e.filename or 'a file'} in {save}: {e.strerror}; "
              f"the {done} finished cells in {table} are intact; once fixed, resume with: "
              f"{resume_command(save)}", file=sys.stderr)
        return 2
    rows = results.values()
    for key in [k for k in results.columns if k.startswith("auc")]:
        aucs = np.array([r.get(key) for r in rows], dtype=float)
        what = key.replace("auc_", "") + " " if key != "auc" else ""
        print(f"Results: {table}: {len(rows)} cells, {what}mean AUC {np.nanmean(aucs):.4f}, "
              f"median AUC {np.nanmedian(aucs):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
