"""Speed of build.py on generated tracks, written into bench/RESULTS.md.

    python bench/build_speed.py          # 20,000 genes x 5 bigWigs, and a 1M-read BAM: ~2 min
    python bench/build_speed.py --tiny   # 200 genes, 10,000 reads: seconds, for the tests only

Generated: 20 chromosomes with 1,000 genes each, 15 kb apart, strands alternating (a GTF of
gene records); five bigWig tracks that cover every chromosome end to end in 25-bp steps with
random values, as ENCODE's and Roadmap's signal tracks do (12 million values per track); and a
BAM of reads spread over the same chromosomes for the read counting. Timed: the whole command
``python build.py --out OUT --cell BENCH --annotation genes.gtf --H3K27me3 ... --expression
expression.csv`` in its own process (start-up included), once; then the BAM read alone
(tracks.Track on a BAM: the per-read loop through pysam). Target: 20,000 genes x 5 bigWigs in
under 60 s on 2 cores.

The report is a Markdown block between ``<!-- build_speed.py: LABEL begin -->`` and
``<!-- build_speed.py: LABEL end -->`` after bench.py's NOTES_MARK, as the other benchmarks
write theirs: a re-run with the same label replaces its own block only.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench
from data import MARKS
from tracks import Track

TARGET_S = 60.0
SPACING = 15_000
STEP = 25


def generate(root: Path, n_chroms: int, per_chrom: int, n_reads: int, seed: int = 0):
    """The annotation, expression table, five bigWigs and one BAM; returns their paths."""
    import pyBigWig
    import pysam

    rng = np.random.default_rng(seed)
    length = per_chrom * SPACING + 20_000
    chroms = [(f"chr{i + 1}", length) for i in range(n_chroms)]
    lines, rows = [], []
    for chrom, _ in chroms:
        for k in range(per_chrom):
            tss = 10_000 + SPACING * k
            gene = f"G{len(rows):05d}"
            if k % 2:
                start, end, strand = tss + 1, tss + 3000, "+"
            else:
                start, end, strand = tss - 2999, tss + 1, "-"
            lines.append(f'{chrom}\tb\tgene\t{start}\t{end}\t.\t{strand}\t.\tgene_id "{gene}";\n')
            rows.append((gene, rng.lognormal(1, 2)))
    gtf = root / "genes.gtf"
    gtf.write_text("".join(lines))
    expression = root / "expression.csv"
    pd.DataFrame(rows, columns=["gene_id", "tpm"]).to_csv(expression, index=False)
    tracks = {}
    for mark in MARKS:
        path = root / f"{mark}.bw"
        bw = pyBigWig.open(str(path), "w")
        bw.addHeader(chroms)
        for chrom, n in chroms:
            values = rng.gamma(0.5, 2.0, n // STEP)
            bw.addEntries(chrom, 0, values=values, span=STEP, step=STEP)
        bw.close()
        tracks[mark] = path
    bam = root / "reads.bam"
    header = {"HD": {"VN": "1.6"}, "SQ": [{"SN": c, "LN": n} for c, n in chroms]}
    with pysam.AlignmentFile(str(bam), "wb", header=header) as out:
        template = pysam.AlignedSegment(out.header)
        template.query_sequence = "A" * 36
        template.cigartuples = [(0, 36)]
        template.mapping_quality = 30
        refs = rng.integers(0, n_chroms, n_reads)
        starts = rng.integers(0, length - 36, n_reads)
        reverse = rng.random(n_reads) < 0.5
        for i in range(n_reads):
            template.query_name = f"r{i}"
            template.reference_id = int(refs[i])
            template.reference_start = int(starts[i])
            template.flag = 0x10 if reverse[i] else 0
            out.write(template)
    return gtf, expression, tracks, bam


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="build_speed.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="200 genes, 10,000 reads: for the tests [Default: off]"
    )
    parser.add_argument(
        "--reads", type=int, default=None, help="BAM reads [Default: 1,000,000; --tiny 10,000]"
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "bench" / "RESULTS.md"),
        help="the Markdown file to write into [Default: bench/RESULTS.md]",
    )
    parser.add_argument("--label", default=None, help="block label [Default: the mode]")
    parser.add_argument("--tmp", default=None, help="where the tracks go [Default: TMPDIR]")
    args = parser.parse_args(argv)
    n_chroms, per_chrom = (2, 100) if args.tiny else (20, 1000)
    n_reads = args.reads or (10_000 if args.tiny else 1_000_000)
    label = args.label or ("tiny" if args.tiny else "build speed")
    n_genes = n_chroms * per_chrom

    tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="build-speed-"))
    try:
        started = time.perf_counter()
        gtf, expression, tracks, bam = generate(tmp, n_chroms, per_chrom, n_reads)
        made = time.perf_counter() - started
        track_mb = sum(p.stat().st_size for p in tracks.values()) / 2**20
        command = [sys.executable, str(ROOT / "build.py"), "--out", str(tmp / "out")]
        command += ["--cell", "BENCH", "--annotation", str(gtf), "--expression", str(expression)]
        for mark, path in tracks.items():
            command += [f"--{mark}", str(path)]
        load = bench.loadavg()
        start = time.perf_counter()
        res = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        build_s = time.perf_counter() - start
        if res.returncode:
            print(res.stdout + res.stderr, file=sys.stderr)
            return 1
        start = time.perf_counter()
        counted = Track(bam, "H3K27me3")
        bam_s = time.perf_counter() - start
        load_end = bench.loadavg()
        n_counted = sum(len(p) for p in counted._positions.values())
        written = res.stdout.strip().splitlines()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    met = "yes" if build_s <= TARGET_S * n_genes / 20_000 else "NO"
    lines = [
        f"## Building cells from tracks ({label})",
        "",
        f"Machine: {bench.machine()}.",
        "",
        f"Command: `{shlex.join(['python', 'bench/build_speed.py', *argv])}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}; generating the files took {made:.0f} s (not "
        f"timed). Load average (1/5/15 min) before the timed runs {load}, after {load_end}.",
        "",
        "| what | input | seconds | rate |",
        "|---|---|---|---|",
        f"| `python build.py` (whole command), {n_genes:,} genes x 5 bigWigs | "
        f"{n_chroms} chromosomes of {(per_chrom * SPACING + 20_000) / 1e6:.1f} Mb, 25-bp steps, "
        f"{track_mb:,.0f} MB of bigWigs | {build_s:.1f} | {n_genes / build_s:,.0f} genes/s |",
        f"| reading one BAM (tracks.Track) | {n_reads:,} reads, {n_counted:,} counted | "
        f"{bam_s:.1f} | {n_reads / bam_s / 1e6:.2f} M reads/s |",
        "",
        f"Target: {20_000:,} genes x 5 bigWigs in <= {TARGET_S:.0f} s (scaled to {n_genes:,} "
        f"genes: {TARGET_S * n_genes / 20_000:.1f} s): {met}. build.py's line: `{written}`",
    ]
    bench.write_block(Path(args.out), "build_speed.py", label, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
