"""Experiment trackers (logging.trackers): where a run's step metrics go besides metrics.jsonl:
TensorBoard, Weights & Biases, MLflow.

One class per tracker, each a rl_system.metrics.Tracker; MetricsWriter fans out to the ones a run
chose. Each gets the scalars of every metrics.jsonl line (same names, same step), the
run's resolved config, one-off facts as text (the precision), and the held-out results at the end.
A tracker's package is imported only when it is chosen.
"""
from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any

from rl_system.config import ConfigError, LoggingConfig, one_line
from rl_system.metrics import Tracker

# The trackers whose package is optional: pyproject.toml's `trackers` extra brings them.
OPTIONAL_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}
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


class MlflowTracker:
    """An MLflow run in experiment logging.project: by default in a file store under output_dir/mlruns, or
    at logging.mlflow_tracking_uri. The config goes in as params (dotted keys), the precision as a tag,
    the results as metrics at the last step; a failed run ends FAILED."""

    PARAM_CHARS, PARAMS_BATCH, METRICS_BATCH = 6000, 100, 1000  # MLflow's limits: a param's length, items per call

    def __init__(self, settings: LoggingConfig, run_dir: Path, config: dict, resume_after_step: int | None):
        mlflow = require("mlflow")
        uri = settings.mlflow_tracking_uri or (Path(run_dir).resolve() / "mlruns").as_uri()
        if uri.startswith("file:"):  # MLflow 3 refuses its file store unless asked; a local run wants no database
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client, self._entities = mlflow.tracking.MlflowClient(uri), mlflow.entities
        experiment = self._client.get_experiment_by_name(settings.project)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(settings.project)
        name = settings.run_name or Path(run_dir).resolve().name
        self._run_id = self._client.create_run(experiment_id, run_name=name).info.run_id
        self._last_step = resume_after_step or 0
        params = [self._entities.Param(key, str(value)[:self.PARAM_CHARS]) for key, value in _dotted(config).items()]
        for i in range(0, len(params), self.PARAMS_BATCH):
            self._client.log_batch(self._run_id, params=params[i:i + self.PARAMS_BATCH])

    def log(self, step: int, scalars: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        metrics = [self._entities.Metric(key, float(value), now, step) for key, value in scalars.items()]
        for i in range(0, len(metrics), self.METRICS_BATCH):
            self._client.log_batch(self._run_id, metrics=metrics[i:i + self.METRICS_BATCH])
        self._last_step = step

    def text(self, tag: str, text: str) -> None:
        self._client.set_tag(self._run_id, tag, text)

    def summary(self, values: dict[str, float]) -> None:
        self.log(self._last_step, values)

    def close(self, ok: bool) -> None:
        self._client.set_terminated(self._run_id, "FINISHED" if ok else "FAILED")


def _dotted(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: value}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


TRACKER_CLASSES = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


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
