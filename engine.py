"""Many cells at once: a run's cells as Dask tasks (``main.py --engine dask``), on a local cluster
of worker processes started here, or on a running cluster joined by its address.

A unit of work is one cell: its training and test in the per-cell experiment
(experiments.train_and_test), its fine-tuning after the pre-training in --finetune and
--holdout_cell (experiments.finetune_cell; the pre-training runs here first, in this process),
one held-out cell's pre-training on all the others and fine-tuning in leave-one-out over
several cells (--holdout_cell all or a list: experiments.leave_out), its test or prediction with a saved model under --weights and --predict
(experiments.test_saved, predict_saved).
Each task trains one cell in one worker process, with that worker's share of the cores as
TensorFlow's threads, the run's seed, precision and deterministic ops, exactly as the sequential
run trains it; the sequential run's per-cell loop and this one call the same functions.

The run folder stays the one source of truth: this process (the driver) alone writes the
results table, args.json and the summary, and moves each finished cell's folder into place. A
task writes its files into a private folder, save/.tasks/<key>/<cell>, when every worker can
read and write the run folder (a shared file system, always so on one machine), or into a
temporary folder of its own machine, whose files it sends back as bytes; the data are read from
--data_dir when every worker sees it, or sent to the workers as the cell's arrays. Both are
checked when the cluster is reached, and said in one line.

A worker killed during a cell has that cell run again on another worker (Dask's own
rescheduling, up to MAX_TRIES times on a local cluster; the scheduler's
distributed.scheduler.allowed-failures on another one); a cell that fails that often is
reported in one line and the others go on. --resume runs only the cells not in the table.

TensorFlow is imported only inside functions, as in experiments.py.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import secrets
import shutil
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import data
import experiments
import rundir
from config import ExperimentError

ENGINES = ("sequential", "dask")
# How many times a cell is started before it counts as failed, when a worker dies under it.
MAX_TRIES = 3
TASKS = ".tasks"  # the run folder's private folders of the tasks in flight
CONNECT_TIMEOUT_S = 10
# What a task of each kind does with its cell, for the line of a cell that failed.
DOING = {
    "per_cell": "training",
    "finetune": "fine-tuning",
    "holdout": "pre-training for and fine-tuning",
    "weights": "testing",
    "predict": "predicting",
}


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads(n_cores: int | None = None) -> int:
    """TensorFlow threads per worker: the network's batches of 100 genes use a few threads
    well, not many; 1 on up to 4 cores, 2 above."""
    return 1 if (n_cores or cores()) <= 4 else 2


def default_workers(threads: int | None = None, n_cores: int | None = None) -> int:
    """Worker processes of a local cluster: as many as the cores hold at ``threads`` each."""
    n = n_cores or cores()
    return max(1, n // (threads or default_threads(n)))


UNITS = (
    "each cell (trained, fine-tuned, left out, or tested or predicted with --weights)",
    "; a mixed model alone (--mix) runs here either way",
)


def add_arguments(p, units: tuple[str, str] = UNITS) -> None:
    """The engine's flags, in their own group; ``units`` says what a task is (main.py's by
    default) and what is not spread."""
    n = cores()
    many = p.add_argument_group("many cells at once (docs/hardware.md)")
    many.add_argument(
        "--engine",
        default="sequential",
        choices=ENGINES,
        help=f"sequential: one cell after another in this process; dask: {units[0]} a Dask "
        "task in a worker process of its own, on a local cluster started here or on the "
        f"cluster at --scheduler, with the same results{units[1]}",
    )
    many.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --engine dask, the local cluster's worker processes, one cell each at a "
        f"time (default: the cores over --threads_per_worker: {default_workers(n_cores=n)} "
        f"on this machine's {n} cores)",
    )
    many.add_argument(
        "--threads_per_worker",
        type=int,
        default=None,
        help="with --engine dask, TensorFlow's threads in each worker (default: 1 on up to 4 "
        f"cores, else 2: {default_threads(n)} here)",
    )
    many.add_argument(
        "--scheduler",
        default=None,
        help="with --engine dask, the address of a running Dask scheduler to send the cells "
        "to, e.g. tcp://head:8786 (default: the DASK_SCHEDULER_ADDRESS environment variable "
        "if set, else a local cluster)",
    )


def check_settings(cfg) -> str | None:
    """What is wrong with the engine's flags, in one line; None when they are fine. No Dask or
    TensorFlow is imported."""
    if cfg.workers is not None and cfg.workers < 1:
        return f"--workers must be at least 1, got {cfg.workers}"
    if cfg.threads_per_worker is not None and cfg.threads_per_worker < 1:
        return f"--threads_per_worker must be at least 1, got {cfg.threads_per_worker}"
    if cfg.engine != "dask":
        for name in ("workers", "threads_per_worker", "scheduler"):
            if getattr(cfg, name) is not None:
                return f"--{name} applies to --engine dask"
        return None
    if getattr(cfg, "distribute", "none") != "none":
        return (
            f"--engine dask trains each cell in a worker process of its own, one device each: "
            f"it cannot be combined with --distribute {cfg.distribute}"
        )
    if cfg.scheduler is not None and cfg.workers is not None:
        return "--workers starts a local cluster: leave it out with --scheduler"
    import importlib.util

    if importlib.util.find_spec("distributed") is None:
        return "--engine dask needs Dask: python -m pip install -r requirements.txt"
    return None


def check_reachable(address: str) -> str | None:
    """Whether anything answers at a tcp:// scheduler address (a plain TCP connection, so a
    wrong address is refused in seconds, before TensorFlow starts); the problem in one line,
    or None. Other protocols are left to Dask."""
    import socket
    from urllib.parse import urlsplit

    if "://" not in address:
        address = f"tcp://{address}"
    parts = urlsplit(address)
    if parts.scheme != "tcp":
        return None
    try:
        port = parts.port or 8786
        with socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return None
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return (
            f"--scheduler {address}: no Dask scheduler answers there ({why}); start one "
            "with: dask scheduler, or leave --scheduler out for a local cluster"
        )


def scheduler_address(cfg) -> str | None:
    """--scheduler, else the address Dask itself is configured with (the environment variable
    DASK_SCHEDULER_ADDRESS, or Dask's configuration files); None: start a local cluster."""
    if cfg.scheduler:
        return cfg.scheduler
    import dask

    return dask.config.get("scheduler-address", None) or None


# ---------------------------------------------------------------------------------------------
# The driver


def spreads(run) -> bool:
    """Whether this run's experiment has cells to spread: per-cell training, fine-tuning and
    testing or predicting with saved models do; a mixed model alone (--mix) is one training."""
    return run.engine == "dask" and (run.finetune or not run.mix)


def pools_at_once(cfg) -> int:
    """How many pooled trainings this machine holds at once: a local cluster's workers in
    leave-one-out over several cells, else 1 (a cluster elsewhere holds them elsewhere)."""
    if cfg.engine != "dask" or not experiments.leaves_each_out(cfg) or scheduler_address(cfg):
        return 1
    return cfg.workers or default_workers(cfg.threads_per_worker)


def kind_of(run) -> str:
    """The unit of work of this run's experiment (cell_task's kind)."""
    if experiments.leaves_each_out(run):
        return "holdout"
    if run.finetune:
        return "finetune"
    if run.predict is not None:
        return "predict"
    return "weights" if run.weights else "per_cell"


def run_cells(run, cells: list[str], save: Path, results) -> None:
    """The per-cell experiment, or fine-tuning, with each cell a Dask task (see the module
    docstring); raises ExperimentError when a cell failed or a task raised one."""
    kind = kind_of(run)
    targets = experiments.fine_tuned_cells(run, cells) if run.finetune else cells
    todo = [c for c in targets if not results.done(c)]
    for i, cell in enumerate(targets, 1):
        if results.done(cell):
            print(f"Cell {i}/{len(targets)}: {cell}: finished earlier, kept", flush=True)
    if not todo:
        return
    pre = experiments.pretrain(run, cells, save) if kind == "finetune" else None
    with connect(run) as client:
        tasks = save / TASKS
        shutil.rmtree(tasks, ignore_errors=True)  # what an interrupted run's tasks left
        tasks.mkdir()
        try:
            # Leave-one-out's units pre-train on every other cell: their workers read them all.
            seen = cells if kind == "holdout" else todo
            shared_files, shared_data = check_cluster(client, tasks, run.data_dir, seen)
            if kind == "holdout" and not shared_data:
                raise ExperimentError(
                    f"--data_dir {run.data_dir}: leave-one-out over several cells pre-trains "
                    "each held-out cell's model on all the others, so every worker must read "
                    "the data there; put it on a shared file system"
                )
            start = tuple(cells) if kind == "holdout" else pre
            _run_tasks(client, run, kind, todo, save, results, start, shared_files, shared_data)
        finally:
            shutil.rmtree(tasks, ignore_errors=True)


@contextlib.contextmanager
def connect(run):
    """A Dask client: of the cluster at --scheduler (or Dask's configured address), or of a
    local cluster of --workers processes started here and closed after; says which."""
    from distributed import Client

    address = scheduler_address(run)
    threads = run.threads_per_worker or default_threads()
    if address:
        try:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError) as e:
            raise ExperimentError(
                f"--scheduler {address}: no Dask scheduler answered within "
                f"{CONNECT_TIMEOUT_S} s ({type(e).__name__}); start one with: dask scheduler"
            ) from None
        with client:
            n = len(client.scheduler_info().get("workers", {}))
            print(f"Dask: the cluster at {address}, {n} workers{_dashboard(client)}", flush=True)
            yield client
        return
    cluster = local_cluster(run.workers or default_workers(threads), threads)
    with cluster, Client(cluster) as client:
        print(
            f"Dask: a local cluster of {len(cluster.workers)} workers x {threads} threads"
            f"{_dashboard(client)}",
            flush=True,
        )
        yield client


