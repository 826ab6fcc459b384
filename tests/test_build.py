"""build.py (with annotation.py and tracks.py): tracks and an annotation into main.py's input,
checked against counts worked out by hand; and the round trip build -> main.py --data_dir ->
main.py --predict."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

import build
import data
import synth
from annotation import read_annotation
from conftest import assert_one_line_error, run_script
from tracks import Track

MARKS = data.MARKS
CHROMS = [("chr1", 20_000), ("chr2", 30_000)]


def write_bigwig(path, entries, chroms=CHROMS):
    """entries: (chrom, start, end, value) in chromosome order, each chromosome's sorted."""
    import pyBigWig

    bw = pyBigWig.open(str(path), "w")
    bw.addHeader(list(chroms))
    for chrom, start, end, value in entries:
        bw.addEntries([chrom], [start], ends=[end], values=[float(value)])
    bw.close()
    return path


def write_bam(path, reads, chroms=CHROMS):
    """reads: (chrom, start, length, reverse, flag bits); written unsorted, no index."""
    import pysam

    header = {"HD": {"VN": "1.6"}, "SQ": [{"SN": c, "LN": n} for c, n in chroms]}
    names = [c for c, _ in chroms]
    with pysam.AlignmentFile(str(path), "wb", header=header) as out:
        for i, (chrom, start, length, reverse, flag) in enumerate(reads):
            read = pysam.AlignedSegment(out.header)
            read.query_name = f"r{i}"
            read.query_sequence = "A" * length
            read.flag = flag | (0x10 if reverse else 0)
            read.reference_id = names.index(chrom)
            read.reference_start = start
            read.mapping_quality = 30
            read.cigartuples = [(0, length)]
            out.write(read)
    return path


def gtf_line(chrom, start, end, strand, gene_id, feature="gene"):
    attrs = f'gene_id "{gene_id}"; gene_type "protein_coding";'
    return f"{chrom}\thand\t{feature}\t{start}\t{end}\t.\t{strand}\t.\t{attrs}\n"


