"""Run metrics: one JSON line per step on disk and the same scalars in TensorBoard."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path


class MetricsWriter:
    """metrics.jsonl and TensorBoard events of a run. A new run starts both afresh; a resumed one
    keeps what was logged up to its checkpoint's step and drops the steps it will redo."""

    def __init__(self, run_dir: str | Path, resume_after_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / "metrics.jsonl"
        kept = []
        if resume_after_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_after_step]
        path.write_text("".join(line + "\n" for line in kept))
        self._jsonl = open(path, "a", buffering=1)
        self._tb = SummaryWriter(str(self.run_dir / "tensorboard"),
                                 purge_step=None if resume_after_step is None else resume_after_step + 1)

    def log(self, step: int, metrics: dict) -> None:
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, step)
        self._tb.flush()

    def text(self, tag: str, text: str) -> None:
        """A run fact that is not a number (e.g. its precision), as TensorBoard text."""
        self._tb.add_text(tag, text)
        self._tb.flush()

    def close(self) -> None:
        self._jsonl.close()
        self._tb.close()


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
