"""The evaluate command's outputs: a markdown table, the same rows as CSV, and an accuracy-vs-compute plot."""
from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

COLUMNS = ("method", "budget", "verifier", "accuracy", "generated_tokens", "tokens_per_problem", "wall_s",
           "num_problems")
BUDGET_NOTE = ("Budget N: N sampled answers (maj, bon, wbon); N candidate steps per level, width x expansions "
               "(beam); N simulations of one step plus one rollout (mcts); greedy runs once. Generated tokens count "
               "every token sampled, discarded ones included; wall time covers the search, not the final grading.")
ORACLE_NOTE = ("A verifier marked (oracle) is the rule grader, which sees the reference answer while searching: "
               "its accuracy is an upper bound, not something a deployed system attains.")


def markdown_table(rows: list[dict], title: str) -> str:
    lines = [f"# Test-time search: {title}", "",
             "| method | budget | verifier | accuracy | generated tokens | tokens / problem | wall time (s) |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['budget']} | {r['verifier']} | {r['accuracy']:.1%} | "
                     f"{r['generated_tokens']} | {r['tokens_per_problem']:.1f} | {r['wall_s']:.1f} |")
    tasks = list(rows[0].get("task_accuracy", {}))
    if tasks:  # a data.tasks mixture: each task's accuracy
        lines += ["", "| method | budget | " + " | ".join(tasks) + " |", "|---|---:|" + "---:|" * len(tasks)]
        lines += [f"| {r['method']} | {r['budget']} | " + " | ".join(f"{r['task_accuracy'][t]:.1%}" for t in tasks)
                  + " |" for r in rows]
    notes = [BUDGET_NOTE, *([ORACLE_NOTE] if any("oracle" in r["verifier"] for r in rows) else [])]
    return "\n".join([*lines, "", *notes, ""])


def plot_accuracy_vs_compute(rows: list[dict], path: Path, title: str) -> None:
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        points = sorted((r for r in rows if r["method"] == method), key=lambda r: r["tokens_per_problem"])
        verifier = points[0]["verifier"]
        single = len(points) == 1  # greedy: a star, so that the lines drawn later do not hide it
        ax.plot([r["tokens_per_problem"] for r in points], [r["accuracy"] for r in points],
                marker="*" if single else "o", markersize=14 if single else 6, zorder=3 if single else 2,
                label=method if verifier == "-" else f"{method} ({verifier})")
        for r in points:
            ax.annotate(str(r["budget"]), (r["tokens_per_problem"], r["accuracy"]), textcoords="offset points",
                        xytext=(3, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (log scale; labels: budget N)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title.replace("`", ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(rows: list[dict], out_dir: str | Path, title: str) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "search_results.md", "csv": out / "search_results.csv",
             "plot": out / "accuracy_vs_compute.png", "json": out / "search_results.json"}
    paths["markdown"].write_text(markdown_table(rows, title))
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in COLUMNS} for r in rows)
    plot_accuracy_vs_compute(rows, paths["plot"], title)
    paths["json"].write_text(json.dumps({"title": title, "rows": rows}, indent=2))
    return paths