def local_cluster(workers: int, threads: int):
    """A cluster of `workers` processes on this machine, each running one cell at a time with
    ``threads`` TensorFlow threads, its logs quiet; a worker that dies is started again."""
    import importlib.util
    import logging

    import dask
    from distributed import LocalCluster

    dask.config.set({"distributed.scheduler.allowed-failures": MAX_TRIES - 1})
    has_dashboard = importlib.util.find_spec("bokeh") is not None
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,  # one cell at a time; TensorFlow's own threads are `threads`
        processes=True,
        dashboard_address=":0" if has_dashboard else None,
        silence_logs=logging.ERROR,
        # Threads of the numerical libraries, set before a worker imports them.
        env={"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads)},
    )


def _dashboard(client) -> str:
    """ ", dashboard <its address>" where the cluster has one (Dask's dashboard needs Bokeh)."""
    import importlib.util

    if importlib.util.find_spec("bokeh") is None:
        return ""
    try:
        return f", dashboard {client.dashboard_link}"
    except Exception:  # no diagnostics server on that scheduler
        return ""


def check_cluster(client, tasks: Path, data_dir: str | None, cells: list[str]) -> tuple[bool, bool]:
    """(whether every worker reads and writes the run folder, whether every worker reads the
    cells' files in --data_dir), found by asking them; said in one line. Without a data_dir
    (explain.py) the data always travel with the tasks."""
    token = secrets.token_hex(8)
    probe = tasks / "probe"
    probe.write_text(token)
    seen = client.run(_sees_run_folder, str(probe), token)
    files = bool(seen) and all(seen.values())
    inputs = False
    if data_dir is not None:
        paths = [str(data.classification_dir(Path(data_dir) / c)) for c in cells]
        found = client.run(_sees_data, paths)
        inputs = bool(found) and all(found.values())
    probe.unlink(missing_ok=True)
    print(
        "Dask: "
        + (
            "the workers write into the run folder (a shared file system)"
            if files
            else "the run folder is not shared: the workers send their files back"
        )
        + "; "
        + (
            "they read the data from --data_dir"
            if inputs
            else "each cell's test split is sent with its task"
            if data_dir is None
            else "--data_dir is not shared: each cell's arrays are sent to the workers"
        ),
        flush=True,
    )
    return files, inputs


