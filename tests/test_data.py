"""Reading, checking, preprocessing and caching the split files (data.py)."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import data
import pooling
import synth
from conftest import ROOT, gene_rows, write_split


def test_preprocess_matches_hand_computed_values():
    counts = np.zeros((1, 100, 5))
    counts[0, 0] = [4, 2, 0, 0, 1]  # max in H3K27me3
    counts[0, 1] = [0, 6, 3, 0, 0]  # max in H3K36me3
    counts[0, 2] = [1, 0, 5, 0, 0]  # max in H3K4me1
    counts[0, 3] = [0, 0, 0, 8, 2]  # max in H3K4me3
    counts[0, 4] = [0, 1, 0, 0, 3]  # max in H3K9me3
    # bin 6 onwards all zero (an all-zero bin); H3K9me3... all marks appear, none all-zero here
    x = data.preprocess(counts)
    assert x.shape == (1, 505, 1) and x.dtype == np.float32
    norm = x[0, :500, 0].reshape(100, 5)
    np.testing.assert_allclose(norm[0], [1, 0.5, 0, 0, 0.25])
    np.testing.assert_allclose(norm[1], [0, 1, 0.5, 0, 0])
    np.testing.assert_allclose(norm[2], [0.2, 0, 1, 0, 0])
    np.testing.assert_allclose(norm[3], [0, 0, 0, 1, 0.25])
    np.testing.assert_allclose(norm[4], [0, 1 / 3, 0, 0, 1])
    assert not norm[5:].any()  # all-zero bins stay 0, no NaN
    # bin-major flattening: bin 1's five marks come first
    np.testing.assert_allclose(x[0, :5, 0], [1, 0.5, 0, 0, 0.25])
    sums = np.array([1.2, 1 + 0.5 + 1 / 3, 1.5, 1.0, 1.5])
    np.testing.assert_allclose(x[0, 500:, 0], sums / sums.max(), rtol=1e-6)


def test_preprocess_all_zero_mark_and_gene():
    counts = np.zeros((2, 100, 5), dtype=np.float32)
    counts[0, :, 1] = 3  # only H3K36me3 present: every other mark is an all-zero column
    x = data.preprocess(counts)
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x[0, :500, 0].reshape(100, 5)[:, 1], 1)
    np.testing.assert_array_equal(x[0, 500:, 0], [0, 1, 0, 0, 0])
    assert not x[1].any()  # an all-zero gene stays all zero
    assert data.preprocess(counts, additional_features=False).shape == (2, 500, 1)


def test_splits_shapes_dtypes_labels_and_ids(tmp_path):
    rng = np.random.default_rng(0)
    rows = gene_rows("000042", rng.integers(0, 9, (100, 5)), 1)
    rows += gene_rows("001000", rng.integers(0, 9, (100, 5)), 0)
    for s in data.SPLITS:
        write_split(tmp_path / "E001" / "classification" / f"{s}.csv", rows)
    cell = data.load_cell(tmp_path / "E001")
    assert cell.name == "E001"
    for split in (cell.train, cell.valid, cell.test):
        assert split.x.shape == (2, 505, 1) and split.x.dtype == np.float32
        assert split.y.dtype == np.float32
        np.testing.assert_array_equal(split.y, [[0, 1], [1, 0]])
        assert list(split.ids) == ["000042", "001000"]  # text, leading zeros kept
    (xt, yt), (xv, yv), (xs, ys) = data.load_data(tmp_path / "E001")
    np.testing.assert_array_equal(xt, cell.train.x)
    # the classification folder itself is accepted too
    (xt2, _), _, _ = data.load_data(tmp_path / "E001" / "classification")
    np.testing.assert_array_equal(xt2, xt)
    (x500, _), _, _ = data.load_data(tmp_path / "E001", additional_features=False)
    assert x500.shape == (2, 500, 1)
    np.testing.assert_array_equal(x500[:, :, 0], xt[:, :500, 0])


def test_synthetic_data_reads_back(tiny_dir):
    cells = data.list_cells(tiny_dir)
    assert cells == ["S001", "S002", "S003"]
    first = (tiny_dir / "S001/classification/train.csv").read_text().splitlines()[:2]
    gid, bin1, *marks, label = first[0].split(",")
    assert len(gid) == 6 and gid.isdigit() and bin1 == "1" and label in "01" and len(marks) == 5
    assert first[1].split(",")[1] == "2"
    cell = data.load_cell(tiny_dir / "S001")
    assert [len(s.ids) for s in (cell.train, cell.valid, cell.test)] == [40, 40, 40]
    # same genes per split in every cell, as in the real data; splits are disjoint
    other = data.load_cell(tiny_dir / "S002")
    np.testing.assert_array_equal(cell.test.ids, other.test.ids)
    assert not set(cell.train.ids) & set(cell.test.ids)
    # labels are a median split of the cell's genes
    labels = np.concatenate([s.labels for s in (cell.train, cell.valid, cell.test)])
    assert labels.mean() == pytest.approx(0.5)


def test_synthetic_is_seeded(tmp_path):
    synth.synthesize(tmp_path / "a", 1, 5, seed=3)
    synth.synthesize(tmp_path / "b", 1, 5, seed=3)
    synth.synthesize(tmp_path / "c", 1, 5, seed=4)
    a, b, c = ((tmp_path / d / "S001/classification/train.csv").read_bytes() for d in "abc")
    assert a == b and a != c


def test_synthetic_noise_option(tmp_path):
    # The default is the former hard-coded 0.9, to the byte; one value or one per cell.
    def files(folder, **kw):
        synth.synthesize(tmp_path / folder, 2, 5, seed=3, **kw)
        return [p.read_bytes() for p in sorted((tmp_path / folder).rglob("*.csv"))]

    default = files("default")
    assert files("one", noise=0.9) == default and files("each", noise=[0.9, 0.9]) == default
    mixed = files("mixed", noise=[0.9, 1.5])
    assert mixed[:3] == default[:3] and mixed[3:] != default[3:]  # only S002 changed
    for bad in ([0.9], -1.0, float("nan")):
        with pytest.raises(ValueError, match="noise"):
            synth.synthesize(tmp_path / "bad", 2, 5, seed=3, noise=bad)


def test_synthetic_is_learnable_but_not_trivial(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    synth.synthesize(tmp_path, 1, 600, seed=11)
    cell = data.load_cell(tmp_path / "S001")
    lr = LogisticRegression(max_iter=2000).fit(cell.train.x[:, :, 0], cell.train.labels)
    auc = roc_auc_score(cell.test.labels, lr.predict_proba(cell.test.x[:, :, 0])[:, 1])
    assert 0.65 < auc < 0.95


def test_list_cells_sorted_and_ignores_strays(tmp_path, tiny_dir):
    for c in ("E005", "E003"):
        shutil.copytree(tiny_dir / "S001", tmp_path / c)
    (tmp_path / "README.txt").write_text("stray file")
    (tmp_path / "notes").mkdir()
    (tmp_path / "E009" / "classification").mkdir(parents=True)  # incomplete: skipped
    write_split(tmp_path / "E009" / "classification" / "train.csv", "x")
    assert data.list_cells(tmp_path) == ["E003", "E005"]
    assert data.select_cells(tmp_path, "E005") == ["E005"]
    with pytest.raises(data.DataError, match="E009"):
        data.select_cells(tmp_path, ["E009"])


def test_mixed_loading(tiny_dir):
    cells = ["S001", "S003"]
    mix = pooling.load_data_mix(tiny_dir, cells=cells, seed=5)
    pooled = 2 * (40 + 40)
    assert len(mix.train.ids) == round(0.7 * pooled)
    assert len(mix.valid.ids) == pooled - round(0.7 * pooled)
    assert mix.train.x.dtype == np.float32 and mix.train.x.shape[1:] == (505, 1)
    assert list(mix.tests) == cells
    for c in cells:
        cell = data.load_cell(tiny_dir / c)
        np.testing.assert_array_equal(mix.tests[c].x, cell.test.x)  # the cell's OWN test split
        np.testing.assert_array_equal(mix.tests[c].y, cell.test.y)
        # every train/valid gene of the cell lands exactly once in the pool, with its data
        keys = {(c, g) for g in np.concatenate([cell.train.ids, cell.valid.ids])}
        got = [(cc, g) for s in (mix.train, mix.valid) for cc, g in zip(s.cells, s.ids) if cc == c]
        assert sorted(got) == sorted(keys)
        both_x = np.concatenate([cell.train.x, cell.valid.x])
        both_ids = np.concatenate([cell.train.ids, cell.valid.ids])
        sel = mix.train.cells == c
        first = np.flatnonzero(sel)[0]
        src = np.flatnonzero(both_ids == mix.train.ids[first])
        # ids repeat between train and valid? No: splits are disjoint, so one source row.
        assert len(src) == 1
        np.testing.assert_array_equal(mix.train.x[first], both_x[src[0]])
    assert "S002" not in set(mix.train.cells) | set(mix.valid.cells)
    # shuffled (not cell after cell), and reproducible by seed
    assert (mix.train.cells[:10] != mix.train.cells[0]).any()
    again = pooling.load_data_mix(tiny_dir, cells=cells, seed=5)
    np.testing.assert_array_equal(again.train.x, mix.train.x)
    other = pooling.load_data_mix(tiny_dir, cells=cells, seed=6)
    assert not np.array_equal(other.train.ids, mix.train.ids)


def test_cache_hit_and_invalidation(tmp_path, tiny_dir):
    shutil.copytree(tiny_dir / "S002", tmp_path / "S002")
    path = tmp_path / "S002/classification/train.csv"
    first = data.load_split(path)
    caches = list((path.parent / ".cache").glob("train-*"))
    assert len(caches) == 1
    second = data.load_split(path)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    # an edited file must not be served from the cache: change the first label of gene 1
    lines = path.read_text().splitlines()
    flip = "0" if lines[0].endswith("1") else "1"
    lines[:100] = [line[:-1] + flip for line in lines[:100]]
    path.write_text("\n".join(lines) + "\n")
    third = data.load_split(path)
    assert third.labels[0] != first.labels[0]
    # touching alone changes the key too: a new cache replaces the old one
    time.sleep(0.01)
    os.utime(path)
    data.load_split(path)
    caches_after = list((path.parent / ".cache").glob("train-*"))
    assert len(caches_after) == 1 and caches_after[0] not in caches
    # a different preprocessing option never gets the 505-long cache
    assert data.load_split(path, additional_features=False).x.shape[1] == 500


GOOD = gene_rows("000001", np.ones((100, 5), int), 1)


def bad_inputs():
    """(name, file text, expected message fragment); the file is train.csv of cell E001."""

    def edit(i, value, col=None):
        rows = list(GOOD)
        if col is None:
            rows[i] = value
        else:
            f = rows[i].split(",")
            f[col] = value
            rows[i] = ",".join(f)
        return rows

    two = GOOD + gene_rows("000002", np.ones((100, 5), int), 0)
    wrong_bins = list(GOOD)
    wrong_bins[4], wrong_bins[5] = wrong_bins[5], wrong_bins[4]
    return [
        ("empty", "", "empty file"),
        ("columns", edit(9, "000001,10,1,1,1,1,1"), ":10: expected 8 columns"),
        ("non-numeric", edit(3, "abc", 4), ":4: H3K4me1 count 'abc' is not a number"),
        ("negative", edit(6, "-2", 3), ":7: H3K36me3 count -2 is negative"),
        ("nan", edit(7, "nan", 2), ":8: H3K27me3 is missing or NaN"),
        ("infinite", edit(5, "inf", 5), ":6: H3K4me3 count is infinite or too large for float32"),
        ("negative-decimal", edit(8, "-0.5", 6), ":9: H3K9me3 count -0.5 is negative"),
        ("rows", GOOD[:99], "not a multiple of 100"),
        ("bins", wrong_bins, ":5: gene 000001: bin 6 where bin 5"),
        ("label-value", edit(0, "2", 7), ":1: label 2 is not 0 or 1"),
        ("label-changes", edit(50, "0", 7), ":51: gene 000001: label changes"),
        ("short-gene", two[:150] + two[:50], ":151: gene 000002 has 50 rows, expected 100"),
        ("header", [",".join(data.COLUMNS)] + GOOD, ":1: looks like a header row"),
    ]


@pytest.mark.parametrize("name,text,message", bad_inputs(), ids=[b[0] for b in bad_inputs()])
def test_bad_input_gives_one_line_error(tmp_path, name, text, message):
    cls = tmp_path / "E001" / "classification"
    write_split(cls / "train.csv", text)
    for s in ("valid", "test"):
        write_split(cls / f"{s}.csv", GOOD)
    with pytest.raises(data.DataError) as err:
        data.load_data(tmp_path / "E001")
    msg = str(err.value)
    assert "\n" not in msg
    assert str(cls / "train.csv") in msg
    assert message in msg


def test_missing_things(tmp_path):
    with pytest.raises(data.DataError, match="data directory not found"):
        data.list_cells(tmp_path / "nope")
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(data.DataError, match="no cell folders"):
        data.list_cells(tmp_path)
    cls = tmp_path / "E002" / "classification"
    write_split(cls / "train.csv", GOOD)
    write_split(cls / "valid.csv", GOOD)
    with pytest.raises(data.DataError, match=r"test\.csv: split file not found"):
        data.load_data(tmp_path / "E002")


def test_decimal_and_large_counts_fall_back_to_float_parsing(tmp_path):
    # Integer parsing is the fast path; "2.5" or a count beyond int32 must still be read.
    counts = np.arange(500, dtype=np.float64).reshape(100, 5) % 7
    counts[3, 1], counts[4, 2] = 2.5, 3e9
    rows = [
        f"000001,{b + 1},"
        + ",".join(f"{v:g}" if v != 3e9 else "3000000000" for v in counts[b])
        + ",1"
        for b in range(100)
    ]
    cls = tmp_path / "E001" / "classification"
    for s in data.SPLITS:
        write_split(cls / f"{s}.csv", rows)
    (x, _), _, _ = data.load_data(tmp_path / "E001", cache=False)
    np.testing.assert_allclose(x, data.preprocess(counts[None]), rtol=1e-6)
    assert x.dtype == np.float32


def test_crlf_and_trailing_blank_line_are_accepted(tmp_path):
    cls = tmp_path / "E001" / "classification"
    for s in data.SPLITS:
        write_split(cls / f"{s}.csv", "\r\n".join(GOOD) + "\r\n\r\n")
    (x, y), _, _ = data.load_data(tmp_path / "E001")
    assert x.shape == (1, 505, 1)


def test_synth_command_line(tmp_path):
    out = tmp_path / "d"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "synth.py"),
            "--out",
            str(out),
            "--cells",
            "2",
            "--genes",
            "3",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert data.list_cells(out) == ["S001", "S002"]
    assert len(data.load_cell(out / "S002").test.ids) == 3
