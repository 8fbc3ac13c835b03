"""Does a small model learn to use a tool? configs/r1_zero_tools.yaml (3-term, 2-digit chain_sum,
SmolLM2-135M) trained with the calculator (multi-turn rollouts, environment workers) against the
same training without a tool (one turn, the demo's prompt): held-out greedy accuracy before and
after, format rate, tool calls per answer, wall time. One run after the other; nothing else should
run beside it.

    python benchmarks/tool_use.py [--steps 25]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import grpo_run

TOOLS_CONFIG = "configs/r1_zero_tools.yaml"
VARIANTS = {
    "with the calculator": [],
    "without a tool": ["env.name=''", "data.system_prompt=''"],  # '' = the demo's R1 prompt, no tool in it
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--output", default="runs/bench/tool_use")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    rows = {}
    for name, overrides in VARIANTS.items():
        run = grpo_run([f"num_steps={args.steps}", "checkpoint_every=0", *overrides],
                       out / name.replace(" ", "_"), TOOLS_CONFIG)
        before, after, last = run["results"]["before"], run["results"]["after"], run["steps"][-1]
        rows[name] = {"before": before["accuracy"], "after": after["accuracy"], "format_after": after["format_rate"],
                      "tokens_after": after["mean_length"],
                      "tool_calls": last.get("env/tool_calls_per_sample", 0.0),
                      "step_s": statistics.mean(m["time/step"] for m in run["steps"]), "wall_s": run["wall_s"]}
    print(f"\n{TOOLS_CONFIG}, {args.steps} steps, 64 held-out problems (greedy)")
    print("| training | held-out before | held-out after | format after | completion tokens after | "
          "tool calls / sample (last step) | mean step (s) | wall time (min) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['before']:.1%} | {r['after']:.1%} | {r['format_after']:.1%} | {r['tokens_after']:.1f} | "
              f"{r['tool_calls']:.2f} | {r['step_s']:.1f} | {r['wall_s'] / 60:.1f} |")
    (out / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
