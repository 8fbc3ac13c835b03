"""Rollout utilisation with the generation work queue against one call per worker (the old
round-robin), on a fake cluster (ray.cluster_utils.Cluster: 8 nodes x 8 logical CPUs on this
machine) with 64 rollout workers that simulate generation: a sleep per generated token (100 us, a
worker generating 10k tokens/s, and 16 us, 62k tokens/s, which makes every fixed cost weigh 6x), with
long-tailed completion lengths (lognormal, median 300 tokens, capped at 8192; the same lengths for
a given problem under both policies). 1024 prompts x 16 samples a step through the controller's
real generate and wait (RayWorkers).

Utilisation = the workers' busy time / (workers x step time). The driver's own time = the driver
process's CPU time in the step (the queue's thread and Ray's threads included) / step time.
Targets: utilisation >= 90% with the queue; driver time <= 5% of the step.

Then streaming scoring: generate and score --score-prompts prompts with the real rule reward
workers (math-verify on answer-shaped completions), scored as each call ends (generate(score=True))
against scored after the whole batch generated; the time from the last group generated to the
last group scored, and the step.

    python benchmarks/rollout_queue.py [--workers 64] [--prompts 1024] [--steps 3] [--score-prompts 256]
        [--seconds-per-token 1e-4 1.6e-5]
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
    """RolloutWorker's generate interface; a call lasts seconds_per_token x the tokens it generates
    (the inverse of one worker's generation throughput)."""

    def __init__(self, cfg, worker_index: int):
        self.cfg, self.seconds_per_token, self.busy = cfg, 0.0, 0.0

    def set_seconds_per_token(self, seconds: float) -> None:
        self.seconds_per_token = seconds

    def generate(self, problems, greedy=False, max_new_tokens=None, n=None, prefills=None, stop_strings=None):
        start = time.perf_counter()
        n = n or self.cfg.rollout.group_size
        groups = []
        for p in problems:
            lengths = [completion_length(p.problem_id, j) for j in range(n)]
            text = f"<think>{p.question}</think><answer>{p.answer}</answer>"
            groups.append(PromptGroup(p, [1] * 32, [np.full(k, 2, TOKEN_DTYPE) for k in lengths], [text] * n,
                                      [np.zeros(k, LOGPROB_DTYPE) for k in lengths], [False] * n, 0))
        time.sleep(max(0.0, self.seconds_per_token * sum(len(c) for g in groups for c in g.completion_ids)
                       - (time.perf_counter() - start)))
        self.busy += time.perf_counter() - start
        return (*groups, len(groups))

    def precision(self) -> dict:  # no model, so no dtype resolved
        return {"role": "rollout", "requested": "auto", "dtype": "none (simulated)", "node_kind": "simulated"}

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


def measure_scoring(workers: RayWorkers, problems: list[Problem], steps: int, streaming: bool) -> dict:
    rows = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        handles = workers.generate(problems, score=streaming)
        workers.wait(handles)
        generated = time.perf_counter()
        workers.score(handles)
        rows.append({"step_s": time.perf_counter() - start, "after_s": time.perf_counter() - generated})
    return {key: statistics.median(r[key] for r in rows[1:]) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--group-size", type=int, default=16)
    # 1e-4: 10k generated tokens/s a worker, about vLLM on one GPU for a 1.5B model in large batches;
    # 1.6e-5 (62k tokens/s) makes the step 6x shorter, so every fixed cost of the driver weighs 6x more.
    parser.add_argument("--seconds-per-token", type=float, nargs="+", default=[1e-4, 1.6e-5])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--score-prompts", type=int, default=256)
    parser.add_argument("--reward-workers", type=int, default=4)
    args = parser.parse_args()
    nodes = -(-args.workers // 8)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    for _ in range(nodes):
        cluster.add_node(num_cpus=8)
    ray.init(address=cluster.address, namespace="rollout-queue")
    problems = [Problem(i, f"{i} + 1", str(i + 1)) for i in range(args.prompts)]
    share = -(-args.prompts // args.workers)
    queue_label = "work queue (guided chunks, rollout.chunk_prompts=0)"
    policies = {f"one call per worker ({share} prompts each, round-robin)": share, queue_label: 0}
    results, scoring = {}, {}
    try:
        for label, chunk in policies.items():
            cfg = load_config("configs/r1_zero.yaml", [
                f"rollout.num_workers={args.workers}", f"rollout.group_size={args.group_size}",
                f"rollout.chunk_prompts={chunk}", "rollout.num_threads=1", "reward.num_cpus=0.5",
                f"reward.num_workers={args.reward_workers}",
                f"prompts_per_step={args.prompts}", "learner.micro_batch_size=1", f"buffer_capacity={args.prompts}"])
            workers = RayWorkers(cfg, with_learner=False, rollout_cls=SimulatedRolloutWorker)
            try:
                for seconds in args.seconds_per_token:
                    ray.get(workers.rollouts.call("set_seconds_per_token", seconds))
                    results[seconds, label] = measure(workers, problems, args.steps)
                if chunk == 0:
                    ray.get(workers.rollouts.call("set_seconds_per_token", args.seconds_per_token[0]))
                    for streaming in (False, True):
                        scoring[streaming] = measure_scoring(workers, problems[:args.score_prompts], args.steps,
                                                             streaming)
            finally:
                workers.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"\n{args.prompts} prompts x {args.group_size} samples a step, {args.workers} simulated rollout workers "
          f"on {nodes} fake nodes, lognormal lengths (median 300, cap 8192); median of {args.steps} steps")
    print("| us a token | dispatch | step (s) | rollout utilisation | driver CPU / step |\n|---:|---|---:|---:|---:|")
    for (seconds, label), r in results.items():
        print(f"| {seconds * 1e6:.0f} | {label} | {r['step_s']:.2f} | {r['utilisation']:.0%} | {r['driver']:.1%} |")
    for seconds in args.seconds_per_token:
        queue = results[seconds, queue_label]
        print(f"work queue at {seconds * 1e6:.0f} us a token: utilisation {queue['utilisation']:.0%} (target >= 90%), "
              f"driver {queue['driver']:.1%} of the step (target <= 5%)")
    print(f"\nGenerate and score {args.score_prompts} prompts x {args.group_size} samples with the work queue at "
          f"{args.seconds_per_token[0] * 1e6:.0f} us a token, {args.reward_workers} rule reward workers; "
          f"median of {args.steps} steps")
    print("| scoring | step (s) | from the last group generated to the last scored (s) |\n|---|---:|---:|")
    for streaming, r in scoring.items():
        label = "as each call ends (generate(score=True))" if streaming else "after the whole batch generated"
        print(f"| {label} | {r['step_s']:.2f} | {r['after_s']:.2f} |")


if __name__ == "__main__":
    main()
