"""Weight publish against a raw copy of the same bytes, measured side by side in one run.

publish:  RayWorkers.sync_weights, as in training: learner rank 0 casts the weights to the rollout
          dtype into one of its two shared-memory slots and puts their description in the object
          store; every rollout worker maps the slot, checks the manifest and version, and points its
          parameters at it (a worker on another node gets the bytes through the object store).
raw copy: the same number of bytes copied once per rollout worker, in one process (torch copy_
          between flat buffers): the least any publish has to move.

    python benchmarks/weight_sync.py [--model models/smollm2-135m-instruct] [--repeats 10] [--warmup 3]
"""
from __future__ import annotations

import argparse

import ray
import torch
from _common import median_seconds

from actors.controller import RayWorkers, connect, resolve_paths
from rl_system.config import load_config
from rl_system.models import dtype_from_name, publish_dtype


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [f"model.path={args.model}",
                                                              "cluster.include_dashboard=false"]))
    connect(cfg)
    workers = RayWorkers(cfg)
    try:
        params = ray.get(workers.rollouts.actors[0].__ray_call__.remote(
            lambda worker: sum(p.numel() for p in worker.sampler.model.parameters())))
        # untrained: the learners hold version 0
        publish = median_seconds(lambda: workers.sync_weights(0), args.repeats, args.warmup)
        dtype = publish_dtype(workers.precision())
    finally:
        workers.shutdown()
        ray.shutdown()
    nbytes = params * torch.finfo(dtype_from_name(dtype)).bits // 8
    source = torch.ones(nbytes, dtype=torch.uint8)
    targets = [torch.zeros_like(source) for _ in range(cfg.rollout.num_workers)]
    raw = median_seconds(lambda: [target.copy_(source) for target in targets], args.repeats, args.warmup)
    print(f"{params / 1e6:.1f} M parameters = {nbytes / 2**20:.0f} MiB as {dtype}; "
          f"{cfg.learner.num_ranks} learner ranks (ZeRO-{cfg.learner.zero_stage}) -> {cfg.rollout.num_workers} rollout workers")
    print(f"weight publish {publish * 1000:.0f} ms, raw copy {raw * 1000:.0f} ms (medians of {args.repeats} "
          f"after {args.warmup} warm-up rounds): "
          f"ratio {publish / raw:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
