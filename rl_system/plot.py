"""`python -m rl_system plot RUN_DIR`: PNG charts of a run's metrics.jsonl, for people without Grafana.

Metrics are grouped by the part of their key before "/" (reward/*, time/*, buffer/*, ...); the
plain keys by what they measure. Each group becomes one PNG with one chart per metric over steps.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

PLAIN_KEY_GROUPS = {  # keys without a "/": the chart file they go to
    "accuracy": "quality", "format_rate": "quality", "completion_length": "quality", "truncated_rate": "quality",
    "zero_std_groups": "quality", "reward_failures": "reward",
    "loss": "learner", "kl": "learner", "grad_norm": "learner", "clip_fraction": "learner",
    "behaviour_logprob_abs_diff": "learner",
}
NOT_PLOTTED = ("step", "time")  # the x axis and the wall-clock stamp


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics here (is '{run_dir}' a run's output_dir?)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: no steps logged yet")
    return rows


def group_of(key: str) -> str:
    family, slash, _ = key.partition("/")
    return family if slash else PLAIN_KEY_GROUPS.get(key, "other")


def metric_groups(rows: list[dict]) -> dict[str, list[str]]:
    """Group name -> the numeric metric keys in it, in first-seen order."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        for key, value in row.items():
            if key in NOT_PLOTTED or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            keys = groups.setdefault(group_of(key), [])
            if key not in keys:
                keys.append(key)
    return groups


def plot_run(run_dir: str | Path, output_dir: str | Path | None = None) -> dict[str, Path]:
    """Writes one PNG per metric group; returns group name -> file."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out = Path(output_dir) if output_dir else Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for group, keys in metric_groups(rows).items():
        cols = min(3, len(keys))
        nrows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.8 * nrows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if len(points) < 30 else None)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.set_visible(False)
        fig.suptitle(f"{Path(run_dir).name}: {group}", fontsize=11)
        fig.tight_layout()
        written[group] = out / f"{group}.png"
        fig.savefig(written[group], dpi=90)
        plt.close(fig)
    return written
