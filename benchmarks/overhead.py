"""Orchestration overhead: the same GRPO steps through Ray (RayWorkers: one rollout worker, one
reward worker, one DeepSpeed learner rank, groups and weights through the object store) and in one
process without Ray (rl_system.local.LocalWorkers), measured side by side in one run.
Target: Ray at most 10% slower per generated token.

    python benchmarks/overhead.py [--steps 6] [--model models/smollm2-135m-instruct]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rl_system.config import load_config
from rl_system.local import LocalWorkers
from rl_system.pipeline import r1_zero

PHASES = ("generate", "score", "train", "weight_sync", "step")


def run(cfg, make_workers) -> dict:
    """Totals over steps 2..N (step 1 warms up): seconds per phase and completion tokens."""
    shutil.rmtree(cfg.output_dir, ignore_errors=True)
    workers = make_workers(cfg)
    try:
        r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()
    steps = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()][1:]
    totals = {phase: sum(m[f"time/{phase}"] for m in steps) for phase in PHASES}
    totals["tokens"] = sum(m["tokens_per_s/step"] * m["time/step"] for m in steps)
    return totals


def ray_workers(cfg):
    from actors.controller import RayWorkers, connect, resolve_paths

    connect(cfg)
    return RayWorkers(resolve_paths(cfg))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--output", default="runs/bench/overhead")
    args = parser.parse_args()
    common = [f"model.path={Path(args.model).resolve()}", f"num_steps={args.steps}", "learner.num_ranks=1",
              "rollout.num_workers=1", "reward.num_workers=1", "eval_before=false", "eval_after=false",
              "checkpoint_every=0", "cluster.include_dashboard=false"]
    out = Path(args.output).resolve()
    local = run(load_config("configs/r1_zero.yaml", [*common, f"output_dir={out / 'local'}"]), LocalWorkers)
    on_ray = run(load_config("configs/r1_zero.yaml", [*common, f"output_dir={out / 'ray'}"]), ray_workers)
    print(f"\n{args.steps - 1} steps after warm-up, demo config, 1 rollout worker / 1 reward worker / 1 learner rank")
    print("| phase | one process (s) | Ray (s) | Ray / one process |\n|---|---:|---:|---:|")
    for phase in PHASES:
        print(f"| {phase} | {local[phase]:.1f} | {on_ray[phase]:.1f} | {on_ray[phase] / local[phase]:.2f} |")
    print(f"| completion tokens | {local['tokens']:.0f} | {on_ray['tokens']:.0f} | |")
    per_token = (on_ray["step"] / on_ray["tokens"]) / (local["step"] / local["tokens"])
    print(f"overhead per generated token: {per_token - 1:+.1%} (target <= +10%)")


if __name__ == "__main__":
    main()