# The hand-worked genes (GTF positions 1-based, inclusive):
# PLUS  chr1 +, start 8001: TSS 8000 (0-based), window [3000, 13000), bin 51 = [8000, 8100).
# MINUS chr2 -, end 15000: TSS 14999, window [10000, 20000) read backwards: bin 1 = [19900,
#       20000), bin 51 = [14900, 15000) (the TSS its upstream base), bin 100 = [10000, 10100).
# START chr1 +, start 5001: TSS 5000, window [0, 10000): the first bin is the chromosome's first.
# OFF   chr1 +, start 4001: its window would start at -1000: dropped.
# NOWHERE chr3: no track has chr3: dropped.
GENES = [
    ("chr1", 8001, 9000, "+", "ENSG00000000001.7"),
    ("chr2", 10000, 15000, "-", "ENSG00000000002.3"),
    ("chr1", 5001, 6000, "+", "ENSG00000000003.1"),
    ("chr1", 4001, 4500, "+", "ENSG00000000004.2"),
    ("chr3", 8001, 9000, "+", "ENSG00000000005.1"),
]
PLUS, MINUS, START, OFF, NOWHERE = (g[4] for g in GENES)


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """Tracks with known values: H3K4me3 a bigWig, H3K27me3 a BAM, H3K36me3 tagAlign reads,
    H3K4me1 and H3K9me3 bigWigs with one value far from every window."""
    root = tmp_path_factory.mktemp("hand")
    tracks = {}
    tracks["H3K4me3"] = write_bigwig(
        root / "k4me3.bigWig",
        [
            ("chr1", 0, 100, 5.0),  # START bin 1: 5.0
            ("chr1", 2990, 3010, 10.0),  # START bins 30, 31 and PLUS bin 1: 1.0 each
            ("chr1", 8000, 8050, 2.0),  # PLUS bin 51: (50 * 2 + 50 * 4) / 100 = 3.0
            ("chr1", 8050, 8150, 4.0),  # PLUS bin 52: 50 * 4 / 100 = 2.0
            ("chr2", 10000, 10001, 100.0),  # MINUS bin 100: 1.0
            ("chr2", 14900, 14910, 10.0),  # MINUS bin 51: 1.0
            ("chr2", 19950, 20000, 6.0),  # MINUS bin 1: 3.0
        ],
    )
    far = [("chr1", 19990, 20000, 1.0)]
    tracks["H3K4me1"] = write_bigwig(root / "k4me1.bw", far)
    tracks["H3K9me3"] = write_bigwig(root / "k9me3.bw", far)
    tracks["H3K27me3"] = write_bam(
        root / "k27me3.bam",
        [
            ("chr1", 8000, 50, False, 0),  # 5' 8000: PLUS bin 51
            ("chr1", 8050, 50, True, 0),  # 5' 8099: PLUS bin 51
            ("chr1", 8051, 50, True, 0),  # 5' 8100: PLUS bin 52
            ("chr1", 7999, 30, False, 0),  # 5' 7999: PLUS bin 50
            ("chr1", 8000, 50, False, 0x400),  # a duplicate: not counted
            ("chr1", 8000, 50, False, 0x1 | 0x80),  # read 2 of a pair: not counted
            ("chr1", 8000, 50, False, 0x100),  # secondary: not counted
            ("chr2", 19990, 10, False, 0),  # 5' 19990: MINUS bin 1
            ("chr2", 14950, 50, True, 0),  # 5' 14999, the TSS: MINUS bin 51
            ("chr2", 14951, 50, True, 0),  # 5' 15000: MINUS bin 50
            ("chr2", 10000, 20, False, 0),  # 5' 10000: MINUS bin 100
        ],
    )
    reads = root / "k36me3.tagAlign.gz"
    with gzip.open(reads, "wt") as f:
        f.write("chr1\t3000\t3036\tN\t1000\t+\n")  # 5' 3000: PLUS bin 1, START bin 31
        f.write("chr1\t2964\t3000\tN\t1000\t-\n")  # 5' 2999: PLUS nothing, START bin 30
        f.write("chr2\t19964\t20000\tN\t1000\t-\n")  # 5' 19999: MINUS bin 1
        f.write("chr2\t10064\t10100\tN\t1000\t-\n")  # 5' 10099: MINUS bin 100
    tracks["H3K36me3"] = reads
    gtf = root / "genes.gtf"
    gtf.write_text("#!genome-build test\n" + "".join(gtf_line(*g) for g in GENES))
    expression = root / "expression.tsv"
    expression.write_text(
        "gene_id\tTPM\n"
        "ENSG00000000001\t10.0\n"  # no version: matched to ENSG00000000001.7
        "ENSG00000000002.3\t1.0\n"
        "ENSG00000000003.1\t5.0\n"
        "ENSG00000000004.2\t3.0\n"
        "ENSG00000000005.1\t2.0\n"
        "ENSG00000000009.1\t2.0\n"  # not in the annotation
    )
    return root, tracks, gtf, expression


def built_by_id(hand, **kw):
    root, tracks, gtf, expression = hand
    genes = read_annotation(gtf)
    opened = {m: Track(tracks[m], m) for m in MARKS}
    split = np.zeros(len(genes.ids), np.int8)
    expr = build.read_expression(expression) if kw.get("labels", True) else None
    built = build.build_cell(opened, genes, split, expr)
    return built, {g: i for i, g in enumerate(built.genes.ids)}


def expected(*cells):
    """A (100, 5) zero array with the given (bin 1-based, mark, value) set."""
    out = np.zeros((100, 5))
    for b, mark, value in cells:
        out[b - 1, MARKS.index(mark)] = value
    return out


def test_annotation_tss_by_strand(hand):
    genes = read_annotation(hand[2])
    tss = dict(zip(genes.ids, genes.tss))
    assert tss[PLUS] == 8000 and tss[MINUS] == 14999 and tss[START] == 5000
    assert list(genes.ids) == [g[4] for g in GENES]  # ids kept as the annotation gives them