def _sees_run_folder(probe: str, token: str) -> bool:
    path = Path(probe)
    try:
        if path.read_text() != token:
            return False
        mine = path.with_name(f"probe-{os.getpid()}-{secrets.token_hex(4)}")
        mine.write_text(token)
        mine.unlink()
    except OSError:
        return False
    return True


def _sees_data(paths: list[str]) -> bool:
    return all((Path(p) / f"{s}.csv").is_file() for p in paths for s in data.SPLITS)


def _run_tasks(client, run, kind, todo, save, results, pre, shared_files, shared_data):
    """Submit one task per cell, then take each as it finishes: its folder into place, its row
    into the table, its line on the console. `pre` is what every task starts from: the
    pre-trained model (fine-tuning), the chosen cells (leave-one-out), or None."""
    from distributed import wait

    settings = dict(
        cfg=run.config,
        seed=run.seed,
        precision=run.mixed_precision,
        threads=run.threads_per_worker or default_threads(),
    )
    # The pre-trained model and (when not shared) the cells' arrays travel inside the tasks,
    # not scattered to one worker ahead: a task whose worker dies is run again elsewhere, and
    # data held only by that worker would be lost with it.
    model = pre
    if isinstance(pre, experiments.Pretrained):
        model = (pre, None if shared_files else pre.path.read_bytes())
    saved = {}
    if kind in ("weights", "predict"):
        saved = dict(zip(todo, experiments.weights_paths(run, todo)))
    reads_features = functools.cache(_reads_features)  # one --weights model serves many cells
    queue = list(todo)
    number = {c: i for i, c in enumerate(todo, 1)}
    # Tasks in flight at a time: enough to keep every worker busy, few enough that the arrays
    # of sent cells are not all held at once.
    window = max(2, 2 * len(client.scheduler_info().get("workers", {})))
    futures = {}

    def submit_next():
        cell = queue.pop(0)
        cell_data, unit_model = None, model
        if cell in saved:  # a saved model: its file, or its bytes where the folder is not shared
            path = saved[cell]
            unit_model = (str(path), None if shared_files else path.read_bytes())
        if not shared_data:
            features = run.features if cell not in saved else reads_features(saved[cell])
            cell_data = experiments.unit_data(run, cell, features, kind)
        key = f"{kind}-{cell}-{secrets.token_hex(4)}"
        where = str(save / TASKS / key) if shared_files else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "large object in the task graph"
            future = client.submit(
                cell_task, kind, cell, where, cell_data, unit_model, key=key, pure=False,
                **settings,
            )  # fmt: skip
        futures[future] = cell
        return future

    pending = {submit_next() for _ in range(min(window, len(queue)))}
    failed, finished = [], 0
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=1, return_when="FIRST_COMPLETED")
            except TimeoutError:  # none finished within the second: look for a stop request
                done = ()
            for future in done:
                cell = futures[future]
                try:
                    row, seconds, payload = future.result()
                except (ExperimentError, data.DataError):
                    raise
                except Exception as e:  # FutureCancelledError is one too
                    if not worker_died(e):
                        raise
                    failed.append(cell)
                    print(
                        f"error: cell {cell}: failed: its worker died {MAX_TRIES} times while "
                        f"{DOING[kind]} it ({type(e).__name__}); the other cells go on",
                        file=sys.stderr,
                        flush=True,
                    )
                    continue
                place(save, cell, future.key, payload, shared_files)
                if cell in saved:
                    row = experiments.with_record(row, saved[cell], kind)
                results.add(row)
                finished += 1
                said = (
                    experiments.saved_line(kind, number[cell], len(todo), row, saved[cell])
                    if cell in saved
                    else experiments.finetune_line(row, seconds)
                    if kind in ("finetune", "holdout")
                    else experiments.per_cell_line(row, seconds)
                )
                print(f"{said} ({finished} of {len(todo)} done)", flush=True)
            while queue and len(pending) < window:
                pending.add(submit_next())
            rundir.STOP.check()
    finally:
        for future in pending:
            future.cancel()
    if failed:
        raise ExperimentError(
            f"{len(failed)} of {len(todo)} cells failed ({', '.join(failed)}); the others are "
            f"in {results.path}; resume with: {rundir.resume_command(save)}"
        )


