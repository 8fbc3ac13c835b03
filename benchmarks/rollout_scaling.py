"""Rollout scaling on a fake multi-node cluster (ray.cluster_utils.Cluster: 8 nodes x 4 CPUs on this
machine): 1 to 32 rollout workers, each "generating" with a simulated cost (a sleep per group, no
model), driven by the controller's real fan-out and wait (RayWorkers.generate / wait).
Efficiency at W workers = throughput(W) / (W x throughput(1)). Target: >= 85% at 32.

    python benchmarks/rollout_scaling.py [--groups 512] [--group-seconds 0.05]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import ray
from ray.cluster_utils import Cluster

from actors.controller import RayWorkers
from rl_system.config import load_config
from rl_system.data import Problem
from rl_system.types import LOGPROB_DTYPE, TOKEN_DTYPE, PromptGroup


@ray.remote
class SimulatedRolloutWorker:
    """RolloutWorker's generate interface with a fixed cost per group instead of a model."""

    def __init__(self, cfg, group_seconds: float, worker_index: int):
        self.cfg, self.group_seconds = cfg, group_seconds

    def generate(self, problems, greedy=False, max_new_tokens=None, n=None, prefills=None, stop_strings=None):
        n, tokens = n or self.cfg.rollout.group_size, max_new_tokens or self.cfg.rollout.max_new_tokens
        time.sleep(self.group_seconds * len(problems))
        groups = [PromptGroup(p, [1] * 32, [np.full(tokens, 2, TOKEN_DTYPE) for _ in range(n)], ["x"] * n,
                              [np.zeros(tokens, LOGPROB_DTYPE) for _ in range(n)], [False] * n, 0)
                  for p in problems]
        return (*groups, len(groups))

    def precision(self) -> dict:  # no model, so no dtype resolved
        return {"role": "rollout", "requested": "auto", "dtype": "none (simulated)", "node_kind": "simulated"}


def throughput(workers: RayWorkers, problems: list[Problem], rounds: int) -> float:
    """Groups per second through generate + wait, median of `rounds`."""
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        workers.wait(workers.generate(problems))
        seconds.append(time.perf_counter() - start)
    return len(problems) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=512, help="prompt groups per round")
    parser.add_argument("--group-seconds", type=float, default=0.05, help="simulated generation time of one group")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(8):
        cluster.add_node(num_cpus=4)
    ray.init(address=cluster.address, namespace="rollout-scaling")
    problems = [Problem(i, f"{i} + 1", str(i + 1)) for i in range(args.groups)]
    rates = {}
    try:
        for size in (1, 2, 4, 8, 16, 32):
            cfg = load_config("configs/r1_zero.yaml", [f"rollout.num_workers={size}", "reward.num_cpus=0.5"])
            workers = RayWorkers(cfg, with_learner=False, rollout_cls=SimulatedRolloutWorker,
                                 rollout_args=(args.group_seconds,))
            try:
                rates[size] = throughput(workers, problems, args.rounds)
            finally:
                workers.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"\n{args.groups} groups per round, {args.group_seconds * 1000:.0f} ms simulated generation per group, "
          f"8 fake nodes x 4 CPUs")
    print("| rollout workers | groups/s | speed-up | efficiency |\n|---:|---:|---:|---:|")
    for size, rate in rates.items():
        print(f"| {size} | {rate:.1f} | {rate / rates[1]:.1f}x | {rate / (size * rates[1]):.0%} |")
    print(f"efficiency at 32 workers: {rates[32] / (32 * rates[1]):.0%} (target >= 85%)")


if __name__ == "__main__":
    main()