def test_annotation_ids_and_names_with_semicolons_and_hashes(tmp_path):
    path = tmp_path / "genes.gtf"
    path.write_text(
        "##gff-version 2\n#!genome-build\tGRCh38\n"
        + gtf_line("HG002#1#chr1", 1001, 2000, "+", "GENE;SEMI")
        + gtf_line("HG002#1#chr1", 5001, 6000, "-", "GENE#HASH")
        + gtf_line("chr1", 9001, 9500, "+", "GENE")
        + gtf_line("chr2", 3001, 3500, "+", "GENE")  # the same id elsewhere: first kept
        + "chr1\thand\tgene\t7001\t7500\t.\t+\t.\tgene_id PLAIN; gene_type lncRNA;\n"
    )
    genes = read_annotation(path)
    assert list(genes.ids) == ["GENE;SEMI", "GENE#HASH", "GENE", "PLAIN"]
    assert list(genes.chrom) == ["HG002#1#chr1", "HG002#1#chr1", "chr1", "chr1"]
    assert list(genes.tss) == [1000, 5999, 9000, 7000]
    assert genes.elsewhere == 1
    assert list(read_annotation(path, "lncRNA").ids) == ["PLAIN"]
    gff = tmp_path / "genes.gff3"
    gff.write_text(
        "##gff-version 3\nchr1\thand\tgene\t101\t200\t.\t+\t.\tID=gene:A#1;Name=a\n"
        "chr1\thand\tgene\t301\t400\t.\t-\t.\tgene_id=B;ID=x\n"
    )
    assert list(read_annotation(gff).ids) == ["gene:A#1", "B"]


def test_counts_match_hand_computed_values(hand):
    built, at = built_by_id(hand)
    assert set(at) == {PLUS, MINUS, START}
    assert built.dropped["window past a chromosome end"] == 1  # OFF
    assert built.dropped["on a chromosome missing from a track"] == 1  # NOWHERE
    plus = expected(
        (1, "H3K4me3", 1.0),
        (51, "H3K4me3", 3.0),
        (52, "H3K4me3", 2.0),
        (50, "H3K27me3", 1),
        (51, "H3K27me3", 2),
        (52, "H3K27me3", 1),
        (1, "H3K36me3", 1),
    )
    np.testing.assert_allclose(built.counts[at[PLUS]], plus)
    minus = expected(
        (1, "H3K4me3", 3.0),
        (51, "H3K4me3", 1.0),
        (100, "H3K4me3", 1.0),
        (1, "H3K27me3", 1),
        (50, "H3K27me3", 1),
        (51, "H3K27me3", 1),
        (100, "H3K27me3", 1),
        (1, "H3K36me3", 1),
        (100, "H3K36me3", 1),
    )
    np.testing.assert_allclose(built.counts[at[MINUS]], minus)
    # START's window [0, 10000) also holds PLUS's TSS, 3 kb downstream of its own: bins 81, 82.
    start = expected(
        (1, "H3K4me3", 5.0),
        (30, "H3K4me3", 1.0),
        (31, "H3K4me3", 1.0),
        (30, "H3K36me3", 1),
        (31, "H3K36me3", 1),
        (80, "H3K27me3", 1),
        (81, "H3K27me3", 2),
        (82, "H3K27me3", 1),
        (81, "H3K4me3", 3.0),
        (82, "H3K4me3", 2.0),
    )
    np.testing.assert_allclose(built.counts[at[START]], start)


def test_labels_above_the_median(hand):
    built, at = built_by_id(hand)
    # Kept: PLUS 10, MINUS 1, START 5: the median is 5, and only PLUS is above it.
    assert built.median == 5.0
    assert built.labels[at[PLUS]] == 1 and built.labels[at[MINUS]] == 0
    assert built.labels[at[START]] == 0


