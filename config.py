"""The run's configuration, and the run built from it.

``Config`` is what was asked for: main.py's flags, parsed and checked once into a frozen
dataclass (its defaults are the flags' defaults, so a Python caller can build one without
argparse). What one flag implies for another is settled when it is built (``__post_init__``):
``--holdout_cell`` is fine-tuning, fine-tuning mixes, ``--predict DIR`` reads DIR, a pooled
training has its pooling and split. Nothing assigns to it afterwards.

``Run`` is what this process found when it started: the tf.distribute strategy, the seed every
worker shares (drawn when none was given), the precision ``auto`` chose and why, whether this
process is the chief, and whether a resumed run's chief had finished the mixed model. It is
built once, in main.py, once TensorFlow has started, and passed to the experiments; reading a
setting through it (``run.epochs``) reads the configuration, except for the seed and the
precision, which it resolves.

``args.json`` is written from both (``Run.record``), and read back by ``--resume`` into a
Config through the same parser and checks (main.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

NO_ADDITIONAL_FEATURES = "no_additional_features"
ALL_CELLS = "all"  # --holdout_cell all: leave each chosen cell out in turn


def several_held_out(holdout_cell: str | None) -> bool:
    """Whether --holdout_cell names several cells (``all``, or a comma-separated list): the
    leave-one-out experiment over them, rather than one held-out cell."""
    return bool(holdout_cell) and (holdout_cell == ALL_CELLS or "," in holdout_cell)


class ExperimentError(Exception):
    """A run that cannot go on as asked (a bad saved model, a cell left without data, a save
    folder that cannot be written, too little memory); said in one line, exit status 2."""


@dataclass(frozen=True)
class Config:
    """main.py's flags (README and ``python main.py -h`` for each), in the flags' order; the
    last field, deterministic, is whether TensorFlow's deterministic ops are on (a seed was
    given; a resumed run keeps what it recorded)."""

    epochs: int = 20
    batch_size: int = 100
    lr: float = 0.001
    lr_decay: float = 0.9
    data_dir: str = "./data"
    debug: bool = False
    save_dir: str | None = None
    mix: bool = False
    pooling: str | None = None
    pool_split: str | None = None
    cells: str | None = None
    variant: str = "full"
    monitor: str = "val_accuracy"
    recipe: str = "default"
    restarts: int = 4
    seed: int | None = None
    weights: str | None = None
    predict: str | None = None
    finetune: bool = False
    finetune_epochs: int = 10
    finetune_lr: float = 0.0001
    freeze_conv: bool = False
    holdout_cell: str | None = None
    resume: bool = False
    overwrite: bool = False
    max_memory: float | None = None
    distribute: str = "none"
    devices: str | None = None
    scale_lr: bool = False
    mixed_precision: str = "auto"
    jit: bool = False
    engine: str = "sequential"
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    deterministic: bool | None = None

    def __post_init__(self):
        # What one flag implies for another, settled once while the configuration is built.
        settle = {}
        finetune = self.finetune or bool(self.holdout_cell)
        mix = self.mix or finetune
        if (finetune, mix) != (self.finetune, self.mix):
            settle.update(finetune=finetune, mix=mix)
        if self.predict is not None and self.data_dir != self.predict:
            settle["data_dir"] = self.predict
        if mix and not self.weights:
            settle["pooling"] = self.pooling or "held_out"
            settle["pool_split"] = self.pool_split or ("gene" if finetune else "row")
        if self.deterministic is None:
            settle["deterministic"] = self.seed is not None
        for name, value in settle.items():
            object.__setattr__(self, name, value)

    @property
    def features(self) -> bool:
        """Whether the model reads the 5 additional features (input length 505, else 500)."""
        return self.variant != NO_ADDITIONAL_FEATURES

    @classmethod
    def of(cls, values: dict[str, Any]) -> Config:
        """A Config from parsed flags (an argparse namespace's vars); other keys are left out."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class Run:
    """One process's run of a Config (see the module docstring). Reading a setting it does not
    hold reads the configuration's."""

    config: Config
    strategy: Any = None
    seed: int | None = None
    mixed_precision: str | None = None
    precision_reason: str | None = None
    chief: bool = True
    chief_trained: bool = False

    def __getattr__(self, name):
        # Only reached for names the run does not hold itself: the configuration's settings.
        if name == "config":
            raise AttributeError(name)
        return getattr(self.config, name)

    def record(self, cells: list[str]) -> dict[str, Any]:
        """The run's settings as args.json holds them: the flags in their order (--resume left
        out), the seed and precision this run used, the cells, and why auto chose the
        precision."""
        settings = dataclasses.asdict(self.config)
        settings.pop("resume")
        settings.update(seed=self.seed, mixed_precision=self.mixed_precision, cells=cells)
        if self.precision_reason is not None:
            settings["precision_reason"] = self.precision_reason
        return settings
