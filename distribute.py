"""Bigger hardware through tf.distribute: one GPU, several GPUs, several machines; mixed precision.
It picks devices, strategies, dtype policies and XLA; what is trained is experiments.py's.

    python main.py                           # one device: the first GPU, else the CPU
    python main.py --distribute mirrored     # every local GPU, one model replica each
    python main.py --distribute mirrored --devices CPU:0,CPU:1   # the CPU split in two
    TF_CONFIG='{"cluster": ..., "task": ...}' python main.py --distribute multiworker

TensorFlow is imported inside the functions that need it, so the command-line checks here run
before it starts. ``main.py`` calls, in order: ``check_args`` (while parsing), ``setup`` (right
after importing TensorFlow, before any other TensorFlow op), ``shared_seed``, then builds and
trains every model inside ``scope``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys

STRATEGIES = ("none", "mirrored", "multiworker")
PRECISIONS = ("off", "auto", "float16", "bfloat16")
DEVICE = re.compile(r"^(?:/device:)?(cpu|gpu):(\d+)$", re.IGNORECASE)


class DeviceError(Exception):
    """A bad device or cluster setting; reported in one line with exit status 2."""


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (the first ``flags`` line of /proc/cpuinfo),
    e.g. {"avx512_bf16", "amx_bf16", ...}; empty where there is no such file."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def auto_precision(gpus: list[tuple[int, int]], flags: set[str]) -> tuple[str, str]:
    """What ``--mixed_precision auto`` means on this hardware, and why: (precision, reason).

    gpus: the compute capability (major, minor) of each GPU used; flags: cpu_flags(). bfloat16
    on a GPU of compute capability 8.0 or newer (native bfloat16 tensor cores) and on a CPU
    with AMX (amx_bf16), the one CPU kind where bfloat16 was measured faster; float32 ("off")
    elsewhere: AVX512-BF16 without AMX is not measured faster, and float16 (older GPUs' tensor
    cores) is not measured for AUC, so it is only used when asked for. auto is the default:
    bfloat16 was measured at no AUC cost beyond seed noise (bench/RESULTS.md, "bfloat16, third
    measurement").
    """
    if gpus:
        major, minor = min(gpus)
        if major >= 8:
            return "bfloat16", f"GPU of compute capability {major}.{minor}: native bfloat16"
        return "off", (
            f"GPU of compute capability {major}.{minor}: no native bfloat16 (float16 is "
            "not measured for AUC: --mixed_precision float16 to use it)"
        )
    if "amx_bf16" in flags:
        return "bfloat16", "CPU with AMX (amx_bf16)"
    if "avx512_bf16" in flags:
        return "off", "CPU with AVX512-BF16 but no AMX: float32, bfloat16 not measured faster"
    return "off", "CPU without bfloat16 instructions: float32"


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability of each GPU TensorFlow sees (after its start-up)."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(tuple(details.get("compute_capability", (0, 0))))
    return found


def parse_devices(spec: str | None) -> list[str]:
    """``--devices`` as TensorFlow names: "gpu:0,CPU:1" -> ["/device:GPU:0", "/device:CPU:1"].

    CPU:1 and up name logical devices that ``setup`` carves out of the one CPU.
    """
    if not spec:
        return []
    names = []
    for item in spec.split(","):
        match = DEVICE.match(item.strip())
        if not match:
            raise DeviceError(
                f"--devices: {item.strip()!r} is not a device name like GPU:0 or CPU:1"
            )
        names.append(f"/device:{match[1].upper()}:{int(match[2])}")
    if len(set(names)) < len(names):
        raise DeviceError(f"--devices: a device is named twice in {spec!r}")
    return names


def logical_cpus(devices: list[str]) -> int:
    """How many logical devices the CPU must be split into for the named CPU:k to exist."""
    return 1 + max((int(d.rsplit(":", 1)[1]) for d in devices if ":CPU:" in d), default=0)


def tf_config() -> tuple[str, int, dict]:
    """(task type, task index, cluster) from the TF_CONFIG environment variable, checked."""
    text = os.environ.get("TF_CONFIG", "").strip()
    example = (
        'e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not text:
        raise DeviceError(
            "--distribute multiworker needs the TF_CONFIG environment variable "
            f"(the cluster and this process's task), {example}"
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise DeviceError(f"TF_CONFIG is not valid JSON ({e})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise DeviceError(f'TF_CONFIG needs a "cluster" and a "task", {example}')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in ("chief", "worker"):
        raise DeviceError(f"TF_CONFIG task type {kind!r}: only chief and worker tasks train here")
    hosts = cluster.get(kind)
    if not isinstance(hosts, list) or not isinstance(index, int) or not 0 <= index < len(hosts):
        raise DeviceError(f"TF_CONFIG task {kind} {index!r} is not in its cluster {cluster}")
    return kind, index, cluster


def check_args(args) -> None:
    """Checks of --distribute and --devices that need no TensorFlow."""
    devices = parse_devices(args.devices)
    if devices and args.distribute != "mirrored":
        raise DeviceError(
            "--devices needs --distribute mirrored (multiworker uses every local "
            "GPU: restrict them with CUDA_VISIBLE_DEVICES)"
        )
    is_chief(args)  # a multi-worker run reads TF_CONFIG, which may be wrong


def is_chief(args) -> bool:
    """Whether this process writes the results: always, but under --distribute multiworker,
    where the chief is the "chief" task if the cluster has one, else worker 0 (the task
    tf.distribute treats as chief)."""
    if args.distribute != "multiworker":
        return True
    kind, index, cluster = tf_config()
    return kind == "chief" or (index == 0 and "chief" not in cluster)


def workers() -> int:
    """Processes in the TF_CONFIG cluster (1 without TF_CONFIG)."""
    if not os.environ.get("TF_CONFIG"):
        return 1
    _, _, cluster = tf_config()
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def setup(args):
    """Split the CPU if asked, create the strategy and settle the mixed-precision policy.

    Call right after importing TensorFlow: logical devices can only be configured, and
    MultiWorkerMirroredStrategy only created, before TensorFlow runs its first op.
    Returns (the tf.distribute.Strategy, the precision: --mixed_precision with "auto" made
    what it means here (auto_precision), why auto chose it or None).
    """
    import tensorflow as tf

    devices = parse_devices(args.devices)
    cpus = logical_cpus(devices)
    if cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(cpus)]
        )
    if args.distribute == "multiworker":
        _patch_keras_for_multiworker()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif args.distribute == "mirrored":
        seen = [d.name for d in tf.config.list_logical_devices()]
        missing = [d for d in devices if d not in seen]
        if missing:
            raise DeviceError(
                f"--devices {args.devices}: TensorFlow sees no "
                f"{', '.join(short(d) for d in missing)} (it sees "
                f"{', '.join(short(d) for d in seen)})"
            )
        # None: every local GPU, or the CPU where there is none.
        strategy = tf.distribute.MirroredStrategy(devices or None)
    else:
        strategy = tf.distribute.get_strategy()  # the default: no replicas, one device
    if strategy.num_replicas_in_sync > args.batch_size:
        raise DeviceError(
            f"--batch_size {args.batch_size} is smaller than the "
            f"{strategy.num_replicas_in_sync} replicas: every replica needs genes"
        )
    if args.jit:
        check_jit(args, strategy)
    if args.mixed_precision == "auto":
        return (strategy, *auto_precision(gpu_capabilities(), cpu_flags()))
    if args.mixed_precision == "float16" and not gpu_capabilities():
        # CPUs have no float16 arithmetic: every op is emulated (a 2-step epoch took minutes).
        raise DeviceError(
            "--mixed_precision float16 is for GPUs: this machine has none, and on a CPU float16 "
            "is emulated, many times slower than float32; use auto, bfloat16 or off"
        )
    return strategy, args.mixed_precision, None


def check_jit(args, strategy) -> None:
    """Refuse --jit where XLA cannot compile Keras' training step (both fail at the first step).

    Keras 3 compiles the whole step, every local replica included, as one XLA program, which
    cannot reach the variables of the other devices (keras-team/keras#19005); and XLA has no
    collective ops on CPUs, which a multi-worker step needs.
    """
    import tensorflow as tf

    local = 1 if args.distribute == "none" else len(strategy.extended.worker_devices)
    if local > 1:
        raise DeviceError(
            f"--jit with {local} replicas on one machine: Keras compiles them into "
            "one XLA program, which TensorFlow cannot run; drop --jit or use one "
            "device per process"
        )
    if args.distribute == "multiworker" and not tf.config.list_logical_devices("GPU"):
        raise DeviceError(
            "--jit with --distribute multiworker needs GPUs: XLA has no "
            "collective operations on CPUs"
        )


def short(device: str) -> str:
    """ "/job:worker/replica:0/task:1/device:GPU:0" -> "GPU:0"."""
    return device.rsplit("device:", 1)[-1]


def describe(args, strategy) -> str:
    """The devices line printed at the start of a run."""
    import tensorflow as tf

    gpus = [short(d.name) for d in tf.config.list_logical_devices("GPU")]
    replicas = strategy.num_replicas_in_sync
    if args.distribute == "none":
        used = gpus[0] if gpus else "CPU:0"
        text = f"{used}, 1 replica"
        if len(gpus) > 1:
            text += f" ({len(gpus)} GPUs seen: --distribute mirrored uses them all)"
    else:
        used = ", ".join(short(d) for d in strategy.extended.worker_devices)
        name = {"mirrored": "MirroredStrategy", "multiworker": "MultiWorkerMirroredStrategy"}
        text = f"{used} ({name[args.distribute]}), {replicas} replica{'s' * (replicas > 1)}"
        if args.distribute == "multiworker":
            kind, index, _ = tf_config()
            role = "chief" if args.chief else "not the chief: writes no results"
            text += f" over {workers()} workers; this is {kind} {index}, {role}"
    per_replica = args.batch_size / replicas
    text += (
        f"; batch {args.batch_size} genes per step over all replicas"
        f" ({per_replica:.3g} per replica)"
        if replicas > 1
        else ""
    )
    text += f"; learning rate {learning_rate(args, strategy):g}"
    reason = getattr(args, "precision_reason", None)
    text += f"; mixed precision {policy(args) or 'off'}{f' (auto: {reason})' if reason else ''}"
    text += f"; XLA {'on' if args.jit else 'off'}"
    return text


def learning_rate(args, strategy) -> float:
    """--lr, times the replica count under --scale_lr (the linear scaling rule)."""
    return args.lr * (strategy.num_replicas_in_sync if args.scale_lr else 1)


def policy(args) -> str | None:
    """Keras dtype policy name for --mixed_precision, None when off."""
    return None if args.mixed_precision == "off" else f"mixed_{args.mixed_precision}"


def shared_seed(strategy, seed: int) -> int:
    """The chief's seed on every worker (unchanged without several workers).

    Every worker must draw the same mixed split and shuffle the genes in the same order:
    each takes its share of every global batch by position, so workers with different
    seeds would train on overlapping genes and skip others.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or workers() < 2:
        return seed

    def first_replica_only():
        ctx = tf.distribute.get_replica_context()
        return tf.where(
            ctx.replica_id_in_sync_group == 0, tf.constant(seed, tf.int64), tf.constant(0, tf.int64)
        )

    return int(strategy.reduce("SUM", strategy.run(first_replica_only), axis=None))


def chief_values(strategy, values: list) -> list[int]:
    """The chief's list of integers (flags) on every worker, e.g. a resumed run's finished
    cells; unchanged without several workers."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or workers() < 2:
        return [int(v) for v in values]
    mine = tf.constant([int(v) for v in values], tf.int64)

    def first_replica_only():
        ctx = tf.distribute.get_replica_context()
        return tf.where(ctx.replica_id_in_sync_group == 0, mine, tf.zeros_like(mine))

    summed = strategy.reduce("SUM", strategy.run(first_replica_only), axis=None)
    return [int(v) for v in summed.numpy()]


@contextlib.contextmanager
def scope(args, strategy):
    """Build, compile and fit a model inside this: its variables become the strategy's, and its
    layers compute in the mixed-precision policy (the output layer stays float32).

    The policy is set again for every model because keras.backend.clear_session(), called
    between cells, resets it to float32.
    """
    with dtype_policy(policy(args) or "float32"), strategy.scope():
        yield


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to `name` ("float32", "mixed_bfloat16", ...) inside
    this, and back to what it was after."""
    import keras

    before = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def _patch_keras_for_multiworker() -> None:
    """Two fixes that let Keras 3's model.fit run under MultiWorkerMirroredStrategy.

    Keras 3 (checked up to 3.15) fails there (keras-team/keras#20585):
    1. Before training it averages a first input batch across workers to learn the input
       shapes, passing a whole (x, y) tuple where TensorFlow takes one value: it only needs
       the shapes, so this worker's own first batch is given instead.
    2. It averages the per-step scalar losses and metrics over workers along axis 0, which
       a scalar does not have; this averages them with axis=None, as Keras already does over
       the replicas of one machine.
    The gradients, variables and data sharding stay Keras' and TensorFlow's own. A Keras release
    without these internals is refused (DeviceError naming its version): unpatched, its fit
    fails at the first step.
    """
    import keras
    import tensorflow as tf

    def missing(what: str) -> DeviceError:
        return DeviceError(
            f"--distribute multiworker: Keras {keras.__version__} has no {what}, which the "
            "multi-worker fix of keras-team/keras#20585 replaces (checked up to Keras 3.15); "
            "use such a Keras, or --distribute mirrored or none"
        )

    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer
    except ImportError:
        raise missing("keras.src.backend.tensorflow.trainer") from None
    if getattr(trainer, "_multiworker_patched", False):
        return
    for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer"):
        if not hasattr(trainer, name):
            raise missing(f"keras.src.backend.tensorflow.trainer.{name}")
    build = getattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    if build is None:
        raise missing("TensorFlowTrainer._maybe_symbolic_build")
    reduce_per_replica = trainer.reduce_per_replica

    def reduce_over_workers(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build_from_local_batch(self, iterator=None, data_batch=None):
        if data_batch is None and iterator is not None and self._distribute_strategy is not None:
            for item in iterator:
                batch = next(item[-1])
                break
            local = self.distribute_strategy.experimental_local_results
            data_batch = tree.map_structure(
                lambda v: local(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v,
                batch,
            )
        return build(self, data_batch=data_batch)

    trainer.reduce_per_replica = reduce_over_workers
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    trainer._multiworker_patched = True


# An INFO line of TensorFlow's C++ logging, and absl's notice that precedes such lines.
TF_INFO_LINE = re.compile(
    r"I\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
)


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