def test_hashed_split_is_per_gene_and_seeded():
    ids = np.array([f"G{i}" for i in range(3000)])
    a = build.hashed_split(ids, 0)
    assert np.array_equal(a[:100], build.hashed_split(ids[:100], 0))  # other genes don't matter
    assert not np.array_equal(a, build.hashed_split(ids, 1))
    assert np.all(np.abs(np.bincount(a) / len(ids) - 1 / 3) < 0.05)


# ---------------------------------------------------------------------------------------------
# The command line, and the round trip through main.py


def generated(root, n_genes=360, seed=0):
    """n_genes plus-and-minus-strand genes 12 kb apart on two chromosomes, five bigWigs in which
    H3K4me3 at the TSS follows the gene's expression, and the expression table."""
    rng = np.random.default_rng(seed)
    per = n_genes // 2
    chroms = [("chrA", per * 12_000 + 20_000), ("chrB", per * 12_000 + 20_000)]
    expr = rng.lognormal(1, 1.5, n_genes)
    rows, lines = [], []
    entries = {m: [] for m in MARKS}
    for c, (chrom, _) in enumerate(chroms):
        for k in range(per):
            g = c * per + k
            tss = 10_000 + 12_000 * k
            strand = "+" if g % 2 else "-"
            start, end = (tss + 1, tss + 2000) if strand == "+" else (tss - 1999, tss + 1)
            lines.append(gtf_line(chrom, start, end, strand, f"GENE{g:04d}.1"))
            rows.append((f"GENE{g:04d}.1", expr[g]))
            signal = np.log1p(expr[g]) + rng.normal(0, 0.5)
            for mark in MARKS:
                level = max(signal, 0.1) if mark == "H3K4me3" else rng.uniform(0.1, 1)
                entries[mark].append((chrom, tss - 1000, tss + 1000, level))
    tracks = {m: write_bigwig(root / f"{m}.bw", entries[m], chroms) for m in MARKS}
    gtf = root / "genes.gtf"
    gtf.write_text("".join(lines))
    table = root / "expression.csv"
    pd.DataFrame(rows, columns=["gene_id", "rpkm"]).to_csv(table, index=False)
    return tracks, gtf, table


