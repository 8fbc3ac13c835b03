"""Issue 30's measurement, the CLI commands a user runs, one after the other (nothing else should run
beside it):

1. `pipeline --config configs/r1_cold_start.yaml`: traces written by code -> cold-start SFT ->
   GRPO with the chain_sum curriculum (2x1 -> 2x2 -> 3x2) and online difficulty filtering. Each
   stage's held-out greedy accuracy per task (64 problems each, never trained on: 3x2 chain_sum,
   basic_arithmetic, and the held-out-only 2x1 and 4x2 chain_sum) is in its state.json;
2. `plot` of the GRPO stage (every metric), and here: accuracy per curriculum level over steps and
   the mean completion length over steps;
3. with --search: `evaluate` greedy and maj@8 on the 3x2 held-out problems; with --verifier also
   collect-samples at --collect-temperature, train-orm (its AUROC per task) and wbon@8.

    python benchmarks/reasoning.py [--traces 192] [--sft-epochs 2] [--rl-steps 12] [--search] [--verifier]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import cli

RECIPE = "configs/r1_cold_start.yaml"
TARGET = "chain_sum_3x2"


def stage_table(state: dict) -> list[str]:
    """Held-out greedy accuracy per task after each stage that evaluated, and the mean completion length."""
    stages = {name: s for name, s in state["stages"].items() if "task_accuracy" in s}
    tasks = list(next(iter(stages.values()))["task_accuracy"])
    lines = ["| task | " + " | ".join(f"after {name}" for name in stages) + " |", "|---|" + "---:|" * len(stages)]
    lines += [f"| {task} | " + " | ".join(f"{s['task_accuracy'][task]:.1%}" for s in stages.values()) + " |"
              for task in tasks]
    lines.append("| mean completion tokens (all tasks) | "
                 + " | ".join(f"{s['mean_length']:.1f}" for s in stages.values()) + " |")
    return lines


def training_table(rows: list[dict]) -> list[str]:
    """Per curriculum level of the target task: the steps at it, its mean training accuracy and completion length."""
    level_key, accuracy_key = f"task/{TARGET}/level", f"task/{TARGET}/accuracy"
    by_level: dict[int, list[dict]] = {}
    level = 0
    for row in rows:
        by_level.setdefault(level, []).append(row)  # a step trains at the level before its own promotion
        level = int(row.get(level_key, level))
    lines = ["| level | steps | training accuracy | mean completion tokens | zero-spread groups |", "|---:|---:|---:|---:|---:|"]
    for level, at in by_level.items():
        accuracy = [r[accuracy_key] for r in at if accuracy_key in r]
        lines.append(f"| {level} | {at[0]['step']}-{at[-1]['step']} | "
                     f"{sum(accuracy) / max(1, len(accuracy)):.1%} | "
                     f"{sum(r['completion_length'] for r in at) / len(at):.1f} | "
                     f"{sum(r['zero_std_groups'] for r in at) / len(at):.0%} |")
    last = rows[-1]
    skips = {k: last[k] for k in last if k.startswith("filter/")}
    if skips:
        lines.append("\ndifficulty filter (cumulative): " + ", ".join(f"{k} {v}" for k, v in skips.items()))
    return lines


def plot_training(rows: list[dict], out: Path) -> Path:
    """Training accuracy of each task (the target's curriculum level beside it) and completion length, over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (acc, level, length) = plt.subplots(1, 3, figsize=(13, 3.4))
    for key in sorted({k for r in rows for k in r if k.startswith("task/") and k.endswith("/accuracy")}):
        points = [(r["step"], r[key]) for r in rows if key in r]
        acc.plot([p[0] for p in points], [p[1] for p in points], label=key.split("/")[1])
    acc.set_title("training accuracy per task", fontsize=9)
    acc.legend(fontsize=7)
    level.step(steps, [r.get(f"task/{TARGET}/level", 0) for r in rows], where="post")
    level.set_title(f"{TARGET} curriculum level (0: 2x1, 1: 2x2, 2: 3x2)", fontsize=9)
    length.plot(steps, [r["completion_length"] for r in rows])
    length.set_title("mean completion length (tokens)", fontsize=9)
    for ax in (acc, level, length):
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "reasoning_training.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--traces", type=int, default=192, help="cold-start traces (r1.cold_start_prompts)")
    parser.add_argument("--sft-epochs", type=int, default=2)
    parser.add_argument("--rl-steps", type=int, default=12)
    parser.add_argument("--search", action="store_true", help="greedy and maj@8 on the 3x2 held-out problems")
    parser.add_argument("--verifier", action="store_true", help="also an ORM on collected samples and wbon@8")
    parser.add_argument("--collect-temperature", type=float, default=1.0)
    parser.add_argument("--output", default="runs/bench/reasoning")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    recipe = out / "pipeline"
    walls = {"pipeline": cli("pipeline", "--config", RECIPE, f"r1.output_dir={recipe}",
                             f"r1.cold_start_prompts={args.traces}", f"sft.epochs={args.sft_epochs}",
                             f"r1.reasoning_rl_steps={args.rl_steps}", "--overwrite")}
    cli("plot", str(recipe / "reasoning_rl"))
    state = json.loads((recipe / "state.json").read_text())
    rows = [json.loads(line) for line in (recipe / "reasoning_rl" / "metrics.jsonl").read_text().splitlines() if line]
    report = [f"## {RECIPE}: {args.traces} traces, SFT {args.sft_epochs} epochs, GRPO {args.rl_steps} steps",
              "", "Held-out greedy accuracy (64 problems a task)", "", *stage_table(state),
              "", f"GRPO training on {TARGET}, per curriculum level", "", *training_table(rows),
              "", "stage wall time (min): " + ", ".join(f"{name} {s['seconds'] / 60:.1f}"
                                                      for name, s in state["stages"].items()),
              f"plots: {plot_training(rows, out)}, {recipe / 'reasoning_rl' / 'plots'}"]

    if args.search or args.verifier:
        checkpoint = f"model.path={state['stages']['reasoning_rl']['output']}"
        methods, extra = "greedy,maj", []
        if args.verifier:
            samples, orm = out / "samples", out / "orm"
            walls["collect-samples"] = cli("collect-samples", "--config", RECIPE, checkpoint,
                                           f"collect.output_dir={samples}",
                                           f"collect.temperature={args.collect_temperature}", "--overwrite")
            walls["train-orm"] = cli("train-orm", "--config", "configs/orm.yaml", f"samples={samples}",
                                     f"output_dir={orm}", "--overwrite")
            methods, extra = "greedy,maj,wbon", [f"search.orm_path={orm}"]
        searched = out / "evaluate"
        walls["evaluate"] = cli("evaluate", "--config", RECIPE, "--methods", methods, "--budgets", "8", checkpoint,
                                f"search.tasks=[{TARGET}]", f"search.output_dir={searched}", *extra, "--overwrite")
        report += ["", f"Search on the {TARGET} held-out problems", "",
                   (searched / "search_results.md").read_text()]
    report.append("\nwall time (min): " + ", ".join(f"{k} {v / 60:.1f}" for k, v in walls.items()))
    text = "\n".join(report)
    (out / "report.md").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