def _reads_features(path: Path) -> bool:
    """Whether the saved model `path` reads the 5 additional features (its input length)."""
    import Convnet

    return Convnet.load_checked(path).input_shape[1] == data.input_length(True)


def worker_died(error: BaseException) -> bool:
    from distributed.scheduler import KilledWorker

    return isinstance(error, KilledWorker)


def place(save: Path, cell: str, key: str, payload, shared_files: bool, target=None) -> None:
    """A finished task's cell folder into `target` (default save/cell), replacing what an
    earlier try left; from save/.tasks/<key>/<cell>, or unpacked from the bytes `payload`."""
    target = target or save / cell
    shutil.rmtree(target, ignore_errors=True)
    if shared_files:
        os.replace(save / TASKS / key / cell, target)
        return
    staging = save / TASKS / key
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        z.extractall(staging)
    os.replace(staging / cell, target)


# ---------------------------------------------------------------------------------------------
# A worker


_WORKER: dict = {}


def worker_run(cfg, seed: int, precision: str, threads: int):
    """This worker process's run (config.Run), TensorFlow set up the first time: its threads,
    deterministic ops when the run has them, its INFO lines quiet."""
    import config

    if "run" not in _WORKER:
        start_tensorflow(threads, cfg.deterministic)
        isolate_keras_seeds()
        import tensorflow as tf

        _WORKER["run"] = config.Run(
            cfg,
            strategy=tf.distribute.get_strategy(),
            seed=seed,
            mixed_precision=precision,
        )
    run = _WORKER["run"]
    if (run.config, run.seed, run.mixed_precision) != (cfg, seed, precision):
        _WORKER["run"] = config.Run(
            cfg, strategy=run.strategy, seed=seed, mixed_precision=precision
        )
    return _WORKER["run"]


