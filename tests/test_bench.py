"""bench/bench.py runs end to end (--tiny sizing) and writes its table, keeping the notes."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402  (imports data only: no TensorFlow at import time)


def test_bench_tiny_writes_table_and_keeps_notes(tmp_path):
    out = tmp_path / "RESULTS.md"
    out.write_text(f"# old figures\n\n{bench.NOTES_MARK}\n\nA hand-written note.\n")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench.py"),
            "--tiny",
            "--out",
            str(out),
            "--tmp",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert "# old figures" not in text  # the generated part is replaced...
    assert text.rstrip().endswith("A hand-written note.")  # ...the notes are kept
    assert re.search(r"Machine: .+ \d+ cores; Python .+ TensorFlow 2\.\d+.+GPU: ", text)
    assert "Command: `python bench/bench.py --tiny`" in text
    for title in (
        "1. Loading",
        "2. Training and inference throughput",
        "3. Callback overhead",
        "4. One per-cell experiment",
        "5. Mixed-experiment memory",
    ):
        assert f"## {title}" in text
    # Every target row carries a measured figure and a verdict.
    targets = [line for line in text.splitlines() if re.search(r"\| (<=|>=) [+\d.%]+ \|", line)]
    assert len(targets) == 6, targets
    for line in targets:
        assert re.search(r"\| \+?-?\d+\.\d+%? \| (<=|>=)", line) and re.search(
            r"\| (yes|NO) \|$", line
        ), line
    assert "| total | | 782,845 | 67,750,400 |" in text  # SPEC: ~783k parameters, ~68 M MACs
    assert not list(tmp_path.glob("bench-*"))  # generated data removed
