"""Async against sync GRPO on the demo config, measured side by side in one run: samples per
second over the whole run and held-out greedy accuracy after it.
Target: async at least 1.5x the samples/s of sync, with no accuracy loss. `--partial` adds async
with partial rollouts (rollout.partial_rollout: generations cut by a weight update resume under the
new weights), with how many groups were resumed and the trained tokens' staleness.

Async only gains where generation and training have hardware of their own (their own GPUs, as in
a non-colocated deployment): `--disjoint-cores` gives both modes one rollout worker and one
learner rank of one torch thread each, so each side has a core to itself.

    python benchmarks/async_vs_sync.py [--steps 25] [--staleness 1] [--disjoint-cores] [--partial]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _common import grpo_run


def run(overrides: list[str], output: Path) -> dict:
    result = grpo_run(overrides, output)
    cfg, steps = result["cfg"], result["steps"]
    seconds = sum(m["time/step"] for m in steps)
    samples = len(steps) * cfg.prompts_per_step * cfg.rollout.group_size
    return {"samples_per_s": samples / seconds, "seconds": seconds, "accuracy": result["results"]["after"]["accuracy"],
            "max_staleness_seen": max(m["staleness/max"] for m in steps),
            "partial_groups": sum(m["rollout/partial_groups"] for m in steps),
            "token_staleness": sum(m.get("staleness/token_mean", 0.0) for m in steps) / len(steps)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--staleness", type=int, default=1)
    parser.add_argument("--disjoint-cores", action="store_true")
    parser.add_argument("--partial", action="store_true", help="also async with rollout.partial_rollout=true")
    parser.add_argument("--output", default="runs/bench/async_vs_sync")
    args = parser.parse_args()
    common = [f"num_steps={args.steps}", "eval_before=false", "checkpoint_every=0"]
    if args.disjoint_cores:
        common += ["rollout.num_workers=1", "rollout.num_threads=1", "learner.num_ranks=1", "learner.num_threads=1"]
    out = Path(args.output).resolve()
    sync = run([*common, "mode=sync"], out / "sync")
    asyn = run([*common, "mode=async", f"max_staleness={args.staleness}"], out / "async")
    runs = [("sync", sync), (f"async (k={args.staleness})", asyn)]
    if args.partial:
        runs.append((f"async (k={args.staleness}), partial rollouts",
                     run([*common, "mode=async", f"max_staleness={args.staleness}", "rollout.partial_rollout=true"],
                         out / "async_partial")))
    print("\n| mode | samples/s | training time (s) | held-out accuracy after | max staleness | resumed groups "
          "| mean token staleness |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, r in runs:
        print(f"| {name} | {r['samples_per_s']:.2f} | {r['seconds']:.0f} | {r['accuracy']:.1%} | "
              f"{r['max_staleness_seen']} | {r['partial_groups']} | {r['token_staleness']:.2f} |")
    print(f"async / sync throughput: {asyn['samples_per_s'] / sync['samples_per_s']:.2f}x (target >= 1.5x); "
          f"accuracy {asyn['accuracy'] - sync['accuracy']:+.1%} (target >= 0)")
    if args.partial:
        partial = runs[-1][1]
        print(f"partial / plain async throughput: {partial['samples_per_s'] / asyn['samples_per_s']:.2f}x; "
              f"accuracy {partial['accuracy'] - asyn['accuracy']:+.1%}")


if __name__ == "__main__":
    main()
