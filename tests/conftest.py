"""Shared fixtures: tiny generated datasets under tmp_path, and the repo root on sys.path."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import synth  # noqa: E402


def write_split(path: Path, rows: list[str] | str) -> Path:
    """Write a split CSV from rows (or raw text), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rows if isinstance(rows, str) else "".join(r + "\n" for r in rows))
    return path


def gene_rows(gene_id: str, counts, label: int = 1) -> list[str]:
    """100 CSV rows of one gene; counts is (100, 5)."""
    return [
        f"{gene_id},{b + 1}," + ",".join(str(int(v)) for v in counts[b]) + f",{label}"
        for b in range(100)
    ]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A generated data_dir: 3 cells x 3 splits x 40 genes (read-only by convention)."""
    out = tmp_path_factory.mktemp("tiny")
    synth.synthesize(out, n_cells=3, n_genes=40, seed=7)
    return out


def run_script(script: str, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run one of the project's scripts (e.g. "utils.py") from the repo root, output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def assert_one_line_error(res, *fragments):
    """A finished subprocess ended with exit status 2 and one line of ours on stderr."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    # TensorFlow's own start-up log lines (absl format) are not ours.
    lines = [
        line
        for line in res.stderr.splitlines()
        if line.strip()
        and not re.match(r"[IWEF]\d{4} |WARNING: All log messages before absl", line)
    ]
    assert len(lines) == 1, res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# Module fixtures that train a model: every test that uses one is in the slow tier (it would
# train the model itself if the slow tests before it were left out).
SLOW_FIXTURES = {
    "planted",
    "per_cell_run",
    "mix_run",
    "finetune_run",
    "precision_runs",
    "round_trip",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
