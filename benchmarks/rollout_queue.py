"""Rollout utilisation with the generation work queue against one call per worker (the old
round-robin), on a fake cluster (ray.cluster_utils.Cluster: 8 nodes x 8 logical CPUs on this
machine) with 64 rollout workers that simulate generation: a sleep per generated token, with
long-tailed completion lengths (lognormal, median 300 tokens, capped at 8192; the same lengths for
a given problem under both policies). 1024 prompts x 16 samples a step through the controller's
real generate and wait (RayWorkers).

Utilisation = the workers' busy time / (workers x step time). The driver's own time = the driver
process's CPU time in the step (the queue's thread included) / step time.
Targets: utilisation >= 90% with the queue; driver time <= 5% of the step.

    python benchmarks/rollout_queue.py [--workers 64] [--prompts 1024] [--steps 3]
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import numpy as np
import ray
from ray.cluster_utils import Cluster

from actors.controller import RayWorkers
from rl_system.config import load_config
from rl_system.data import Problem
from rl_system.types import LOGPROB_DTYPE, TOKEN_DTYPE, PromptGroup


def completion_length(problem_id: int, sample: int) -> int:
    rng = random.Random(problem_id * 1000 + sample)
    return min(8192, max(1, int(rng.lognormvariate(math.log(300), 1.0))))


@ray.remote
class SimulatedRolloutWorker:
    """RolloutWorker's generate interface; a call lasts seconds_per_token x the tokens it generates."""

    def __init__(self, cfg, seconds_per_token: float, worker_index: int):
        self.cfg, self.seconds_per_token, self.busy = cfg, seconds_per_token, 0.0

    def generate(self, problems, greedy=False, max_new_tokens=None, n=None, prefills=None, stop_strings=None):
        start = time.perf_counter()
        n = n or self.cfg.rollout.group_size
        groups = []
        for p in problems:
            lengths = [completion_length(p.problem_id, j) for j in range(n)]
            groups.append(PromptGroup(p, [1] * 32, [np.full(k, 2, TOKEN_DTYPE) for k in lengths], ["x"] * n,
                                      [np.zeros(k, LOGPROB_DTYPE) for k in lengths], [False] * n, 0))
        time.sleep(max(0.0, self.seconds_per_token * sum(len(c) for g in groups for c in g.completion_ids)
                       - (time.perf_counter() - start)))
        self.busy += time.perf_counter() - start
        return (*groups, len(groups))

    def take_busy_seconds(self) -> float:
        busy, self.busy = self.busy, 0.0
        return busy


def measure(workers: RayWorkers, problems: list[Problem], steps: int) -> dict:
    rows = []
    for _ in range(steps + 1):  # the first is a warm-up
        ray.get(workers.rollouts.call("take_busy_seconds"))
        wall, cpu = time.perf_counter(), time.process_time()
        workers.wait(workers.generate(problems))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        busy = sum(ray.get(workers.rollouts.call("take_busy_seconds")))
        rows.append({"step_s": wall, "utilisation": busy / (len(workers.rollouts) * wall), "driver": cpu / wall})
    return {key: statistics.median(r[key] for r in rows[1:]) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--seconds-per-token", type=float, default=1.6e-5)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    nodes = -(-args.workers // 8)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(nodes):
        cluster.add_node(num_cpus=8)
    ray.init(address=cluster.address, namespace="rollout-queue")
    problems = [Problem(i, f"{i} + 1", str(i + 1)) for i in range(args.prompts)]
    share = -(-args.prompts // args.workers)
    policies = {f"one call per worker ({share} prompts each, round-robin)": share, "work queue (chunk_prompts auto)": 0}
    results = {}
    try:
        for label, chunk in policies.items():
            cfg = load_config("configs/r1_zero.yaml", [
                f"rollout.num_workers={args.workers}", f"rollout.group_size={args.group_size}",
                f"rollout.chunk_prompts={chunk}", "rollout.num_threads=1", "reward.num_cpus=0.5",
                f"prompts_per_step={args.prompts}", "learner.micro_batch_size=1", f"buffer_capacity={args.prompts}"])
            workers = RayWorkers(cfg, with_learner=False, rollout_cls=SimulatedRolloutWorker,
                                 rollout_args=(args.seconds_per_token,))
            try:
                results[label] = measure(workers, problems, args.steps)
            finally:
                workers.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"\n{args.prompts} prompts x {args.group_size} samples a step, {args.workers} simulated rollout workers "
          f"on {nodes} fake nodes, lognormal lengths (median 300, cap 8192), {args.seconds_per_token * 1e6:.0f} us a token; "
          f"median of {args.steps} steps")
    print("| dispatch | step (s) | rollout utilisation | driver CPU / step |\n|---|---:|---:|---:|")
    for label, r in results.items():
        print(f"| {label} | {r['step_s']:.2f} | {r['utilisation']:.0%} | {r['driver']:.1%} |")
    queue = results["work queue (chunk_prompts auto)"]
    print(f"work queue: utilisation {queue['utilisation']:.0%} (target >= 90%), driver {queue['driver']:.1%} of the step "
          f"(target <= 5%)")


if __name__ == "__main__":
    main()
