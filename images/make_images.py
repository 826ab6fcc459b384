"""The README's images: images/data.png (the bundled sample data), images/model.png (the
network) and images/auc.png with auc.csv and auc.md (the example runs against the published
AUCs), redrawn in one command; with --rerun the example runs are made again first.

    python images/make_images.py            # redraw the three images
    python images/make_images.py --rerun    # remake the example runs, then redraw

The figures are utils.py's and compare.py's; this script only says which and where.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules, from wherever this is run

import compare  # noqa: E402
import data  # noqa: E402
import synth  # noqa: E402
import utils  # noqa: E402
from results import InputError, display_path, exit_status  # noqa: E402

IMAGES = ROOT / "images"
SAMPLE_DATA = ROOT / "sample_data"

EXAMPLE_TITLE = (
    "Test AUC per cell type: example runs on GENERATED data vs. published AUCs on "
    "the real data\nThe generated cells only borrow the real cell ids: their AUCs "
    "say nothing about the real cells"
)


def rerun_example(
    runs_dir: Path,
    work: Path,
    n_cells: int = 56,
    genes: int = 200,
    epochs: int = 4,
    mix_epochs: int = 3,
    seed: int = 0,
) -> list[Path]:
    """Regenerate the example behind images/auc.png: generated data whose cells are named
    after the first ``n_cells`` published cells, a per-cell and a mixed run of main.py, and
    copies of their results tables and args.json in ``runs_dir/{percell,mix}``.
    Models and logs stay in ``work``."""
    cells = list(compare.read_baselines().index[:n_cells])
    data_dir = work / "data"
    synth.synthesize(data_dir, names=cells, n_genes=genes, seed=seed)
    runs = []
    for name, extra, n_epochs, table in (
        ("percell", [], epochs, "output.csv"),
        ("mix", ["--mix"], mix_epochs, "output-mix.csv"),
    ):
        save = work / name
        cmd = [
            sys.executable,
            str(ROOT / "main.py"),
            "--data_dir",
            str(data_dir),
            "--epochs",
            str(n_epochs),
            "--seed",
            str(seed),
            "--save_dir",
            str(save),
            "--overwrite",
            *extra,
        ]
        print("running: python " + " ".join(cmd[1:]), flush=True)
        res = subprocess.run(cmd)  # its per-epoch lines go straight to the terminal
        if res.returncode != 0:
            raise InputError(
                f"example run failed with exit status {res.returncode}: {' '.join(cmd[1:])}"
            )
        dest = runs_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in (table, "args.json"):
            shutil.copyfile(save / file, dest / file)
        runs.append(dest)
    return runs


def make_images(
    outdir: Path = IMAGES,
    runs: list | None = None,
    data_dir: str | os.PathLike = SAMPLE_DATA,
    cell: str | None = None,
    style: str = "auto",
    notes=print,
) -> list[Path]:
    """images/data.png, model.png and auc.png (+ auc.csv, auc.md); runs default to
    ``outdir/example_runs/*``, drawn with the generated-data title."""
    example = runs is None
    if example:
        runs = sorted(p for p in (outdir / "example_runs").glob("*") if p.is_dir())
        if not runs:
            raise InputError(
                f"{outdir / 'example_runs'}: no example runs; make them with "
                "python images/make_images.py --rerun"
            )
    outdir.mkdir(parents=True, exist_ok=True)
    # The comparison first: it reads the most user-supplied input, so it fails before any
    # image is replaced.
    labels = (
        [f"{line.label}, generated data" for line in compare.read_runs(runs)] if example else None
    )
    auc, _ = compare.compare(
        runs,
        outdir / "auc.png",
        labels=labels,
        title=EXAMPLE_TITLE if example else None,
        notes=notes,
    )
    cell = cell or data.list_cells(data_dir)[0]
    generated = Path(data_dir).resolve() == SAMPLE_DATA
    picture, _, _ = utils.plot_data(
        data_dir,
        outdir / "data.png",
        cell=cell,
        title=None
        if not generated
        else f"Histone marks around the TSS of two genes\ncell {cell} of the bundled sample data "
        "(GENERATED, not measured)",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import Convnet

    model = utils.plot_model(
        Convnet.Conv1DNet(),
        outdir / "model.png",
        style=style,
        title=utils.model_title(Convnet.Conv1DNet(), "full"),
    )
    return [picture, model, auc]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="images/make_images.py",
        description="Redraw images/data.png (sample data), images/model.png "
        "and images/auc.png (+ auc.csv, auc.md) from the example "
        "runs in images/example_runs.",
    )
    p.add_argument(
        "--outdir",
        default=display_path(IMAGES),
        help="where the images go; example runs in OUTDIR/example_runs [Default: %(default)s]",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="runs to compare instead of the example runs [Default: OUTDIR/example_runs/*]",
    )
    p.add_argument(
        "--data_dir",
        default=display_path(SAMPLE_DATA),
        help="data for data.png [Default: %(default)s]",
    )
    p.add_argument("--cell", default=None, help="cell for data.png [Default: the first cell]")
    p.add_argument(
        "--style",
        default="auto",
        choices=("auto", "keras", "matplotlib"),
        help="model.png drawing, as for python utils.py model [Default: %(default)s]",
    )
    p.add_argument(
        "--rerun",
        action="store_true",
        help="first regenerate the example: generated data named after the "
        "published cells, then a per-cell and a mixed run of main.py (about "
        "5 to 20 minutes on 2 CPU cores) [Default: off]",
    )
    p.add_argument(
        "--example_dir",
        default="logs/example",
        help="with --rerun, where the generated data, models and logs go [Default: %(default)s]",
    )
    p.add_argument(
        "--example_cells",
        type=int,
        default=56,
        help="with --rerun, how many cells [Default: %(default)s]",
    )
    p.add_argument(
        "--example_genes",
        type=int,
        default=200,
        help="with --rerun, genes per split [Default: %(default)s]",
    )
    p.add_argument(
        "--example_epochs",
        type=int,
        default=4,
        help="with --rerun, epochs of the per-cell run [Default: %(default)s]",
    )
    p.add_argument(
        "--example_mix_epochs",
        type=int,
        default=3,
        help="with --rerun, epochs of the mixed run [Default: %(default)s]",
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def note(text):
        print(text, file=sys.stderr)

    def work():
        outdir = Path(args.outdir)
        if args.rerun:
            for flag in (
                "example_cells",
                "example_genes",
                "example_epochs",
                "example_mix_epochs",
            ):
                if getattr(args, flag) < 1:
                    raise InputError(f"--{flag} must be at least 1")
            rerun_example(
                outdir / "example_runs",
                Path(args.example_dir),
                args.example_cells,
                args.example_genes,
                args.example_epochs,
                args.example_mix_epochs,
            )
        written = make_images(outdir, args.runs, args.data_dir, args.cell, args.style, notes=note)
        print(f"wrote {', '.join(map(str, written))}")

    return exit_status(work)


if __name__ == "__main__":
    sys.exit(main())