def start_tensorflow(threads: int, deterministic: bool) -> None:
    """TensorFlow in this worker, quiet, at ``threads`` threads and deterministic ops if asked
    (the first call sets them; later ones find TensorFlow running and leave it)."""
    import distribute

    distribute.import_tensorflow_quietly()
    import tensorflow as tf

    try:
        # Both pools at the worker's share: inter-op threads run kernels too, and 2 of them
        # beside 1 intra-op thread oversubscribed 2 cores (bench/RESULTS.md, engine_speed).
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already running in this process: its threads stay
        pass
    tf.get_logger().setLevel("ERROR")
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def isolate_keras_seeds() -> None:
    """Give Keras a Python random generator of its own in this worker.

    Keras draws the seeds of layers and initializers that have none from Python's global
    ``random`` (keras.utils.set_random_seed seeds it). In a worker, Dask's event loop draws
    from that generator too, in another thread, between the seeding and the network's
    construction, so the initial weights came out different from one run to the next (a cell
    of the sample data: test AUC 0.701, 0.779 or 0.800 for one seed). With a generator of its
    own, seeded by the same call, Keras draws exactly what it draws in the sequential run,
    where nothing else uses ``random``."""
    import random

    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    for module, name in ((seed_generator, "python_random"), (rng_utils, "random")):
        if getattr(module, name, None) is not random:
            import keras

            raise ExperimentError(
                f"Keras {keras.__version__} no longer draws its seeds where this version of "
                f"engine.py expects ({module.__name__}.{name}), so a Dask worker cannot train "
                "a cell reproducibly; run without --engine dask"
            )
    own = random.Random()
    seed_generator.python_random = own
    rng_utils.random = own


def cell_task(kind, cell, where, cell_data, model, *, cfg, seed, precision, threads):
    """One cell, in a worker: train (and test) it into `where`/cell, or into a temporary folder
    whose files are returned as a zip archive's bytes; returns (its row, seconds, the bytes or
    None). `model` is what the unit starts from: (the pre-trained model, its bytes or None) in
    fine-tuning, (a saved model's path, its bytes or None) under --weights and --predict, the
    chosen cells in leave-one-out. Its console lines are dropped: the driver prints one line
    per cell."""
    run = worker_run(cfg, seed, precision, threads)  # imports TensorFlow quietly, first
    import keras

    start = time.time()
    keras.backend.clear_session()  # a fresh graph per cell, as the sequential run does
    own = None if where else Path(tempfile.mkdtemp(prefix="cell-"))
    folder = (Path(where) if where else own) / cell
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    features, saved_model = run.features, None
    if kind in ("weights", "predict"):
        import Convnet

        path, blob = model
        if blob is not None:  # the run folder is not shared: a copy here
            path = folder.parent / "saved.keras"
            path.write_bytes(blob)
        saved_model = Convnet.load_checked(Path(path))
        features = saved_model.input_shape[1] == data.input_length(True)
    c = cell_data
    if c is None:
        c = experiments.unit_data(run, cell, features, kind)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if kind == "weights":
                row = experiments.test_saved(run, cell, c, folder, saved_model)
            elif kind == "predict":
                row = experiments.predict_saved(run, cell, c, folder, saved_model)
            elif kind == "finetune":
                pre, pre_bytes = model
                if pre_bytes is not None:  # the run folder is not shared: a copy here
                    local = folder.parent / "pretrained.keras"
                    local.write_bytes(pre_bytes)
                    pre = experiments.Pretrained(
                        local, pre.best_epoch, pre.attempts, pre.sound, pre.plan
                    )
                row = experiments.finetune_cell(run, cell, c, folder, pre)
            elif kind == "holdout":
                row = experiments.leave_out(run, cell, c, folder, list(model))
            else:
                row = experiments.train_and_test(run, cell, c, folder)
        payload = None if where else pack(folder)
    finally:
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
    return row, time.time() - start, payload


def pack(folder: Path) -> bytes:
    """A folder's files as a zip archive's bytes, paths under the folder's own name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder.parent).as_posix())
    return buffer.getvalue()
