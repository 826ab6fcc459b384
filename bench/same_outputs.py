"""Does a change of the code keep what the commands write? Seeded runs on the bundled sample data,
each file they write fingerprinted, compared with a record made before the change.

    python bench/same_outputs.py --record W/before.json     # on the code before the change
    python bench/same_outputs.py --check W/before.json      # after it: every file the same?

The commands (2 epochs, seed 1, float32 so that the arithmetic is the same on every CPU):

    python main.py --data_dir sample_data --epochs 2 --seed 1 --mixed_precision off   (per cell)
    ... --mix;  ... --finetune --finetune_epochs 2;
    python main.py --weights <per-cell run> --predict sample_data --seed 1
    python explain.py <per-cell run> --cells S001

Fingerprinted: results tables, logs, predictions, attempts and training records, explain
tables (SHA-256 of the bytes); not models, figures or TensorBoard files (they hold timestamps
or library versions), nor args.json's save_dir and --engine's settings; the temporary
folder's path is written as WORK wherever a file names it. Differences are listed file by
file; exit status 1 when there is one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--data_dir", "sample_data", "--epochs", "2", "--seed", "1", "--mixed_precision", "off"]
RUNS = {
    "percell": COMMON,
    "mix": [*COMMON, "--mix"],
    "finetune": [*COMMON, "--finetune", "--finetune_epochs", "2"],
}
KEPT = {".csv", ".json"}


def run(cmd: list[str]) -> None:
    proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"python {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def fingerprint(folder: Path, work: Path) -> dict[str, str]:
    found = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in KEPT or "tensorboard" in path.parts:
            continue
        data = path.read_bytes().replace(str(work).encode(), b"WORK")  # a temporary folder
        if path.name == "args.json":  # where the run was saved differs by construction
            settings = json.loads(data)
            settings.pop("save_dir", None)
            settings.pop("weights", None)
            for key in ("engine", "workers", "threads_per_worker", "scheduler"):
                settings.pop(key, None)  # how the cells were spread (issue 31), not what ran
            data = json.dumps(settings, sort_keys=True).encode()
        found[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return found


def outputs(work: Path) -> dict[str, dict[str, str]]:
    for name, flags in RUNS.items():
        run(["main.py", *flags, "--save_dir", str(work / name)])
    run(["main.py", "--weights", str(work / "percell"), "--predict", "sample_data",
         "--seed", "1", "--save_dir", str(work / "predict")])  # fmt: skip
    run(["explain.py", str(work / "percell"), "--cells", "S001"])
    return {name: fingerprint(work / name, work) for name in [*RUNS, "predict"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--record", type=Path, help="write the fingerprints here")
    what.add_argument("--check", type=Path, help="compare with the fingerprints recorded here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        found = outputs(Path(tmp))
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
        print(f"recorded {sum(map(len, found.values()))} files to {args.record}")
        return 0
    before = json.loads(args.check.read_text())
    differ = [
        f"{run}/{name}: {'missing' if name not in found.get(run, {}) else 'new' if name not in files else 'changed'}"
        for run in sorted(set(before) | set(found))
        for files in [before.get(run, {})]
        for name in sorted(set(files) | set(found.get(run, {})))
        if files.get(name) != found.get(run, {}).get(name)
    ]
    for line in differ:
        print(line)
    total = sum(map(len, found.values()))
    print(f"{total} files compared: {'all the same' if not differ else f'{len(differ)} differ'}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
