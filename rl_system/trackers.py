"""Experiment trackers (logging.trackers): where a run's step metrics go besides metrics.jsonl.

One class per tracker, each a rl_system.metrics.Tracker; MetricsWriter fans out to the ones a run
chose. Each gets the scalars of every metrics.jsonl line (same names, same step), the
run's resolved config, one-off facts as text (the precision), and the held-out results at the end.
A tracker's package is imported only when it is chosen.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from rl_system.config import ConfigError, LoggingConfig, one_line
from rl_system.metrics import Tracker

# The trackers whose package is optional: pyproject.toml's `trackers` extra brings them.
OPTIONAL_PACKAGES = {"wandb": "wandb"}
INSTALL_HINT = "pip install -e '.[trackers]' (or make install-all)"


def require(tracker: str) -> Any:
    """The optional package `tracker` needs, imported; a one-line error naming the key if it is missing."""
    package = OPTIONAL_PACKAGES[tracker]
    try:
        return importlib.import_module(package)
    except ImportError as e:
        raise ConfigError(f"config key 'logging.trackers': {tracker} needs the '{package}' package, which does not "
                          f"import here ({one_line(e)}): {INSTALL_HINT}") from None


def check_installed(settings: LoggingConfig) -> None:
    """Every chosen tracker's package imports: checked before a run starts its workers."""
    for tracker in settings.trackers:
        if tracker in OPTIONAL_PACKAGES:
            require(tracker)


class TensorBoardTracker:
    """Event files in output_dir/tensorboard (`tensorboard --logdir runs/`). A resumed run drops the
    events of the steps it will redo; the results are scalars at the last step."""

    def __init__(self, settings: LoggingConfig, run_dir: Path, config: dict, resume_after_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(run_dir / "tensorboard"),
                                     purge_step=None if resume_after_step is None else resume_after_step + 1)
        self._last_step = resume_after_step or 0
        # Indented: TensorBoard renders text as Markdown, and this keeps the JSON a code block.
        self.text("config", "".join(f"    {line}\n" for line in json.dumps(config, indent=2, default=str).splitlines()))

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()
        self._last_step = step

    def text(self, tag: str, text: str) -> None:
        self._writer.add_text(tag, text)
        self._writer.flush()

    def summary(self, values: dict[str, float]) -> None:
        self.log(self._last_step, values)

    def close(self, ok: bool) -> None:
        self._writer.close()


class WandbTracker:
    """A Weights & Biases run in output_dir/wandb: offline by default (`wandb sync` uploads it later), so
    nothing leaves the machine unless logging.wandb_mode is online. The results go to its summary."""

    def __init__(self, settings: LoggingConfig, run_dir: Path, config: dict, resume_after_step: int | None):
        wandb = require("wandb")
        # create_new: the R1 recipe's RL stages are runs of their own in one process.
        self._run = wandb.init(project=settings.project, name=settings.run_name or Path(run_dir).resolve().name,
                               dir=str(run_dir), mode=settings.wandb_mode, config=config, reinit="create_new")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def text(self, tag: str, text: str) -> None:
        self._run.summary[tag] = text

    def summary(self, values: dict[str, float]) -> None:
        self._run.summary.update(values)

    def close(self, ok: bool) -> None:
        self._run.finish(exit_code=0 if ok else 1)


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker}


def open_trackers(settings: LoggingConfig, run_dir: Path, config: dict, resume_after_step: int | None) -> list[Tracker]:
    """The trackers logging.trackers names, started; if one fails to start, those started are closed."""
    opened: list[Tracker] = []
    try:
        for name in settings.trackers:
            opened.append(TRACKER_CLASSES[name](settings, run_dir, config, resume_after_step))
    except BaseException:
        for tracker in opened:
            tracker.close(ok=False)
        raise
    return opened
