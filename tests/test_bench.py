"""bench/bench.py and bench/stalls.py run end to end (--tiny sizing) and write their tables into
RESULTS.md, keeping the notes; stalls.py's verdicts follow their definitions."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402  (imports data only: no TensorFlow at import time)
import stalls  # noqa: E402  (bench, data and files only: no TensorFlow at import time)


@pytest.mark.slow
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
        "2. Training and inference throughput, float32 and bfloat16",
        "2c. A per-cell epoch, float32 against bfloat16",
        "3. Callback overhead",
        "4. One per-cell experiment",
        "5. Mixed-experiment memory",
    ):
        assert f"## {title}" in text
    # Every target row carries a measured figure and a verdict.
    targets = [line for line in text.splitlines() if re.search(r"\| (<=|>=) [+\d.%]+ \|", line)]
    assert len(targets) == 7, targets  # bfloat16's fit: >= 0.6 of the bfloat16 matmul
    for dtype in ("float32", "bfloat16"):
        assert f"| `tf.linalg.matmul` 4096^2 {dtype} |" in text
    # The epoch in both precisions: bfloat16's speed-up over float32, its share of its matmul.
    assert re.search(r"^\| float32.* \| 1\.00x \|", text, re.M)
    assert re.search(
        r"^\| bfloat16.* \| \d+\.\d+x \| (>= 2x \(AMX\) \| (yes|NO)|\(reported\) \| ) \|",
        text,
        re.M,
    )
    assert re.search(
        r"^\| 56 cells \(x56, estimate\) \| \d+ \(.+ h\) \| \d+ \(.+ h\) \|$", text, re.M
    )
    for line in targets:
        assert re.search(r"\| \+?-?\d+\.\d+%? \| (<=|>=)", line) and re.search(
            r"\| (yes|NO) \|$", line
        ), line
    assert (
        "| total | | 782,845 | 67,750,400 |" in text
    )  # the network: 782,845 parameters, 67.75 M MACs a gene
    assert not list(tmp_path.glob("bench-*"))  # generated data removed


# ---------------------------------------------------------------------------------------------
# bench/stalls.py


def test_stalls_judge_follows_its_definitions():
    nan = float("nan")
    # Never reached 0.6: stalled (low AUC), and the tested model is at chance.
    v = stalls.judge({"val_auc": [0.5, 0.58], "val_accuracy": [0.5, 0.56]}, 0.57, 0.505)
    assert v["stalled"] and v["stall_reason"] == "low AUC" and v["at_chance"]
    assert v["learned_epoch"] is None and v["best_val_auc_epoch"] == 2 and not v["collapsed"]
    # Learned at epoch 2, fell more than 0.2 below the best so far at epoch 4, recovered.
    v = stalls.judge(
        {"val_auc": [0.5, 0.75, 0.8, 0.55, 0.82], "val_accuracy": [0.5, 0.7, 0.7, 0.5, 0.72]},
        0.8,
        0.505,
    )
    assert not v["stalled"] and v["collapsed"] and v["collapse_epoch"] == 4
    assert v["learned_epoch"] == 2 and v["best_val_auc"] == 0.82 and v["final_val_auc"] == 0.82
    # A good AUC but the majority-class accuracy in every epoch: stalled (one class).
    v = stalls.judge({"val_auc": [0.7, 0.74], "val_accuracy": [0.51, 0.50]}, 0.7, 0.505)
    assert v["stalled"] and v["stall_reason"] == "one class" and not v["at_chance"]
    # Every gene given the minority class, then the majority one: one class too.
    log = {"val_auc": [0.698, 0.5, 0.5], "val_accuracy": [0.4936, 0.4936, 0.5064]}
    v = stalls.judge(log, 0.5, 0.5064)
    assert v["stalled"] and v["stall_reason"] == "one class" and v["at_chance"]
    # A fall of exactly 0.2 or less is no collapse; an undefined AUC is skipped.
    v = stalls.judge(
        {"val_auc": [nan, 0.8, 0.6, 0.7], "val_accuracy": [nan, 0.7, 0.6, 0.6]}, nan, 0.5
    )
    assert not v["collapsed"] and not v["stalled"] and v["at_chance"] and v["learned_epoch"] == 2


def test_stalls_refuses_flags_it_sets_and_bad_labels():
    for argv in (["--extra", "--epochs 3"], ["--extra=--seed=1"], ["--label", "a --> b"]):
        with pytest.raises(SystemExit):
            stalls.parse_args(["--tiny", *argv])
    args, _ = stalls.parse_args(["--tiny", "--extra", "--mixed_precision bfloat16"])
    assert args.extra_flags == ["--mixed_precision", "bfloat16"]
    assert args.label == "with --mixed_precision bfloat16 (tiny)"
    assert stalls.noise_levels(4) == [0.6, 0.9, 1.2, 1.5]


@pytest.mark.slow
def test_stalls_tiny_writes_its_block_and_keeps_the_rest(tmp_path):
    out = tmp_path / "RESULTS.md"
    other = (
        "<!-- stalls.py: other begin -->\nAnother label's figures.\n<!-- stalls.py: other end -->"
    )
    kept = f"# bench.py's figures\n\n{bench.NOTES_MARK}\n\nA hand-written note.\n\n{other}\n"
    out.write_text(kept)
    label = "plain recipe (tiny)"
    begin, end = stalls.markers(label)

    def run():
        res = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "stalls.py"), "--tiny"]
            + ["--out", str(out), "--tmp", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return out.read_text()

    text = run()
    assert text.startswith(kept)  # bench.py's part, the note and the other label's block
    assert text.count(begin) == 1 and text.count(end) == 1
    block = text[text.index(begin) : text.index(end)]
    assert f"## Stall benchmark: {label}" in block
    assert f"Command: `python bench/stalls.py --tiny --out {out} --tmp {tmp_path}`" in block
    assert re.search(r"Machine: .+ \d+ cores; Python .+ TensorFlow 2\.\d+.+GPU: ", block)
    assert re.search(r"^\| S001 \| 0\.9 \| 0\.\d{3} \| 1 \| \d\.\d{3} \|", block, re.M)  # per cell
    assert re.search(r"^\| S001 \| 0\.9 \| 0 \| \d\.\d{3} \| 1 \| \d\.\d{3} \(1\) \|", block, re.M)
    assert "- **stalled**: the best val_auc over all epochs is below 0.6" in block
    rows = (tmp_path / "RESULTS-stalls.csv").read_text().splitlines()
    assert rows[0].startswith("label,cell,noise,seed,epochs,extra,test_auc,") and len(rows) == 2

    # A re-run with the same label replaces its block in place; what follows it is kept.
    out.write_text(
        text.replace(f"## Stall benchmark: {label}", "OLD FIGURES") + "\nA later note.\n"
    )
    text = run()
    assert "OLD FIGURES" not in text and text.count(begin) == 1 and text.count(end) == 1
    assert text.startswith(kept) and text.rstrip().endswith("A later note.")
    assert text.index(end) < text.index("A later note.")
    assert len((tmp_path / "RESULTS-stalls.csv").read_text().splitlines()) == 2
    assert not list(tmp_path.glob("stalls-*"))  # generated data and run folders removed


def test_stalls_pairs_runs_by_cell_and_seed(tmp_path):
    def run(cell, seed, auc):
        return stalls.Run(
            cell, 0.9, seed, 1, auc, 1, auc, 1, auc, 1, False, "", False, None, False, 1.0
        )

    csv_file = tmp_path / "RESULTS-stalls.csv"
    stalls.write_csv(csv_file, "float32", [run("S001", s, 0.8) for s in range(4)], [])
    stalls.write_csv(csv_file, "other", [run("S001", 0, 0.1)], [])
    ref = stalls.reference_runs(csv_file, "float32")
    assert ref == {("S001", s): 0.8 for s in range(4)}
    mine = [run("S001", s, 0.8 + d) for s, d in enumerate([-0.01, 0.0, 0.01, -0.02])]
    mine.append(run("S002", 0, 0.7))  # nothing to pair with
    lines = stalls.paired_text("bfloat16", "float32", ref, mine, ["S001", "S002"])
    # diffs -0.01, 0, +0.01, -0.02: mean -0.005, std 0.01291, t(0.975, 3) = 3.1824
    row = next(line for line in lines if line.startswith("| S001 |"))
    assert row == (
        "| S001 | 4 | 0.800 (0.000) | 0.795 (0.013) | -0.0050 | -0.0255 to +0.0155 | 2 |"
    )
    assert next(line for line in lines if line.startswith("| all |")).startswith("| all | 4 |")
    assert not any(line.startswith("| S002 |") for line in lines)
    assert '1 run(s) have no run of "float32" to pair with.' in lines


def test_mixed_precision_pairs_seeds_per_cell_and_over_runs(tmp_path):
    import mixed_precision

    def got(aucs):
        return {"auc": dict(zip(["S001", "S002"], aucs, strict=True)), "attempts": 1, "seconds": 9}

    runs = {}
    for seed, (f32, bf16) in enumerate(
        [((0.80, 0.70), (0.79, 0.70)), ((0.82, 0.72), (0.82, 0.74)), ((0.81, 0.71), (0.83, 0.70))]
    ):
        runs[("off", seed)], runs[("bfloat16", seed)] = got(f32), got(bf16)
    lines = mixed_precision.report(
        runs, ["S001", "S002"], mixed_precision.Sizing(cells=2, seeds=3), [], "now", "x"
    )
    assert lines[0] == "## Mixed model, float32 against bfloat16 (x)"
    rows = {line.split(" | ")[0]: line for line in lines if line.startswith("| S00")}
    # S001: diffs -0.01, 0, +0.02: mean 0.0033, std 0.0153, t(0.975, 2) = 4.3027
    assert rows["| S001"] == (
        "| S001 | 0.8100 (0.0100) | 0.8133 (0.0208) | +0.0033 | -0.0346 to +0.0413 | 1 of 3 |"
    )
    # Over all cells, one pair per run: mean differences -0.005, +0.01, +0.005.
    overall = next(line for line in lines if line.startswith("| all cells"))
    assert "| +0.0033 | -0.0156 to +0.0223 | 1 of 3 |" in overall
    assert sum(line.startswith("| 2 | ") for line in lines) == 1  # one row per seed


@pytest.mark.slow
def test_mixed_precision_tiny_runs_both_precisions(tmp_path):
    out = tmp_path / "RESULTS.md"
    work = tmp_path / "work"
    argv = ["--tiny", "--seeds", "1", "--out", out, "--work", work, "--label", "tiny, again"]
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "mixed_precision.py"), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    text = out.read_text()
    assert "<!-- mixed_precision.py: tiny, again begin -->" in text
    assert re.search(
        r"^\| S001 \| 0\.\d{4} \(nan\) \| 0\.\d{4} \(nan\) \| [+-]0\.\d{4} \|", text, re.M
    )
    for name in ("float32", "bfloat16"):
        args = (work / "runs" / f"{name}-seed0" / "args.json").read_text()
        assert f'"mixed_precision": "{"off" if name == "float32" else name}"' in args


# ---------------------------------------------------------------------------------------------
# The wide stall benchmark (bench/wide_stalls.py, bench/other_cells.py)


def test_other_cells_are_in_the_real_format(tmp_path):
    import dataclasses

    import data
    import other_cells

    spec = dataclasses.replace(other_cells.WIDE[0], genes=(30, 20, 10))  # background 3
    other_cells.make(spec, tmp_path)
    cell = data.load_cell(tmp_path / spec.name)
    assert [len(s.ids) for s in (cell.train, cell.valid, cell.test)] == [30, 20, 10]
    assert cell.train.x.dtype == "float32" and cell.train.x.shape == (30, 505, 1)
    assert (cell.train.x[:, :500] > 0).mean() > 0.9  # reads in nearly every bin
    sparse = dataclasses.replace(other_cells.WIDE[1], genes=(30, 20, 10))
    other_cells.make(sparse, tmp_path)
    assert (data.load_cell(tmp_path / sparse.name).train.x[:, :500] > 0).mean() < 0.3


def test_wide_stalls_pairs_default_with_the_papers_sound_runs():
    import wide_stalls

    def result(recipe, seed, auc, sound=True):
        return wide_stalls.Result(
            "bfloat16", recipe, "W1", seed, auc, sound, 1, 0, 0, 0.8, False, False, 1.0
        )

    runs = [result("paper", s, 0.80) for s in range(3)] + [result("paper", 3, 0.40, False)]
    runs += [result("default", s, 0.81) for s in range(4)]
    (row,) = [line for line in wide_stalls.paired_table(runs, []) if "**all**" in line]
    # The unsound paper run (seed 3) is left out: 3 pairs, each +0.01.
    assert "| bfloat16 | **all** | 3 | 0.800 | 0.810 | +0.0100 |" in row


def test_wide_stalls_confirmation_applies_the_criteria_stated_in_advance():
    import wide_stalls

    spec = wide_stalls.other_cells.WIDE[0]
    base = {spec.name: 0.80}

    def result(seed, auc, sound=True, stalled=False):
        return wide_stalls.Result(
            "bfloat16", "default", spec.name, seed, auc, sound, 1, 0, 0, 0.8, stalled, False, 1
        )

    def verdict(runs):
        (line,) = wide_stalls.report("x", "cmd", runs, [spec], base, 6, 0)[-1:]
        return line

    # Within the margin (0.80 - 0.005) on 6 seeds: passes; on 3 seeds: holds so far.
    assert "**passes**" in verdict([result(s, 0.796) for s in range(6)])
    assert "**holds so far** (3 runs finished)" in verdict([result(s, 0.796) for s in range(3)])
    below = verdict([result(s, 0.794) for s in range(6)])
    assert f"logistic regression's minus 0.005: {spec.name} (0.794)" in below
    assert "**fails**" in below
    assert "**fails**" in verdict([result(s, 0.9, stalled=s == 2) for s in range(6)])
    assert "**fails already**" in verdict([result(0, 0.9, sound=False)])


def test_wide_stalls_bfloat16_default_is_judged_against_float32_as_stated():
    import wide_stalls

    spec = wide_stalls.other_cells.WIDE[0]
    base = {spec.name: 0.80}

    def result(precision, recipe, seed, auc):
        return wide_stalls.Result(
            precision, recipe, spec.name, seed, auc, True, 1, 0, 0, 0.8, False, False, 1
        )

    def runs(n, bf16_minus_f32):
        out = []
        for seed in range(n):
            f32 = 0.80 + 0.001 * (seed % 3)  # a spread, so the interval has a width
            for precision, auc in (("float32", f32), ("bfloat16", f32 + bf16_minus_f32)):
                out += [result(precision, recipe, seed, auc) for recipe in ("default", "paper")]
        return out

    def verdict(results):
        return wide_stalls.report("x", "cmd", results, [spec], base, 144, 0)[-1]

    assert "bfloat16 **stays the default on AMX**" in verdict(runs(36, 0.0))
    assert "does **not** stay the default" in verdict(runs(36, -0.004))
    assert "is not decided yet (3 of 36 pairs)" in verdict(runs(3, 0.0))
    table = "\n".join(wide_stalls.report("x", "cmd", runs(36, -0.004), [spec], base, 144, 0))
    assert f"| {spec.name} | 36 | 0.801 | 0.797 | -0.0040 |" in table


def tiny_block(script: str, tmp_path, *extra: str) -> str:
    """Run bench/SCRIPT --tiny into tmp_path/RESULTS.md; its text."""
    out = tmp_path / "RESULTS.md"
    res = subprocess.run(
        [sys.executable, f"bench/{script}", "--tiny", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out.read_text()


@pytest.mark.slow
def test_wide_stalls_tiny_run(tmp_path):
    block = tiny_block("wide_stalls.py", tmp_path, "--jobs", "2")  # both recipes at once
    assert "<!-- wide_stalls.py: default against paper begin -->" in block
    for recipe in ("default", "paper"):
        assert re.search(rf"^\| float32 \| {recipe} \| W5 \| .+ \| 0\.\d{{3}} \| 1 \|", block, re.M)
    rows = (tmp_path / "RESULTS-wide.csv").read_text().splitlines()
    assert rows[0].startswith("label,precision,recipe,cell,seed,test_auc,sound") and len(rows) == 3


@pytest.mark.slow
def test_pooled_overlap_tiny_run(tmp_path):
    block = tiny_block("pooled_overlap.py", tmp_path)
    assert "<!-- pooled_overlap.py: misaligned split begin -->" in block
    # One split for all cells: the default pools what the paper pools, to the byte.
    assert "every predictions.csv identical: **yes**" in block
    rows = re.findall(r"^\| (S00\d) \| 40 \| (\d+) \|", block, re.M)
    assert [c for c, _ in rows] == ["S001", "S002", "S003"]
    assert all(int(n) > 0 for _, n in rows)  # the misaligned cells' test genes are in the pool


@pytest.mark.slow
def test_engine_speed_tiny_run(tmp_path):
    block = tiny_block("engine_speed.py", tmp_path)
    assert "<!-- engine_speed.py: tiny begin -->" in block
    assert re.search(
        r"^\| sequential \(1 process, all \d+ cores\) \| \d+ \| [\d.]+ \|$", block, re.M
    )
    assert re.search(r"^\| dask, \d+ workers x \d+ thread\(s\) \| \d+ \| [\d.]+ \|$", block, re.M)
    assert "The two results tables are identical." in block
    assert re.search(r"a task that does nothing \d+ ms", block)
