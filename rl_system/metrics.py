"""Run metrics: one JSON line per step on disk, and the same scalars in the run's experiment trackers."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol


class Tracker(Protocol):
    """An experiment tracker a run's metrics also go to (rl_system/trackers.py has one class per tracker)."""

    def log(self, step: int, scalars: dict[str, float]) -> None: ...
    def text(self, tag: str, text: str) -> None: ...
    def summary(self, values: dict[str, float]) -> None: ...  # the run's final results
    def close(self, ok: bool) -> None: ...  # ok=False: the run failed; what was logged stays readable


class MetricsWriter:
    """metrics.jsonl of a run, always, fanned out to its trackers (logging.trackers). A new run starts
    afresh; a resumed one keeps the lines up to its checkpoint's step and drops the steps it will redo
    (the trackers were opened knowing that step). As a context manager it closes the trackers on
    success and on failure alike, so a failed run's tracker data stays readable."""

    def __init__(self, run_dir: str | Path, trackers: list[Tracker], resume_after_step: int | None = None):
        self._trackers = trackers
        try:
            self.run_dir = Path(run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self.run_dir / "metrics.jsonl"
            kept = []
            if resume_after_step is not None and path.exists():
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_after_step]
            path.write_text("".join(line + "\n" for line in kept))
            self._jsonl = open(path, "a", buffering=1)
        except BaseException:
            self._close_trackers(ok=False)
            raise

    def log(self, step: int, metrics: dict) -> None:
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        scalars = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
        for tracker in self._trackers:
            tracker.log(step, scalars)

    def text(self, tag: str, text: str) -> None:
        """A run fact that is not a number (e.g. its precision)."""
        for tracker in self._trackers:
            tracker.text(tag, text)

    def summary(self, results: dict) -> None:
        """The run's final results (nested dicts of numbers), keyed by their path: held_out/after/accuracy."""
        values = flatten(results)
        for tracker in self._trackers:
            tracker.summary(values)

    def close(self, ok: bool = True) -> None:
        self._jsonl.close()
        self._close_trackers(ok)

    def _close_trackers(self, ok: bool) -> None:
        for tracker in self._trackers:
            tracker.close(ok)

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(ok=exc_type is None)


def flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of nested dicts, keyed by their path joined with '/'."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = value
    return out


class StepTimer:
    """Wall time per named phase of one step: `with timer("generate"): ...`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def pearson(x: list[float], y: list[float]) -> float:
    """Correlation of two equal-length series; nan when either is constant."""
    mx, my = mean(x), mean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else float("nan")
