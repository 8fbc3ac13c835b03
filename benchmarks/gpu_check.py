"""`make gpu-check`: the GPU path in one short run, for a machine with one GPU (under 8 minutes).

Three GRPO steps of the demo with HF rollouts, then three with vLLM rollouts; in each, one learner
rank and one rollout worker share the GPU by fractions. After every weight sync the rollout's
log-probs of the tokens it sampled are held against the learner's (a stale or garbled publish shows
as a large gap), and at the end every worker must hold the learner's version. Prints tokens/s and
the log-prob mismatch per step; exits non-zero on any failure, and with 2 when there is no GPU.

    python benchmarks/gpu_check.py [--steps 3] [--backends hf,vllm]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import ray
import torch
from _common import demo_config

from actors.controller import RayWorkers, connect
from rl_system.pipeline import r1_zero

MAX_MEAN_MISMATCH = 0.05  # nats per token, rollout (bf16) vs learner (fp32 master weights, bf16 autocast)


def check_backend(backend: str, steps: int, output: str) -> list[str]:
    cfg = demo_config([f"rollout.backend={backend}", f"num_steps={steps}", f"output_dir={output}/{backend}",
                       "learner.num_ranks=1", "learner.num_gpus=0.5", "learner.micro_batch_size=32",
                       "rollout.num_workers=1", "rollout.num_gpus=0.4", "rollout.gpu_memory_utilization=0.3",
                       "eval_before=false", "eval_after=false", "checkpoint_every=0"])
    failures = []
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        start = time.perf_counter()
        r1_zero.train(cfg, workers)
        wall = time.perf_counter() - start
        if workers.rollout_versions() != [steps]:
            failures.append(f"{backend}: rollout workers hold versions {workers.rollout_versions()}, expected {steps}")
        workers.shutdown()
    finally:
        ray.shutdown()
    lines = [json.loads(line) for line in open(f"{output}/{backend}/metrics.jsonl")]
    for m in lines:
        print(f"{backend} step {m['step']}: generate {m['tokens_per_s/generate']:.0f} tokens/s, "
              f"|rollout - learner| log-prob mean {m['behaviour_logprob_abs_diff']:.4f} "
              f"max {m['behaviour_logprob_abs_diff_max']:.4f}, loss {m['loss']:+.4f}", flush=True)
        if not m["behaviour_logprob_abs_diff"] < MAX_MEAN_MISMATCH:
            failures.append(f"{backend} step {m['step']}: rollout and learner log-probs differ by "
                            f"{m['behaviour_logprob_abs_diff']:.4f} a token (> {MAX_MEAN_MISMATCH}): stale weights?")
    if len(lines) != steps:
        failures.append(f"{backend}: {len(lines)} steps logged, expected {steps}")
    print(f"{backend}: {steps} steps in {wall:.0f} s", flush=True)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--output", default="runs/gpu_check")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no GPU visible to torch on this machine (torch.cuda.is_available() is False); "
              "nothing was checked. Run `make gpu-check` on a machine with a CUDA GPU.", file=sys.stderr)
        return 2
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    failures = []
    for backend in args.backends.split(","):
        failures += check_backend(backend, args.steps, args.output)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("gpu-check: " + ("FAILED" if failures else "passed"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
