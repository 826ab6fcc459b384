"""Bigger hardware on a CPU: MirroredStrategy over logical CPUs, two workers on 127.0.0.1,
mixed precision and XLA. Each run goes through the command line in its own process, so each
gets a fresh TensorFlow (logical devices and the cluster are fixed when TensorFlow starts)."""

import json
import math
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import distribute
from conftest import ROOT, assert_one_line_error

TINY = ["--epochs", "1", "--batch_size", "16"]


def run(*args, env=None, check=True, code=None):
    """main.py with `args`; with `code`, that Python code runs instead of the script (it
    receives the arguments in sys.argv)."""
    entry = ["-c", code] if code else [str(ROOT / "main.py")]
    res = subprocess.run(
        [sys.executable, *entry, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


one_line_error = assert_one_line_error


def check_cell(folder):
    """A trained cell: the AUC callback's columns, the checkpoint, test predictions."""
    log = pd.read_csv(folder / "log.csv")
    assert len(log) == 1
    for column in ("auc", "val_auc", "loss", "val_accuracy"):
        assert np.isfinite(log[column]).all(), column
    assert (folder / "best_model.keras").is_file() and (folder / "final_model.keras").is_file()
    pred = pd.read_csv(folder / "predictions.csv")
    assert len(pred) == 40 and pred.probability.between(0, 1).all()
    return log


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(tiny_dir, tmp_path):
    save = tmp_path / "run"
    res = run(
        "--data_dir",
        tiny_dir,
        *TINY,
        "--cells",
        "S001",
        "--seed",
        3,
        "--save_dir",
        save,
        "--distribute",
        "mirrored",
        "--devices",
        "CPU:0,CPU:1",
        "--scale_lr",
    )
    assert "Devices: CPU:0, CPU:1 (MirroredStrategy), 2 replicas;" in res.stdout, res.stdout
    assert "8 per replica" in res.stdout
    table = pd.read_csv(save / "output.csv", dtype={"cell": str})
    assert list(table.cell) == ["S001"] and math.isfinite(table.auc[0])
    log = check_cell(save / "S001")
    assert log.learning_rate[0] == pytest.approx(0.002)  # --scale_lr: 0.001 x 2 replicas
    args = json.loads((save / "args.json").read_text())
    assert (args["distribute"], args["devices"], args["scale_lr"]) == (
        "mirrored",
        "CPU:0,CPU:1",
        True,
    )


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def run_workers(tiny_dir, tmp_path, *args):
    """Two workers on 127.0.0.1, each with its own save_dir and TMPDIR (so a stray write would
    show); returns their logs once both have exited 0."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs, outs = [], []
    for index in (0, 1):
        tmp = tmp_path / f"tmp{index}"
        tmp.mkdir(exist_ok=True)
        env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "TF_CONFIG": json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        }
        out = open(tmp_path / f"worker{index}.log", "w+")
        outs.append(out)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "main.py"),
                    "--data_dir",
                    str(tiny_dir),
                    *TINY,
                    "--save_dir",
                    str(tmp_path / f"run{index}"),
                    "--distribute",
                    "multiworker",
                    *map(str, args),
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.time() + 240
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = []
    for out in outs:
        out.seek(0)
        logs.append(out.read())
        out.close()
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    return logs


@pytest.mark.slow
def test_multiworker_two_processes_only_the_chief_writes(tiny_dir, tmp_path):
    # No --seed: the workers must agree on the chief's random seed by themselves.
    logs = run_workers(tiny_dir, tmp_path, "--cells", "S001")

    for index, log in enumerate(logs):
        assert "(MultiWorkerMirroredStrategy), 2 replicas over 2 workers" in log
        assert f"this is worker {index}" in log
    chief = tmp_path / "run0"
    table = pd.read_csv(chief / "output.csv", dtype={"cell": str})
    assert list(table.cell) == ["S001"] and math.isfinite(table.auc[0])
    check_cell(chief / "S001")
    assert not (tmp_path / "run1").exists()  # the other worker wrote no results
    assert list((tmp_path / "tmp1").iterdir()) == []  # and removed its temporary files
    seed = json.loads((chief / "args.json").read_text())["seed"]
    assert f"(seed {seed})" in logs[1]  # one shared seed: one split, one shuffle order
    # In step: both workers logged the same all-reduced epoch (timings aside).
    epochs = [
        [line.split("/step - ", 1)[1] for line in log.splitlines() if "val_auc:" in line]
        for log in logs
    ]
    assert len(epochs[0]) == 1 and epochs[0] == epochs[1]


@pytest.mark.slow
def test_multiworker_resume(tiny_dir, tmp_path):
    first = run_workers(tiny_dir, tmp_path, "--cells", "S001,S002", "--seed", 4)
    chief = tmp_path / "run0"
    table = (chief / "output.csv").read_text()
    # As if stopped during S002: its row never written. The other worker has no save_dir
    # (as on another machine): it learns the finished cells from the chief.
    (chief / "output.csv").write_text("".join(table.splitlines(keepends=True)[:2]))
    logs = run_workers(tiny_dir, tmp_path, "--cells", "S001,S002", "--seed", 4, "--resume")
    for log in logs:
        assert "S001: finished earlier, kept" in log and "Cell 2/2: S002" in log
    assert (chief / "output.csv").read_text() == table
    assert first[0].count("val_auc:") == 2 and logs[0].count("val_auc:") == 1


# main.py in a child process whose CPU detection is replaced: auto as on a machine with
# (amx) or without (plain) bfloat16, whatever this machine has.
DETECTED = (
    "import runpy, sys; sys.path.insert(0, {root!r}); import distribute; "
    "distribute.cpu_flags = lambda path=None: {flags!r}; "
    "distribute.gpu_capabilities = lambda: []; "
    "sys.argv = ['main.py'] + sys.argv[1:]; runpy.run_path({main!r}, run_name='__main__')"
)


@pytest.fixture(scope="module")
def precision_runs(tiny_dir, tmp_path_factory):
    """One seeded run of two cells (the policy must survive the session reset between cells)
    per precision setting: {name: run folder}."""
    tmp = tmp_path_factory.mktemp("precision")
    runs = {}
    for name, flags, argv in (
        ("off", None, ["--mixed_precision", "off"]),
        ("auto, no bfloat16", set(), []),  # auto is the default
        ("auto, AMX", {"amx_bf16", "avx512_bf16"}, ["--mixed_precision"]),
        ("bfloat16", None, ["--mixed_precision", "bfloat16"]),
    ):
        save = tmp / name.replace(" ", "_").replace(",", "")
        cli = ["--data_dir", tiny_dir, *TINY, "--cells", "S001,S002", "--seed", 3]
        cli += ["--save_dir", save, *argv]
        detected = (
            None
            if flags is None
            else DETECTED.format(root=str(ROOT), flags=flags, main=str(ROOT / "main.py"))
        )
        run(*cli, code=detected)
        runs[name] = save
    return runs


def tables(save):
    """The run's results, byte for byte: output.csv, and each cell's log and predictions."""
    names = ["output.csv"] + [
        f"{cell}/{f}" for cell in ("S001", "S002") for f in ("log.csv", "predictions.csv")
    ]
    return {n: (save / n).read_bytes() for n in names}


@pytest.mark.slow
def test_off_reproduces_the_float32_run_byte_for_byte(precision_runs):
    import main

    # auto is the default: bfloat16 costs no AUC beyond seed noise (docs/speed.md).
    assert main.parse_args([]).mixed_precision == "auto"
    assert main.parse_args(["--mixed_precision"]).mixed_precision == "auto"
    off = tables(precision_runs["off"])
    # The default on a machine without bfloat16 is float32: the same run, bit for bit.
    assert tables(precision_runs["auto, no bfloat16"]) == off
    # With AMX auto computes in bfloat16, which does change the numbers: the
    # comparison above could fail.
    assert tables(precision_runs["auto, AMX"]) == tables(precision_runs["bfloat16"])
    assert tables(precision_runs["bfloat16"])["S001/predictions.csv"] != off["S001/predictions.csv"]
    recorded = {
        name: json.loads((save / "args.json").read_text()) for name, save in precision_runs.items()
    }
    assert recorded["off"]["mixed_precision"] == "off"
    assert recorded["auto, no bfloat16"]["mixed_precision"] == "off"
    assert "without bfloat16" in recorded["auto, no bfloat16"]["precision_reason"]
    assert recorded["auto, AMX"]["mixed_precision"] == "bfloat16"
    assert "AMX" in recorded["auto, AMX"]["precision_reason"]


@pytest.mark.parametrize("name", ["off", "bfloat16"])
def test_outputs_stay_float32_under_both_policies(precision_runs, name):
    import keras

    import Convnet

    save = precision_runs[name]
    compute = "bfloat16" if name == "bfloat16" else "float32"
    for cell in ("S001", "S002"):
        check_cell(save / cell)
        model = Convnet.load_model(str(save / cell / "best_model.keras"))
        # conv1, over one input channel, computes in float32 under every policy.
        assert model.get_layer("conv1").compute_dtype == "float32"
        assert model.get_layer("conv1").activation is keras.activations.tanh
        assert model.get_layer("conv2").compute_dtype == compute
        assert model.get_layer("conv3").compute_dtype == compute
        # Under bfloat16 conv2 and conv3 add their bias and take tanh in float32, and the
        # dense layers are float32; under off every layer is Keras' own, as in the paper.
        conv = Convnet.MixedConv1D if name == "bfloat16" else keras.layers.Conv1D
        assert [type(model.get_layer(n)) for n in ("conv2", "conv3")] == [conv, conv]
        for layer in ("conv2", "conv3", "dense1", "dense2", "dense3"):
            assert model.get_layer(layer).activation is keras.activations.tanh
        for layer in ("dense1", "dense2", "dense3"):
            assert model.get_layer(layer).compute_dtype == "float32"
        assert Convnet.variant_of(model) == "full"
        assert model.get_layer("output").dtype_policy.name == "float32"
        assert model.output.dtype == "float32"
        assert all(w.dtype == "float32" for w in model.weights)
        assert model.predict(np.zeros((3, 505, 1), np.float32), verbose=0).dtype == np.float32


@pytest.mark.slow
def test_jit_compiles_with_xla(tiny_dir, tmp_path):
    save = tmp_path / "run"
    # TensorFlow says so in an INFO line once XLA has compiled a step.
    res = run(
        "--data_dir",
        tiny_dir,
        *TINY,
        "--cells",
        "S001",
        "--save_dir",
        save,
        "--jit",
        env={"TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert "Compiled cluster using XLA" in res.stderr
    assert "XLA on" in res.stdout
    assert json.loads((save / "args.json").read_text())["jit"] is True
    check_cell(save / "S001")


@pytest.mark.parametrize(
    "argv,env,fragment",
    [
        (["--devices", "GPU:0"], {}, "--devices needs --distribute mirrored"),
        (["--distribute", "mirrored", "--devices", "gpu0"], {}, "not a device name"),
        (["--distribute", "multiworker"], {"TF_CONFIG": ""}, "needs the TF_CONFIG"),
        (["--distribute", "multiworker"], {"TF_CONFIG": "{oops"}, "not valid JSON"),
        (
            ["--distribute", "multiworker"],
            {
                "TF_CONFIG": '{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}'
            },
            "not in its cluster",
        ),
        (["--jit", "--seed", "1"], {}, "cannot be combined with --seed"),
        (["--mixed_precision", "half"], {}, "invalid choice"),
    ],
)
def test_bad_hardware_flags_fail_at_once(tiny_dir, tmp_path, argv, env, fragment):
    one_line_error(
        run("--data_dir", tiny_dir, "--save_dir", tmp_path / "s", *argv, env=env, check=False),
        fragment,
    )
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--devices", "GPU:7"], "TensorFlow sees no GPU:7"),
        (["--devices", "CPU:0,CPU:1", "--jit"], "--jit with 2 replicas on one machine"),
    ],
)
def test_impossible_devices_fail_without_leaving_a_folder(tiny_dir, tmp_path, argv, fragment):
    res = run(
        "--data_dir",
        tiny_dir,
        "--save_dir",
        tmp_path / "s",
        "--distribute",
        "mirrored",
        *argv,
        check=False,
    )
    one_line_error(res, fragment)
    assert not (tmp_path / "s").exists()


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_bf16 amx_tile\n\n")
    assert {"avx512_bf16", "amx_bf16"} <= distribute.cpu_flags(str(info))
    assert distribute.cpu_flags(str(tmp_path / "none")) == set()


@pytest.mark.parametrize(
    "gpus, flags, expected",
    [
        ([], {"avx512_bf16", "amx_bf16", "amx_tile"}, "bfloat16"),  # Sapphire Rapids and up
        ([], {"avx512_bf16"}, "off"),  # e.g. AMD Zen 4: not measured faster, float32
        ([], {"avx2", "fma"}, "off"),
        ([(9, 0)], set(), "bfloat16"),  # H100
        ([(8, 0), (8, 6)], {"amx_bf16"}, "bfloat16"),  # the GPU decides, not the CPU
        ([(7, 0)], {"amx_bf16"}, "off"),  # V100: float16 only when asked for
        ([(8, 0), (7, 5)], set(), "off"),  # the oldest GPU decides
        ([(6, 1)], set(), "off"),
    ],
)
def test_auto_precision(gpus, flags, expected):
    chosen, reason = distribute.auto_precision(gpus, flags)
    assert chosen == expected and reason


@pytest.mark.parametrize("flags, expected", [({"amx_bf16"}, "bfloat16"), (set(), "off")])
def test_setup_resolves_auto_from_the_detected_hardware(monkeypatch, flags, expected):
    import config

    monkeypatch.setattr(distribute, "cpu_flags", lambda: flags)
    monkeypatch.setattr(distribute, "gpu_capabilities", lambda: [])
    cfg = config.Config()  # the defaults: --mixed_precision auto
    strategy, precision, reason = distribute.setup(cfg)
    assert precision == expected and reason and cfg.mixed_precision == "auto"
    run = config.Run(cfg, strategy, mixed_precision=precision, precision_reason=reason)
    described = distribute.describe(run, strategy)
    assert f"(auto: {reason})" in described
    assert ("mixed_bfloat16" in described) == (expected == "bfloat16")


def test_multiworker_fix_refuses_a_keras_without_its_internals(monkeypatch):
    import keras
    from keras.src.backend.tensorflow import trainer

    monkeypatch.delattr(trainer, "_multiworker_patched", raising=False)
    monkeypatch.delattr(trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(distribute.DeviceError) as e:
        distribute._patch_keras_for_multiworker()
    assert f"Keras {keras.__version__} has no" in str(e.value)
    assert "_collective_all_reduce_multi_worker" in str(e.value)
    assert "\n" not in str(e.value)
