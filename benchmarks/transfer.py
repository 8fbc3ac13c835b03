"""Issue 18's measurement, the CLI commands a user runs, one after the other (nothing else should run
beside it):

1. `train` on the task mixture (configs/r1_zero_mix.yaml): per-task held-out greedy accuracy before
   and after, and the mean completion length over the steps (`plot` draws it);
2. search sampling settings chosen on *training* problems (search.split=train): maj@8 at each
   temperature, the best one is used below;
3. verifiers on the mixture's policy: collect-samples (with Monte-Carlo step labels), train-orm,
   train-prm (their AUROC per task is in their output);
4. `evaluate` on the held-out problems of the target tasks: greedy, maj, bon, wbon, beam, mcts at
   budgets 1, 4, 8, 16.

    python benchmarks/transfer.py [--steps 120] [--temperatures 0.3 0.6 1.0]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import cli

MIX = "configs/r1_zero_mix.yaml"
TARGETS = "[chain_sum_3x2, basic_arithmetic]"


def search_rows(out_dir: Path) -> list[dict]:
    return json.loads((out_dir / "search_results.json").read_text())["rows"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    parser.add_argument("--budgets", default="1,4,8,16")
    parser.add_argument("--output", default="runs/bench/transfer")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    policy = out / "policy"
    walls = {"train": cli("train", "--config", MIX, f"num_steps={args.steps}", f"output_dir={policy}", "--overwrite")}
    cli("plot", str(policy))
    checkpoint = f"model.path={policy / 'checkpoint'}"

    tuning = {}
    for t in args.temperatures:
        tuned = out / f"sampling_t{t}"
        cli("evaluate", "--config", MIX, "--methods", "greedy,maj", "--budgets", "8", checkpoint, "search.split=train",
            f"search.tasks={TARGETS}", "search.num_problems=128", f"search.temperature={t}",
            f"search.output_dir={tuned}", "--overwrite")
        tuning[t] = {r["method"]: r["accuracy"] for r in search_rows(tuned)}
    temperature = max(tuning, key=lambda t: (tuning[t]["maj"], -t))

    samples, orm, prm = out / "samples", out / "orm", out / "prm"
    walls["collect-samples"] = cli("collect-samples", "--config", MIX, checkpoint, f"collect.output_dir={samples}",
                                   f"collect.temperature={temperature}", "collect.mc_rollouts=4", "--overwrite")
    walls["train-orm"] = cli("train-orm", "--config", "configs/orm.yaml", f"samples={samples}", f"output_dir={orm}",
                             "--overwrite")
    walls["train-prm"] = cli("train-prm", "--config", "configs/prm.yaml", f"samples={samples}", f"output_dir={prm}",
                             "--overwrite")
    searched = out / "evaluate"
    walls["evaluate"] = cli("evaluate", "--config", MIX, "--methods", "greedy,maj,bon,wbon,beam,mcts",
                            "--budgets", args.budgets, checkpoint, f"search.tasks={TARGETS}",
                            f"search.temperature={temperature}", f"search.orm_path={orm}", f"search.prm_path={prm}",
                            f"search.output_dir={searched}", "--overwrite")

    results = json.loads((policy / "results.json").read_text())
    print(f"\n## {MIX}, {args.steps} steps: held-out greedy accuracy per task")
    print("| task | before | after |\n|---|---:|---:|")
    for task, after in results["after"].get("tasks", {}).items():
        print(f"| {task} | {results['before']['tasks'][task]['accuracy']:.1%} | {after['accuracy']:.1%} |")
    print("\n## search sampling on 128 training problems of the target tasks (greedy, maj@8)")
    print("| temperature | greedy | maj@8 |\n|---:|---:|---:|")
    for t, row in tuning.items():
        print(f"| {t} | {row['greedy']:.1%} | {row['maj']:.1%} |")
    print(f"chosen: temperature {temperature}")
    print("\n## held-out search, per target task")
    rows = search_rows(searched)
    tasks = list(rows[0]["task_accuracy"])
    print("| method | budget | " + " | ".join(tasks) + " | tokens / problem | wall (s) |")
    print("|---|---:|" + "---:|" * (len(tasks) + 2))
    for r in rows:
        print(f"| {r['method']} | {r['budget']} | " + " | ".join(f"{r['task_accuracy'][t]:.1%}" for t in tasks)
              + f" | {r['tokens_per_problem']:.0f} | {r['wall_s']:.0f} |")
    print("\nwall time (min): " + ", ".join(f"{k} {v / 60:.1f}" for k, v in walls.items()))
    (out / "summary.json").write_text(json.dumps({"tuning": tuning, "temperature": temperature, "walls": walls},
                                                 indent=2))


if __name__ == "__main__":
    main()
