"""1D Convolutional Network on Histone Modification Signals: the command line, which checks the
flags and the data, starts TensorFlow quietly and hands the run to experiments.py.

    python main.py --data_dir sample_data --epochs 2        # one model per cell
    python main.py --data_dir sample_data --mix             # one model for all cells
    python main.py --data_dir sample_data --weights logs/RUN/S001/best_model.keras --cells S001
    python main.py --weights logs/RUN/S001/best_model.keras --predict mydata   # build.py's cells

No experiment, table or file format lives here. TensorFlow is imported only after the arguments
are parsed, so ``-h`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from pathlib import Path

import config
import data
import distribute
import engine
import experiments
import files
import pooling
import restarts
import results
import rundir

# Settings that may change between a run and its --resume: where things go and what is
# logged, not what is computed.
RESUME_FREE = {
    "save_dir",
    "resume",
    "overwrite",
    "debug",
    "max_memory",
    "distribute",
    "devices",
    "engine",
    "workers",
    "threads_per_worker",
    "scheduler",
}
NO_DATA_HELP = (
    "the data (56 cell types, https://zenodo.org/record/2652278) is not in {data_dir}. Get it "
    "with: python download.py --data_dir {data_dir} (downloads, verifies and unpacks it; "
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
        if (
            action.default is None
            or isinstance(action.default, bool)
            and not action.default
            and action.nargs == 0
        ):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump: the user asked for -h if they want it.
        raise UsageError(f"{message} (see python main.py -h)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="main.py",
        description="1D Convolutional Network on Histone Modification Signals.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--epochs", type=int, default=20, help="training epochs")
    p.add_argument(
        "--batch_size",
        type=int,
        default=100,
        help="genes per training step; global: with several replicas each gets "
        "its share, so the training maths does not depend on the hardware",
    )
    p.add_argument("--lr", type=float, default=0.001, help="initial learning rate (Adam)")
    p.add_argument(
        "--lr_decay",
        type=float,
        default=0.9,
        help="the learning rate at epoch e is lr * lr_decay**e; set a larger value for more epochs",
    )
    p.add_argument(
        "--data_dir",
        default="./data",
        help="the data: <data_dir>/<cell>/classification/{train,valid,test}.csv",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="write weight histograms to the TensorBoard logs (default: off)",
    )
    p.add_argument(
        "--save_dir",
        default=None,
        help="where results go (default: a folder under logs/ named after the "
        "experiment, variant, epochs, batch size, lr and decay)",
    )
    p.add_argument(
        "--mix",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
        help="train one model on all cells pooled, then test it on each cell's "
        "own test split; a bare --mix or --mix true/false",
    )
    p.add_argument(
        "--pooling",
        default=None,
        choices=pooling.POOLINGS,
        help="what the pooled experiments pool: held_out (default): the train/valid rows "
        "of every cell, less every gene a tested cell tests on (fine-tuning: or validates "
        "on), so no tested gene is trained on; paper: every train/valid row, as the paper "
        "did; either way each tested cell's test genes found in the pool are counted",
    )
    p.add_argument(
        "--pool_split",
        default=None,
        choices=pooling.POOL_SPLITS,
        help="how the pool is split 70/30 into training and validation: row, the paper's "
        "(a gene's rows from different cells may fall on both sides), the default of --mix; "
        "gene, every row of a gene on one side, the default of --finetune and --holdout_cell",
    )
    p.add_argument(
        "--cells",
        default=None,
        help="comma-separated subset of cells, e.g. E003,E005 (default: all cells in data_dir)",
    )
    p.add_argument(
        "--variant",
        default="full",
        choices=data.VARIANTS,
        help="the paper's model (full), without spatial dropout (the released "
        "code), or without the 5 additional features (input length 500)",
    )
    p.add_argument(
        "--monitor",
        default="val_accuracy",
        choices=["val_accuracy", "val_auc"],
        help="validation metric that picks the best epoch (the checkpoint tested)",
    )
    p.add_argument(
        "--recipe",
        default="default",
        choices=restarts.RECIPES,
        help="default: the paper's schedule, but the learning rate warms up linearly over "
        "the first epoch's steps (from lr/steps to lr), which keeps the tanh network from "
        "stalling in its first steps; paper: the paper's schedule from the first step (with "
        "--restarts 0 and --mixed_precision off, the paper's recipe exactly: "
        "docs/differences.md)",
    )
    p.add_argument(
        "--restarts",
        type=int,
        default=restarts.DEFAULT_RESTARTS,
        help="train a model again from a fresh seed, up to this many times, when its "
        "validation split shows it stalled (val AUC below "
        f"{restarts.LEARNED} in its first {restarts.STALL_EPOCHS} epochs) or collapsed "
        "(fell back to chance after learning); the sound attempt kept is the best by "
        "--monitor; when all fail, the one that ranked best is trained to the full epochs "
        "and marked not sound; 0: never restarted (every model is still judged: the results "
        "table's sound column)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed every source of randomness and make TensorFlow's ops "
        "deterministic, for reproducible runs (default: a random seed, "
        "recorded in args.json)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="test a saved model without training: a .keras file (used for every "
        "chosen cell) or a run folder (its mixed model, or each cell's own); "
        "default: none, train new models",
    )
    p.add_argument(
        "--predict",
        default=None,
        metavar="DIR",
        help="with --weights: predict every gene (all three splits) of each cell in DIR, "
        "which may lack labels (build.py without expression values); writes "
        "<cell>/predictions.csv and no training; DIR replaces --data_dir (default: off)",
    )
    p.add_argument(
        "--finetune",
        action="store_true",
        help="after the mixed model is trained, start from it for each cell and "
        "train on that cell's own train split (validated on its valid split), "
        "then test both models on the cell's test split; implies --mix; with "
        "--weights, start from that saved mixed model instead (default: off)",
    )
    p.add_argument("--finetune_epochs", type=int, default=10, help="fine-tuning epochs")
    p.add_argument(
        "--finetune_lr",
        type=float,
        default=0.0001,
        help="fine-tuning's initial learning rate, decayed by --lr_decay per epoch",
    )
    p.add_argument(
        "--freeze_conv",
        action="store_true",
        help="keep the three convolution layers as pre-trained while fine-tuning; "
        "only the dense layers learn (default: off)",
    )
    p.add_argument(
        "--holdout_cell",
        default=None,
        help="leave one out: pre-train on all chosen cells but this one, then "
        "fine-tune and test on it alone; several (E003,E005) or 'all' leave each out in "
        "turn, each in its own folder; implies --finetune (default: none)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --save_dir: cells already in its results table "
        "are kept, an interrupted cell is redone; flags not given are taken "
        "from its args.json, flags given must match it (default: off)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a save_dir that holds an earlier run, replacing its "
        "results (default: off)",
    )
    p.add_argument(
        "--max_memory",
        type=float,
        default=None,
        help="GiB the mixed experiment may use; it refuses to start when its "
        "estimate is larger; 0 turns the check off (default: the memory "
        "available when the run starts)",
    )
    hw = p.add_argument_group("bigger hardware (docs/hardware.md)")
    hw.add_argument(
        "--distribute",
        default="none",
        choices=distribute.STRATEGIES,
        help="none: one device (the first GPU, else the CPU); mirrored: one "
        "replica per local GPU (tf.distribute.MirroredStrategy); multiworker: "
        "one process per machine, the cluster from the TF_CONFIG environment "
        "variable (tf.distribute.MultiWorkerMirroredStrategy), the chief alone "
        "writing results",
    )
    hw.add_argument(
        "--devices",
        default=None,
        help="with --distribute mirrored, the devices to use, e.g. GPU:0,GPU:2; "
        "CPU:0,CPU:1 splits the CPU into logical devices (tests and demos, "
        "not faster) (default: every local GPU, else the CPU)",
    )
    hw.add_argument(
        "--scale_lr",
        action="store_true",
        help="multiply --lr by the number of replicas (the linear scaling rule, "
        "for a --batch_size raised as much) (default: off)",
    )
    hw.add_argument(
        "--mixed_precision",
        nargs="?",
        const="auto",
        default="auto",
        choices=distribute.PRECISIONS,
        help="compute conv2 and conv3 in float16 or bfloat16 (their bias and tanh, the other "
        "layers and the weights stay float32); auto (or a bare --mixed_precision): bfloat16 "
        "on a CPU with AMX, where a per-cell epoch is about 2.7x faster at no AUC cost "
        "measured (docs/speed.md), and on GPUs of compute capability 8.0 and up, float32 "
        "elsewhere; float16 is for GPUs only (refused on a machine without one); off: "
        "float32 throughout, the paper's arithmetic; the run's Devices line and args.json "
        "say which",
    )
    hw.add_argument(
        "--jit",
        action="store_true",
        help="compile the training steps with XLA; not with --seed, whose "
        "deterministic ops exclude XLA (default: off)",
    )
    engine.add_arguments(p)
    return p


def check_settings(args, before_resume: bool = False) -> None:
    """The checks of the settings that argparse cannot make, for the command line and for a
    resumed run's args.json alike; fills in what one flag implies for another. before_resume:
    the flags of --resume before the run's own are adopted (what depends on them waits)."""
    for name in ("epochs", "batch_size", "finetune_epochs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.restarts < 0:
        raise UsageError(f"--restarts must be 0 or more, got {args.restarts}")
    # NaN fails every comparison below, so it is refused with the rest; above 1, Adam's steps
    # throw a tanh network's weights far past saturation, and the loss soon turns NaN.
    for name in ("lr", "finetune_lr"):
        if not 0 < getattr(args, name) <= 1:
            raise UsageError(f"--{name} must be in (0, 1], got {getattr(args, name)}")
    if not 0 < args.lr_decay <= 1:
        raise UsageError(f"--lr_decay must be in (0, 1], got {args.lr_decay}")
    if args.max_memory is not None and not 0 <= args.max_memory < math.inf:
        raise UsageError(f"--max_memory must be positive (or 0: no check), got {args.max_memory}")
    if args.seed is not None and not 0 <= args.seed < 2**31:
        raise UsageError(f"--seed must be in [0, 2**31), got {args.seed}")
    if args.cells is not None and not [c for c in args.cells.split(",") if c.strip()]:
        raise UsageError(
            f"--cells {args.cells!r} names no cell: give names such as E003,E005, or leave the "
            "flag out for every cell in --data_dir"
        )
    if args.holdout_cell is not None:
        if not data.names(args.holdout_cell):
            raise UsageError(f"--holdout_cell {args.holdout_cell!r} names no cell")
        args.finetune = True
    if args.freeze_conv and not args.finetune:
        raise UsageError("--freeze_conv applies to fine-tuning: add --finetune")
    if args.finetune:
        args.mix = True
    if args.predict is not None:
        if not args.weights:
            raise UsageError(
                "--predict needs --weights: a saved model (.keras) or a run folder with one"
            )
        if args.mix:
            raise UsageError("--predict uses a saved model: it cannot train (--mix, --finetune)")
        args.data_dir = args.predict
    if args.jit and getattr(args, "deterministic", args.seed is not None):
        raise UsageError(
            "--jit cannot be combined with --seed: TensorFlow's deterministic ops exclude XLA"
        )
    for name in ("pooling", "pool_split"):
        if before_resume:
            break
        if getattr(args, name) is not None and (not args.mix or args.weights):
            raise UsageError(
                f"--{name} applies to training a pooled model (--mix, --finetune, --holdout_cell)"
            )
    problem = engine.check_settings(args)
    if problem:
        raise UsageError(problem)
    try:
        distribute.check_args(args)
    except distribute.DeviceError as e:
        raise UsageError(str(e)) from None


def parse_args(argv=None) -> config.Config:
    """The command line (and, with --resume, the run's args.json) parsed and checked into the
    run's configuration."""
    args = build_parser().parse_args(argv)
    check_settings(args, before_resume=args.resume)
    # Recorded in args.json: a run without --seed still records the seed it drew, but its
    # resumption must not turn deterministic ops on.
    args.deterministic = args.seed is not None
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if args.resume:
        if args.save_dir is None:
            raise UsageError("--resume needs --save_dir, the folder of the run to resume")
        adopt_recorded_settings(args, argv)
        check_settings(args)  # the recorded settings and the flags given, together
    if args.mix and not args.weights:
        args.pooling = args.pooling or "held_out"
        args.pool_split = args.pool_split or ("gene" if args.finetune else "row")
    if args.weights and not Path(args.weights).exists():
        raise UsageError(f"--weights {args.weights}: no such file or folder")
    if args.save_dir is None:
        args.save_dir = str(rundir.default_save_dir(args))
    return config.Config.of(vars(args))


def explicit_flags(argv) -> set[str]:
    """Destinations of the flags given on the command line (not left at their defaults)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_known_args(argv)[0]))


def _same(key: str, given, recorded) -> bool:
    if key in ("data_dir", "weights"):
        return (given is None) == (recorded is None) and (
            given is None or Path(given).resolve() == Path(recorded).resolve()
        )
    if key == "cells":
        return [c.strip() for c in str(given).split(",") if c.strip()] == list(recorded or [])
    if isinstance(recorded, float) or isinstance(given, float):
        return recorded is not None and float(given) == float(recorded)
    return given == recorded


def recorded_flags(recorded: dict) -> list[str]:
    """A run's recorded settings (args.json) as the command line that gives them, so they are
    parsed and checked by the same parser as the flags given; UsageError for a value no
    command line could give. Keys that are no flag, and those a resume may change, are left
    out."""
    actions = {a.dest: a for a in build_parser()._actions if a.option_strings}
    argv = []
    for key, value in recorded.items():
        action = actions.get(key)
        if action is None or key in RESUME_FREE or key in ("help", "resume"):
            continue
        flag = action.option_strings[-1]
        if value is None:
            if action.default is not None:
                raise UsageError(f"{flag} is null")
        elif action.nargs == 0:  # a bare flag: true or false
            if not isinstance(value, bool):
                raise UsageError(f"{flag} {json.dumps(value)} is not true or false")
            argv += [flag] if value else []
        elif key == "cells" and isinstance(value, list):
            if not all(isinstance(c, str) for c in value):
                raise UsageError(f"{flag} {json.dumps(value)} is not a list of cell names")
            argv.append(f"{flag}={','.join(value)}")
        elif isinstance(value, (list, dict)):
            raise UsageError(f"{flag} {json.dumps(value)} is not a single value")
        else:
            argv.append(f"{flag}={value}")
    return argv


def adopt_recorded_settings(args, argv) -> None:
    """For --resume: take the run's settings from its args.json, parsed and checked as the
    command line is; refuse flags that differ."""
    save = Path(args.save_dir)
    path = save / "args.json"
    if not distribute.is_chief(args) and not path.exists():
        return  # another machine's worker: the chief's settings arrive through TensorFlow
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{save}: no args.json, so no run to resume there") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read the run's settings ({e})") from None
    if not isinstance(recorded, dict):
        raise UsageError(f"{path}: not a run's settings (a JSON object of flags is expected)")
    try:
        checked = build_parser().parse_args(recorded_flags(recorded))
        check_settings(checked)
        if not isinstance(recorded.get("deterministic", False), bool):
            raise UsageError(f"deterministic {json.dumps(recorded['deterministic'])} is not "
                             "true or false")  # fmt: skip
    except UsageError as e:
        problem = str(e).removesuffix(" (see python main.py -h)")
        raise UsageError(f"{path}: a recorded setting is not valid: {problem}") from None
    given = explicit_flags(sys.argv[1:] if argv is None else argv)
    differ = [
        f"--{k} {getattr(args, k)} (the run has {recorded[k]})"
        for k in sorted(given - RESUME_FREE)
        if k in recorded and not _same(k, getattr(args, k), recorded[k])
    ]
    if differ:
        raise UsageError(
            f"cannot resume {save}: settings differ from its args.json: "
            f"{'; '.join(differ)}; resume without them, or start a new run"
        )
    for key, value in recorded.items():
        if key in given or key in RESUME_FREE or not hasattr(args, key):
            continue
        setattr(args, key, getattr(checked, key) if hasattr(checked, key) else value)
    if "restarts" not in recorded and "restarts" not in given:
        args.restarts = 0  # a run started before restarts existed goes on without them
    if "recipe" not in recorded and "recipe" not in given:
        args.recipe = "paper"  # a run started before the warm-up existed goes on without it
    if "pooling" not in recorded and args.mix and not args.weights:
        # A pooled run started before the pooling was chosen pooled as the paper did.
        if args.pooling not in (None, "paper") or args.pool_split not in (None, "row"):
            raise UsageError(
                f"cannot resume {save}: it pools as the paper did (--pooling paper "
                "--pool_split row), begun before these flags existed; start a new run"
            )
        args.pooling, args.pool_split = "paper", "row"


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted before training started; nothing was written", file=sys.stderr)
        return 130
    finally:
        rundir.release_save_dirs()


def _main(argv=None) -> int:
    try:
        args, cells = check_inputs(argv)
    except (UsageError, data.DataError, config.ExperimentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # TensorFlow's start-up lines are filtered in distribute.py (explain.py starts it too).
    distribute.import_tensorflow_quietly()
    try:
        args = start_tensorflow(args)
        if args.weights:
            experiments.check_weights(args, cells)  # before the save folder is made
        save, table = rundir.prepare_save_dir(args) if args.chief else rundir.worker_save_dir(args)
        table_rows = results.Results(
            table,
            cells,
            resume=args.resume,
            columns=results.table_columns(args),
        )
    except (distribute.DeviceError, data.DataError, config.ExperimentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.chief:
        print(f"{'Resuming' if args.resume else 'Saving to'} {save}", flush=True)
    else:
        print(
            f"Not the chief: results go to {args.save_dir} from the chief; this worker's "
            f"files go to {save}, deleted at exit (seed {args.seed})",
            flush=True,
        )
    if args.resume:
        args = rundir.share_resume_state(args, cells, save, table_rows)
    code = run(args, cells, save, table_rows)
    if code == 0:
        results.print_summary(table_rows)
    return code


def check_inputs(argv) -> tuple[config.Config, list[str]]:
    """Parse the flags, then read and check every chosen cell's files before TensorFlow starts,
    so bad data fails in seconds, not after hours of training, and leaves no empty save folder
    behind (the parsed arrays are cached for the run itself). Returns (args, cells)."""
    args = parse_args(argv)
    if distribute.is_chief(args):
        rundir.claim_save_dir(args)  # a folder in use stops a second run before all else
        if args.resume:  # a damaged results table stops it before TensorFlow starts
            save = Path(args.save_dir)
            results.read_table(save / results.table_name(args), results.table_columns(args))
    data_dir = Path(args.data_dir)
    if args.predict is not None and not data_dir.is_dir():
        raise UsageError(f"--predict {data_dir}: no such folder (a data folder of cells)")
    if not data_dir.is_dir():
        raise data.DataError(NO_DATA_HELP.format(data_dir=data_dir))
    cells = data.select_cells(data_dir, args.cells)
    for cell in cells:
        data.load_cell(
            data_dir / cell,
            additional_features=args.features,
            unlabeled_ok=args.predict is not None,
        )
    for cell in experiments.held_out_cells(args, cells):
        if cell not in cells:
            if args.cells is not None:
                raise UsageError(f"--holdout_cell {cell} is not among --cells")
            data.select_cells(data_dir, cell)  # names the missing cell
    if args.mix and not args.weights:
        experiments.check_pools(args, cells, engine.pools_at_once(args))
    if engine.spreads(args) and engine.scheduler_address(args):
        problem = engine.check_reachable(engine.scheduler_address(args))
        if problem:
            raise UsageError(problem)
    return args, cells


def start_tensorflow(cfg: config.Config) -> config.Run:
    """Set up the devices, the seed every worker shares (drawn when not given) and
    deterministic ops; say which devices run it. Returns the run."""
    import keras
    import numpy as np
    import tensorflow as tf

    strategy, precision, reason = distribute.setup(cfg)  # before any other TensorFlow op
    tf.get_logger().setLevel("ERROR")  # retracing notices from predicting splits of new sizes
    seed = cfg.seed
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**31)  # recorded, for the split
    keras.utils.set_random_seed(seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    run = config.Run(
        cfg,
        strategy=strategy,
        seed=distribute.shared_seed(strategy, seed),
        mixed_precision=precision,
        precision_reason=reason,
        chief=distribute.is_chief(cfg),
    )
    print(
        f"Devices: {distribute.describe(run, strategy)}; "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}",
        flush=True,
    )
    return run


def run(args, cells: list[str], save: Path, table_rows) -> int:
    """Record the settings, draw the network, run the experiment; turn what stops it into one
    line and an exit status (2: bad input or a full disk, 130: interrupted)."""
    import Convnet
    from utils import model_title, plot_model

    experiment = (
        experiments.run_predict
        if args.predict is not None
        else experiments.run_finetune
        if args.finetune
        else experiments.run_weights
        if args.weights
        else experiments.run_mix
        if args.mix
        else experiments.run_per_cell
    )
    if engine.spreads(args):
        experiment = engine.run_cells
    elif args.engine == "dask":
        print("--engine dask: a mixed model alone is one training, so it runs here", flush=True)
    rundir.STOP.install()
    table = table_rows.path
    try:
        if args.resume and args.chief:
            rundir.record_location(save)
        if not args.resume:  # a resumed run keeps the args.json it was started with
            files.write_json(save / "args.json", args.record(cells))
        if not (args.weights and not args.finetune) and not (save / "model.png").exists():
            net = Convnet.Conv1DNet(variant=args.variant)
            plot_model(net, save / "model.png", title=model_title(net, args.variant))
        experiment(args, cells, save, table_rows)
    except (UsageError, data.DataError, config.ExperimentError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = [c for c in cells if table_rows.done(c)]
        named = ", ".join(done[:5]) + (f", ... {done[-1]}" if len(done) > 5 else "")
        print(
            f"interrupted: {len(done)}/{len(cells)} cells finished"
            f"{' (' + named + ')' if done else ''}, kept in {table}; "
            f"resume with: {rundir.resume_command(save)}",
            file=sys.stderr,
        )
        return 130
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS):
            raise
        done = sum(table_rows.done(c) for c in cells)
        kept = (
            f"the {done} finished cells in {table} are intact"
            if done
            else "no cell had finished, so nothing was lost"
        )
        print(
            f"error: cannot write {e.filename or 'a file'} in {save}: {e.strerror}; {kept}; "
            f"once fixed, resume with: {rundir.resume_command(save)}",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
