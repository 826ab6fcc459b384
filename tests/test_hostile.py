"""Hostile input: each case ends in one line naming the file, exit status 2, no traceback, or is
accepted where the README says so; and a property-based fuzz of the loader."""

import math
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import data
import pooling
import results
import synth
from conftest import ROOT, assert_one_line_error, gene_rows, write_split

RNG = np.random.default_rng(5)
GENES = [gene_rows(f"{g:06d}", RNG.integers(0, 30, (100, 5)), g % 2) for g in range(1, 4)]
GOOD = [row for gene in GENES for row in gene]


def with_field(rows, i, col, value):
    rows = list(rows)
    fields = rows[i].split(",")
    fields[col] = value
    rows[i] = ",".join(fields)
    return rows


def run_main(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def make_cell(root, name="E001", **splits):
    """A cell whose splits are GOOD unless given (text, bytes or rows; None: no file)."""
    cls = root / name / "classification"
    cls.mkdir(parents=True, exist_ok=True)
    for s in data.SPLITS:
        content = splits.get(s, GOOD)
        if content is None:
            continue
        if isinstance(content, bytes):
            (cls / f"{s}.csv").write_bytes(content)
        else:
            write_split(cls / f"{s}.csv", content)
    return cls


TEXT = "".join(r + "\n" for r in GOOD)
HOSTILE = [
    # (case, train.csv content, fragments of the one-line error)
    ("truncated-mid-line", TEXT[: len(TEXT) // 2 + 7], [":151: expected 8 columns"]),
    ("random-bytes", RNG.integers(0, 256, 4000, dtype=np.uint8).tobytes(), ["train.csv:"]),
    (
        "huge-number",
        with_field(GOOD, 41, 4, "1e300"),
        [":42: H3K4me1 count is infinite or too large"],
    ),
    ("header-row", [",".join(data.COLUMNS)] + GOOD, [":1: looks like a header row"]),
    ("duplicate-gene-ids", GOOD + GENES[0], ["duplicate gene id(s) 000001"]),
    ("label-not-binary", with_field(GOOD, 0, 7, "7"), [":1: label 7 is not 0 or 1"]),
    ("negative-count", with_field(GOOD, 3, 2, "-1"), [":4: H3K27me3 count -1 is negative"]),
    ("empty", "", ["empty file"]),
]


@pytest.mark.parametrize("case,content,fragments", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_split_file(tmp_path, case, content, fragments):
    cls = make_cell(tmp_path / "d", train=content)
    res = run_main("--data_dir", tmp_path / "d", "--save_dir", tmp_path / "run", "--epochs", 1)
    assert_one_line_error(res, str(cls / "train.csv"), *fragments)
    assert not (tmp_path / "run").exists()


def test_partial_cell_folder(tmp_path):
    make_cell(tmp_path / "d", "E001")
    cls = make_cell(tmp_path / "d", "E002", test=None)
    # Named on the command line: an error naming what is missing.
    res = run_main("--data_dir", tmp_path / "d", "--cells", "E002", "--save_dir", tmp_path / "r")
    assert_one_line_error(res, str(cls), "missing test.csv")
    # Over all cells: skipped with a warning naming it, the others are used.
    assert data.select_cells(tmp_path / "d", None) == ["E001"]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_split_path_that_is_a_directory_or_fifo(tmp_path, kind):
    make_cell(tmp_path / "d", "E001")
    cls = make_cell(tmp_path / "d", "E002", valid=None)
    path = cls / "valid.csv"
    if kind == "directory":
        path.mkdir()
        problem = "is a directory, not a split file"
    else:
        os.mkfifo(path)  # opening it would wait for a writer: it must never be opened
        problem = "is a FIFO or other special file, not a split file"
    # Over all cells: an error naming it, not a skip (the file is there, so meant to be used).
    res = run_main("--data_dir", tmp_path / "d", "--save_dir", tmp_path / "r", "--epochs", 1)
    assert_one_line_error(res, f"{path}: {problem}")
    assert not (tmp_path / "r").exists()
    # Named: the same error; other cells named alone are not concerned.
    with pytest.raises(data.DataError, match=re.escape(f"{path}: {problem}")):
        data.select_cells(tmp_path / "d", "E001,E002")
    assert data.select_cells(tmp_path / "d", "E001") == ["E001"]
    with pytest.raises(data.DataError, match=re.escape(f"{path}: {problem}")):
        data.load_split(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    cls = make_cell(tmp_path / "d")
    (cls / "valid.csv").chmod(0)
    res = run_main("--data_dir", tmp_path / "d", "--save_dir", tmp_path / "r")
    assert_one_line_error(res, str(cls / "valid.csv"), "cannot read")


def test_unreadable_file_message(tmp_path, monkeypatch):
    # The same path as test_unreadable_file, reachable as root too: the parser's open fails.
    cls = make_cell(tmp_path / "d")

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data, "_read_table", refuse)
    with pytest.raises(data.DataError, match=r"valid\.csv: cannot read: Permission denied"):
        data.load_split(cls / "valid.csv", cache=False)


def test_accepted_inputs(tmp_path):
    # Windows line endings and a trailing blank line: accepted.
    crlf = "\r\n".join(GOOD) + "\r\n\r\n"
    # A count far beyond any real read depth but finite in float32: accepted, and the
    # per-bin normalization keeps every feature in [0, 1].
    huge = with_field(GOOD, 41, 4, "99999999999999999999999")
    cls = make_cell(tmp_path, train=crlf, valid=huge)
    (x, y), (xv, yv), _ = data.load_data(cls.parent)
    assert x.shape == (3, 505, 1) and xv.shape == (3, 505, 1)
    assert np.isfinite(xv).all() and xv.min() >= 0 and xv.max() <= 1
    assert xv[0, 41 * 5 + 2, 0] == 1.0  # bin 42, H3K4me1: the largest count of its bin


@pytest.mark.slow
def test_foreign_truncated_and_unsafe_models(tmp_path, tiny_dir):
    import keras

    foreign = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    foreign.save(tmp_path / "foreign.keras")
    res = run_main(
        "--data_dir",
        tiny_dir,
        "--weights",
        tmp_path / "foreign.keras",
        "--save_dir",
        tmp_path / "r1",
    )
    assert_one_line_error(res, "foreign.keras", "not this project's network")

    blob = (tmp_path / "foreign.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(blob[: len(blob) // 2])
    res = run_main(
        "--data_dir", tiny_dir, "--weights", tmp_path / "cut.keras", "--save_dir", tmp_path / "r2"
    )
    assert_one_line_error(res, "cut.keras", "cannot load as a Keras model")

    # A Lambda layer carries Python code: safe mode refuses to deserialize it, so the code
    # (which would leave a marker file) never runs.
    marker = tmp_path / "ran"
    where = str(marker)
    inp = keras.Input((505, 1))
    lam = keras.layers.Lambda(lambda t: t + (open(where, "w").close() or 0))
    unsafe = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(lam(inp))))
    marker.unlink()
    unsafe.save(tmp_path / "unsafe.keras")
    res = run_main(
        "--data_dir",
        tiny_dir,
        "--weights",
        tmp_path / "unsafe.keras",
        "--save_dir",
        tmp_path / "r3",
    )
    assert_one_line_error(res, "unsafe.keras", "cannot load as a Keras model")
    assert not marker.exists()


def test_mixed_memory_estimate_refuses(tmp_path, tiny_dir):
    res = run_main(
        "--data_dir", tiny_dir, "--mix", "--max_memory", "0.001", "--save_dir", tmp_path / "r"
    )
    assert_one_line_error(res, "the mixed experiment on 3 cells needs about", "--max_memory")
    assert not (tmp_path / "r").exists()
    need = pooling.mixed_bytes(tiny_dir, data.list_cells(tiny_dir))
    assert need == 3 * 3 * 40 * (505 * 4 + 8 + 2 * 64 * 4)  # ids and cell names up to 64 chars


# ---------------------------------------------------------------------------------------------
# --resume and a results table that is not one main.py wrote

ROWS = [
    {
        "cell": "E001",
        "auc": 0.8,
        "accuracy": 0.7,
        "n_test": 50,
        "best_epoch": 3,
        "attempts": 1,
        "sound": True,
    },
    {
        "cell": "E002",
        "auc": math.nan,
        "accuracy": 0.5,
        "n_test": 50,
        "best_epoch": 1,
        "attempts": 2,
        "sound": False,
    },
]
BAD_LINES = [
    # (case, lines appended to a good table, fragment of the message)
    ("garbage", "xx,yy\n", "output.csv:4: 2 fields where the header has 7"),
    ("truncated", "E003,0.71\n", "output.csv:4: 2 fields where the header has 7"),
    (
        "too-many-fields",
        "E003,0.7,0.6,50,2,1,,9\n",
        "output.csv:4: 8 fields where the header has 7",
    ),
    ("seven-garbage-fields", "a,b,c,d,e,f,g\n", "output.csv:4: auc 'b' is not a number between 0"),
    ("nan-auc", "E003,nan,0.6,50,2,1,True\n", "output.csv:4: auc 'nan' is not a number between"),
    ("accuracy", "E003,0.7,1.5,50,2,1,True\n", "output.csv:4: accuracy '1.5' is not a number"),
    ("n_test", "E003,0.7,0.6,,2,1,True\n", "output.csv:4: n_test '' is not a count of genes"),
    (
        "attempts",
        "E003,0.7,0.6,50,2,0,True\n",
        "output.csv:4: attempts '0' is not a number of attempts",
    ),
    ("sound", "E003,0.7,0.6,50,2,1,maybe\n", "output.csv:4: sound 'maybe' is not True, False or"),
    ("empty-cell", ",0.7,0.6,50,2,1,True\n", "output.csv:4: empty cell name"),
    ("duplicate", "E001,0.7,0.6,50,2,1,True\n", "output.csv:4: cell E001 is also on line 2"),
]


@pytest.mark.parametrize("case,lines,message", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_resume_refuses_a_malformed_results_table(tmp_path, case, lines, message):
    path = tmp_path / "output.csv"
    results.write_table(path, ROWS)
    before = path.read_text() + lines
    path.write_text(before)
    with pytest.raises(data.DataError) as err:
        results.Results(path, ["E001", "E002", "E003"], resume=True)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))
    assert message in str(err.value) and "fix or remove that line" in str(err.value)
    assert path.read_text() == before


def test_resume_reads_back_what_main_writes(tmp_path):
    # The table as main.py writes it, undefined AUC (empty) and missing best epoch included.
    path = tmp_path / "output.csv"
    rows = ROWS + [{"cell": "E003", "auc": 0.6, "accuracy": 0.6, "n_test": 9, "best_epoch": None}]
    results.write_table(path, rows)
    table = results.Results(path, ["E001", "E002", "E003"], resume=True)
    assert [r["cell"] for r in table.values()] == ["E001", "E002", "E003"]
    assert table.rows["E002"]["auc"] is None and table.rows["E003"]["best_epoch"] is None
    assert table.rows["E001"]["sound"] is True and table.rows["E002"]["sound"] is False
    assert table.rows["E003"]["sound"] is None  # not judged
    (tmp_path / "header.csv").write_text(",".join(results.RESULT_COLUMNS) + "\n")
    assert results.read_table(tmp_path / "header.csv") == {}  # no cell finished yet
    # Tables written before the sound column, and before the attempts column, still resume.
    (tmp_path / "older.csv").write_text(
        "cell,auc,accuracy,n_test,best_epoch,attempts\nE1,0.7,0.6,9,1,2\n"
    )
    assert results.read_table(tmp_path / "older.csv")["E1"]["attempts"] == 2
    (tmp_path / "oldest.csv").write_text("cell,auc,accuracy,n_test,best_epoch\nE1,0.7,0.6,9,1\n")
    assert results.read_table(tmp_path / "oldest.csv")["E1"]["auc"] == 0.7
    (tmp_path / "other.csv").write_text("cell,auc\nE001,0.7\n")
    with pytest.raises(data.DataError, match=r"other\.csv:1: header 'cell,auc', expected"):
        results.read_table(tmp_path / "other.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(data.DataError, match=r"empty\.csv: empty file; fix or remove the file"):
        results.read_table(tmp_path / "empty.csv")
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(data.DataError, match=r"fifo\.csv: is a FIFO"):
        results.read_table(tmp_path / "fifo.csv")


@pytest.mark.slow
def test_resume_of_a_malformed_table_ends_in_one_line(tmp_path, tiny_dir):
    save = tmp_path / "run"
    res = run_main(
        "--data_dir", tiny_dir, "--cells", "S001", "--epochs", 1, "--seed", 1, "--save_dir", save
    )
    assert res.returncode == 0, res.stderr[-3000:]
    table = save / "output.csv"
    before = table.read_text() + "xx,yy\n"
    table.write_text(before)
    res = run_main("--save_dir", save, "--resume")
    assert_one_line_error(res, f"{table}:3: 2 fields where the header has 7", "fix or remove")
    assert table.read_text() == before


# ---------------------------------------------------------------------------------------------
# Property-based: whatever the bytes, the loader returns valid arrays or raises DataError.

LINE_EDITS = st.sampled_from(["drop", "dup", "cut", "field", "swap", "junk"])
FIELD_VALUES = st.sampled_from(
    [
        "",
        "x",
        "-1",
        "nan",
        "inf",
        "1e400",
        "2",
        "0.5",
        " 3 ",
        "1,1",
        "000001",
        "\x00",
        "é",
        "1e38",
        "+4",
        "0x10",
        '"7"',
    ]
)


@st.composite
def malformed_files(draw):
    rows = list(draw(st.sampled_from([GOOD, GOOD[:200], GOOD[:100]])))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(rows) - 1)) if rows else 0
        edit = draw(LINE_EDITS)
        if not rows:
            break
        if edit == "drop":
            rows.pop(i)
        elif edit == "dup":
            rows.insert(i, rows[i])
        elif edit == "cut":
            rows[i] = rows[i][: draw(st.integers(0, len(rows[i])))]
        elif edit == "field":
            col = min(draw(st.integers(0, 7)), rows[i].count(","))  # a cut row has fewer
            rows = with_field(rows, i, col, draw(FIELD_VALUES))
        elif edit == "swap":
            j = draw(st.integers(0, len(rows) - 1))
            rows[i], rows[j] = rows[j], rows[i]
        else:
            rows.insert(i, draw(st.text(max_size=40)))
    text = "\n".join(rows) + draw(st.sampled_from(["", "\n", "\r\n", "\n\n"]))
    return text.encode("utf-8", "surrogatepass") + draw(st.binary(max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=malformed_files())
def test_loader_never_fails_otherwise(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "train.csv"
    path.write_bytes(content)
    try:
        split = data.load_split(path, cache=False)
    except data.DataError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    else:
        n = len(split.ids)
        assert n >= 1 and split.x.shape == (n, 505, 1) and split.x.dtype == np.float32
        assert np.isfinite(split.x).all() and split.x.min() >= 0 and split.x.max() <= 1
        assert split.y.shape == (n, 2) and set(np.unique(split.labels)) <= {0, 1}
        assert len(set(split.ids)) == n
    shutil.rmtree(path.parent)


@pytest.mark.parametrize(
    "recorded,fragment",
    [
        ('{"lr": Infinity, "epochs": -5}', "--epochs must be at least 1, got -5"),
        ('{"lr": Infinity}', "--lr must be in (0, 1], got inf"),
        ('{"epochs": "two"}', "invalid int value: 'two'"),
        ('{"epochs": "two", "lr": null}', "--lr is null"),
        ('{"lr": null}', "--lr is null"),
        ("[1, 2]", "not a run's settings"),
        ('{"cells": [1, 2]}', "is not a list of cell names"),
        ('{"freeze_conv": "sometimes"}', '--freeze_conv "sometimes" is not true or false'),
        ('{"recipe": "fast"}', "invalid choice: 'fast'"),
    ],
)
def test_resume_checks_the_recorded_settings_as_the_command_line(
    tmp_path, capsys, recorded, fragment
):
    import main

    (tmp_path / "args.json").write_text(recorded)
    assert main.main(["--save_dir", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert f"{tmp_path / 'args.json'}:" in err and fragment in err, err
    assert (tmp_path / "args.json").read_text() == recorded  # nothing written over


# ---------------------------------------------------------------------------------------------
# Sizes that allocate, overwriting, and writing that fails (read-only folders, a full disk)


def run_script_(script, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize(
    "cells,genes,fragment",
    [
        (1, 10**9, "of memory to generate"),
        (10**8, 1000, "on disk, more than"),
    ],
)
def test_synth_refuses_what_cannot_fit(tmp_path, cells, genes, fragment):
    res = run_script_("synth.py", "--out", tmp_path / "d", "--cells", cells,
                      "--genes", genes)  # fmt: skip
    assert_one_line_error(res, str(tmp_path / "d"), fragment)
    assert not (tmp_path / "d").exists()


def test_synth_does_not_replace_cells_unless_asked(tmp_path):
    synth.synthesize(tmp_path, n_cells=1, n_genes=12, seed=0)
    before = (tmp_path / "S001/classification/train.csv").read_bytes()
    res = run_script_("synth.py", "--out", tmp_path, "--cells", 1, "--genes", 10)
    assert_one_line_error(res, "already holds S001", "--overwrite")
    assert (tmp_path / "S001/classification/train.csv").read_bytes() == before
    res = run_script_("synth.py", "--out", tmp_path, "--cells", 1, "--genes", 10,
                      "--overwrite")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert len(data.load_cell(tmp_path / "S001").train.ids) == 10


def test_explain_steps_have_an_upper_bound(tmp_path):
    res = run_script_("explain.py", tmp_path, "--steps", 10**9)
    assert_one_line_error(res, "--steps must be 1 to 1024")


def refuse_writes_under(monkeypatch, folder, errno_=None):
    """Temporary files cannot be made under `folder`, as on a read-only file system."""
    import errno
    import tempfile

    import files

    real = tempfile.mkstemp
    code = errno_ or errno.EROFS

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and str(os.path.abspath(dir)).startswith(str(folder)):
            raise OSError(code, os.strerror(code), os.path.join(dir, ".x.tmp"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)


def fill_disk_on(monkeypatch, cls, method):
    """`cls.method` writes a few bytes, then finds the disk full."""
    import errno

    def full(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cls, method, full)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def hidden(folder):
    return [p.name for p in folder.rglob(".*")]


def compare_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"cell": "E003", "auc": 0.8, "accuracy": 0.7, "n_test": 50, "best_epoch": 2}]
    results.write_table(run / "output.csv", rows)
    return run


def test_compare_into_a_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import utils

    run = compare_run(tmp_path)
    refuse_writes_under(monkeypatch, tmp_path / "ro")
    for out in (tmp_path / "ro" / "auc.png", tmp_path / "ro" / "new" / "auc.png"):
        assert utils.main(["compare", str(run), "--out", str(out)]) == 2
        err = one_line(capsys)
        assert f"{out.parent}: cannot write there" in err, err
    assert not list((tmp_path / "ro").rglob("*.png"))


def test_compare_on_a_full_disk_keeps_the_earlier_figure_and_tables(tmp_path, monkeypatch, capsys):
    import utils

    run = compare_run(tmp_path)
    out = tmp_path / "o" / "auc.png"
    out.parent.mkdir()
    for suffix in (".png", ".csv", ".md"):
        out.with_suffix(suffix).write_text(f"earlier {suffix}")
    fill_disk_on(monkeypatch, pd.DataFrame, "to_csv")
    assert utils.main(["compare", str(run), "--out", str(out)]) == 2
    assert f"{out.with_suffix('.csv')}: cannot write there (No space left" in one_line(capsys)
    for suffix in (".png", ".csv", ".md"):  # all three as they were, no temporary left
        assert out.with_suffix(suffix).read_text() == f"earlier {suffix}"
    assert hidden(out.parent) == []


def test_plot_in_a_read_only_run_folder_is_one_line(tmp_path, monkeypatch, capsys):
    import utils

    folder = tmp_path / "run" / "S001"
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": [0, 1], "loss": [0.7, 0.6], "val_loss": [0.7, 0.65]}).to_csv(
        folder / "log.csv", index=False
    )
    refuse_writes_under(monkeypatch, tmp_path / "run")
    assert utils.main(["plot", str(tmp_path / "run")]) == 2
    assert f"{folder}: cannot write there (Read-only file system)" in one_line(capsys)
    assert not (folder / "log.png").exists()


def test_float16_is_refused_without_a_gpu(tmp_path, monkeypatch):
    import distribute

    monkeypatch.setattr(distribute, "gpu_capabilities", lambda: [])
    args = SimpleNamespace(devices=None, distribute="none", batch_size=100, jit=False,
                           mixed_precision="float16")  # fmt: skip
    with pytest.raises(distribute.DeviceError, match="float16 is for GPUs: this machine has none"):
        distribute.setup(args)
    monkeypatch.setattr(distribute, "gpu_capabilities", lambda: [(7, 5)])
    _, precision, reason = distribute.setup(args)  # a GPU: float16 is the user's to ask for
    assert precision == "float16" and reason is None