def build_args(out, tracks, gtf, cell="MINE", *more):
    flags = [f"--{m}={tracks[m]}" for m in MARKS]
    return ["--out", out, "--cell", cell, "--annotation", gtf, *flags, *more]


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Build a labeled cell, train on it for 1 epoch, then build the same tracks without
    expression and predict them with the trained model."""
    root = tmp_path_factory.mktemp("own")
    tracks, gtf, table = generated(root)
    labeled = root / "labeled"
    res = run_script("build.py", *build_args(labeled, tracks, gtf, "MINE", "--expression", table))
    assert res.returncode == 0, res.stderr
    save = root / "run"
    res_train = run_script(
        "main.py", "--data_dir", labeled, "--epochs", 1, "--save_dir", save, "--seed", 0
    )
    assert res_train.returncode == 0, res_train.stdout + res_train.stderr
    unlabeled = root / "unlabeled"
    res_build = run_script("build.py", *build_args(unlabeled, tracks, gtf, "NEW"))
    assert res_build.returncode == 0, res_build.stderr
    pred = root / "pred"
    res_pred = run_script(
        "main.py",
        "--weights",
        save / "MINE" / "best_model.keras",
        "--predict",
        unlabeled,
        "--save_dir",
        pred,
    )
    return root, tracks, gtf, labeled, unlabeled, save, pred, res, res_build, res_pred


@pytest.mark.slow
def test_build_writes_the_release_format(round_trip):
    root, _, _, labeled, _, _, _, res, _, _ = round_trip
    assert "MINE: 360 of 360 genes written" in res.stdout
    cell = data.load_cell(labeled / "MINE")
    ids = np.concatenate([cell.train.ids, cell.valid.ids, cell.test.ids])
    assert len(ids) == 360 and len(set(ids)) == 360 and ids[0].startswith("GENE")
    labels = np.concatenate([s.labels for s in (cell.train, cell.valid, cell.test)])
    assert labels.sum() == 180  # above the median: half of 360 distinct values
    record = json.loads((labeled / "build.json").read_text())
    assert record["split"] == {"seed": 0}
    assert record["cells"]["MINE"]["kinds"]["H3K4me3"] == "bigWig"
    first = (labeled / "MINE" / "classification" / "train.csv").read_text().splitlines()[0]
    assert first.split(",")[1] == "1" and len(first.split(",")) == 8


def test_unlabeled_cell_is_refused_for_training(round_trip):
    unlabeled = round_trip[4]
    line = (unlabeled / "NEW" / "classification" / "test.csv").read_text().splitlines()[0]
    assert line.endswith(",")  # the label field is empty
    with pytest.raises(data.DataError, match="no labels"):
        data.load_cell(unlabeled / "NEW")
    res = run_script("main.py", "--data_dir", unlabeled, "--epochs", 1)
    assert_one_line_error(res, "no labels", "--predict")


def test_predict_writes_every_gene_without_auc(round_trip):
    root, _, _, labeled, unlabeled, save, pred, _, _, res = round_trip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "360 genes predicted" in res.stdout and "(no labels)" in res.stdout
    table = pd.read_csv(pred / "NEW" / "predictions.csv", dtype={"gene_id": str})
    assert list(table.columns) == ["gene_id", "split", "label", "probability"]
    assert len(table) == 360 and table["label"].isna().all()
    assert table["probability"].between(0, 1).all()
    summary = pd.read_csv(pred / "output-predict.csv")
    assert summary.loc[0, "n_genes"] == 360 and np.isnan(summary.loc[0, "auc"])
    # The same genes and model as the labeled test split: the same probabilities.
    tested = pd.read_csv(save / "MINE" / "predictions.csv", dtype={"gene_id": str})
    mine = table[table["split"] == "test"].set_index("gene_id")["probability"]
    np.testing.assert_allclose(mine[tested["gene_id"]].to_numpy(), tested["probability"], atol=1e-6)


def test_split_like_lines_up_with_an_existing_cell(round_trip, tmp_path):
    _, tracks, gtf, labeled, *_ = round_trip
    out = tmp_path / "like"
    res = run_script(
        "build.py", *build_args(out, tracks, gtf, "OTHER", "--split_like", labeled / "MINE")
    )
    assert res.returncode == 0, res.stderr
    for split in data.SPLITS:
        a = pd.read_csv(labeled / "MINE" / "classification" / f"{split}.csv", header=None)
        b = pd.read_csv(out / "OTHER" / "classification" / f"{split}.csv", header=None)
        assert set(a[0]) == set(b[0])


def test_bad_inputs_get_one_line(round_trip, tmp_path):
    root, tracks, gtf, *_ = round_trip
    out = tmp_path / "bad"
    # A missing mark.
    args = build_args(out, tracks, gtf)
    res = run_script("build.py", *[a for a in args if not str(a).startswith("--H3K9me3")])
    assert_one_line_error(res, "no track for H3K9me3")
    # An unreadable track.
    broken = tmp_path / "broken.bw"
    broken.write_bytes(b"not a bigwig at all")
    res = run_script("build.py", *build_args(out, {**tracks, "H3K4me3": broken}, gtf))
    assert_one_line_error(res, str(broken), "bigWig")
    # A GTF without gene or transcript records.
    exons = tmp_path / "exons.gtf"
    exons.write_text(gtf_line("chrA", 100, 200, "+", "G1", feature="exon"))
    res = run_script("build.py", *build_args(out, tracks, exons))
    assert_one_line_error(res, str(exons), "no gene or transcript")
    # An expression table with a duplicate id.
    dup = tmp_path / "dup.csv"
    dup.write_text("gene_id,tpm\nGENE0001.1,3\nGENE0002.1,4\nGENE0001.1,5\n")
    res = run_script("build.py", *build_args(out, tracks, gtf, "MINE", "--expression", dup))
    assert_one_line_error(res, str(dup), "duplicate gene id", "GENE0001.1")
    # An annotation none of whose genes is in --split_like.
    other = tmp_path / "other"
    synth.synthesize(other, n_cells=1, n_genes=5, seed=0)
    res = run_script("build.py", *build_args(out, tracks, gtf, "MINE", "--split_like", other))
    assert_one_line_error(res, "--split_like", "GENE")
    assert not out.exists() or not any(out.iterdir())


def test_an_existing_cell_is_not_overwritten(round_trip):
    _, tracks, gtf, labeled, *_ = round_trip
    before = (labeled / "MINE" / "classification" / "train.csv").read_bytes()
    res = run_script("build.py", *build_args(labeled, tracks, gtf, "MINE"))
    assert_one_line_error(res, "already built", "--overwrite")
    assert (labeled / "MINE" / "classification" / "train.csv").read_bytes() == before


def test_predict_needs_weights_and_a_folder(tmp_path):
    res = run_script("main.py", "--predict", tmp_path)
    assert_one_line_error(res, "--predict needs --weights")
    model = tmp_path / "m.keras"
    model.write_bytes(b"")
    res = run_script("main.py", "--weights", model, "--predict", tmp_path / "nowhere")
    assert_one_line_error(res, "--predict", "no such folder")


def test_data_py_points_to_the_commands():
    res = run_script("data.py", "build", "--out", "x")
    assert_one_line_error(res, "data.py is a library", "python synth.py", "python build.py")


@pytest.mark.slow
def test_build_speed_benchmark_tiny(tmp_path):
    out = tmp_path / "RESULTS.md"
    res = run_script("bench/build_speed.py", "--tiny", "--out", out)
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text()
    assert "<!-- build_speed.py: tiny begin -->" in text
    assert "200 of 200 genes written" in text


def test_overwrite_replaces_a_cell(round_trip, tmp_path):
    _, tracks, gtf, labeled, *_ = round_trip
    out = tmp_path / "again"
    assert run_script("build.py", *build_args(out, tracks, gtf, "C")).returncode == 0
    with pytest.raises(data.DataError, match="no labels"):
        data.load_cell(out / "C", cache=False)
    table = labeled.parent / "expression.csv"
    res = run_script(
        "build.py", *build_args(out, tracks, gtf, "C", "--expression", table, "--overwrite")
    )
    assert res.returncode == 0, res.stderr
    assert data.load_cell(out / "C", cache=False).train.y is not None
    assert sorted(p.name for p in out.iterdir()) == ["C", "build.json"]


def test_sample_sheet_builds_several_cells_with_one_split(round_trip, tmp_path):
    root, tracks, gtf, labeled, *_ = round_trip
    sheet = tmp_path / "sheet.csv"
    rows = ["cell,mark,path"]
    rows += [f"A,{m},{tracks[m]}" for m in MARKS] + [f"A,expression,{root / 'expression.csv'}"]
    rows += [f"B,{m},{tracks[m]}" for m in MARKS]
    sheet.write_text("\n".join(rows) + "\n")
    out = tmp_path / "sheet-out"
    res = run_script("build.py", "--out", out, "--samples", sheet, "--annotation", gtf)
    assert res.returncode == 0, res.stderr
    assert "A: 360 of 360" in res.stdout and "B: 360 of 360" in res.stdout
    record = json.loads((out / "build.json").read_text())
    assert sorted(record["cells"]) == ["A", "B"] and record["cells"]["B"]["expression"] is None
    for split in data.SPLITS:  # the same genes in each split of both cells, and of MINE
        ids = [
            set(pd.read_csv(d / "classification" / f"{split}.csv", header=None)[0])
            for d in (out / "A", out / "B", labeled / "MINE")
        ]
        assert ids[0] == ids[1] == ids[2]
    # A sheet naming a mark that is not one of the five.
    sheet.write_text("cell,mark,path\nA,H3K27ac,x.bw\n")
    res = run_script("build.py", "--out", out, "--samples", sheet, "--annotation", gtf)
    assert_one_line_error(res, f"{sheet}:2", "H3K27ac")
