"""The Ray side of the driver: starts (or joins) Ray, creates every worker group, and implements
the Workers protocol of rl_system/pipeline with ObjectRefs as the handles."""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

import ray

from actors.group import ActorGroup
from actors.learner import LearnerRank
from actors.replay_buffer import ReplayBuffer
from actors.reward import RuleRewardWorker
from actors.rollout import RolloutWorker
from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.weights import WeightSyncError


def connect(cfg: TrainConfig) -> None:
    """A fresh local Ray (dashboard on 127.0.0.1) or an existing cluster (`cluster.address=auto`, or
    the cluster a `ray job submit` runs us on)."""
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))}}
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS", "")  # `ray job submit` sets RAY_ADDRESS
    if address:
        ray.init(address=address, namespace=cfg.cluster.namespace)  # the job's runtime env applies
        return
    needed = (cfg.learner.num_ranks * cfg.learner.num_cpus + cfg.rollout.num_workers * cfg.rollout.num_cpus
              + cfg.reward.num_workers * cfg.reward.num_cpus)
    ray.init(num_cpus=cfg.cluster.num_cpus or max(math.ceil(needed), os.cpu_count() or 1),
             include_dashboard=cfg.cluster.include_dashboard, dashboard_host=cfg.cluster.dashboard_host,
             namespace=cfg.cluster.namespace, runtime_env=env)


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute paths, since actors do not share the driver's working directory."""
    model = Path(cfg.model.path)
    if model.exists():
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=str(model.resolve())))
    return dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir).resolve()))


class RayWorkers:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        rc, lc, wc = cfg.rollout, cfg.learner, cfg.reward
        self.learners = ActorGroup(LearnerRank, "learner", lc.num_ranks, cfg, lc.num_ranks,
                                   num_cpus=lc.num_cpus, num_gpus=lc.num_gpus, strategy=lc.placement_strategy)
        self.rollouts = ActorGroup(RolloutWorker, "rollout", rc.num_workers, cfg,
                                   num_cpus=rc.num_cpus, num_gpus=rc.num_gpus, strategy="SPREAD")
        self.rewards = ActorGroup(RuleRewardWorker, "reward", wc.num_workers, cfg,
                                  num_cpus=wc.num_cpus, strategy="SPREAD")
        self.buffer = ReplayBuffer.options(name="replay-buffer").remote(cfg.buffer_capacity, cfg.max_staleness)
        addr, port = ray.get(self.learners.actors[0].master_address.remote())
        ray.get(self.learners.call("setup", addr, port))  # collective: all ranks join together
        ray.get(self.rollouts.call("version"))
        self._next_reward = 0

    def _round_robin(self, problems: list, size: int) -> list[list]:
        return [problems[i::size] for i in range(size) if problems[i::size]]

    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None) -> list:
        refs = []
        for worker, chunk in zip(self.rollouts.actors, self._round_robin(problems, len(self.rollouts))):
            out = worker.generate.options(num_returns=len(chunk)).remote(chunk, greedy, max_new_tokens)
            refs.extend([out] if len(chunk) == 1 else out)
        return refs

    def wait(self, handles: list) -> None:
        ray.wait(handles, num_returns=len(handles), fetch_local=False)

    def score(self, rollouts: list) -> tuple[list, list[dict]]:
        scored, summary_refs = [], []
        for ref in rollouts:  # each group goes from the rollout worker to a reward worker via the store
            actor = self.rewards.actors[self._next_reward % len(self.rewards)]
            self._next_reward += 1
            group_ref, summary_ref = actor.score.options(num_returns=2).remote(ref)
            scored.append(group_ref)
            summary_refs.append(summary_ref)
        return scored, ray.get(summary_refs)

    def buffer_add(self, scored: list, summaries: list[dict]) -> None:
        ray.get([self.buffer.add.remote(s["key"], s["key"][1], [ref]) for ref, s in zip(scored, summaries)])

    def buffer_sample(self, n: int, learner_version: int) -> tuple[list, list[int]]:
        return ray.get(self.buffer.sample.remote(n, learner_version))

    def train(self, batch: list) -> dict:
        per_rank = ray.get(self.learners.call("train", batch))
        ray.get(self.buffer.acknowledge.remote(len(batch)))
        stats = {k: sum(r.get(k, 0.0) for r in per_rank) for k in per_rank[0]}
        stats["grad_norm"] = per_rank[0]["grad_norm"]  # a global quantity, the same on every rank
        return stats

    def sync_weights(self, version: int) -> None:
        """One publish into the object store, every rollout worker loads it; one deadline for all."""
        deadline = self.cfg.sync_timeout_s
        start = time.monotonic()
        try:
            packed = next(r for r in ray.get(self.learners.call("publish"), timeout=deadline) if r)
            remaining = max(0.0, deadline - (time.monotonic() - start))
            loaded = ray.get(self.rollouts.call("load_weights", version, packed), timeout=remaining)
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncError(f"weight sync to version {version} exceeded sync_timeout_s={deadline}") from None
        if loaded != [version] * len(self.rollouts):
            raise WeightSyncError(f"rollout workers hold versions {loaded}, expected {version}")

    def evaluate(self, problems: list[Problem], max_new_tokens: int) -> list[dict]:
        rollouts = self.generate(problems, greedy=True, max_new_tokens=max_new_tokens)
        return self.score(rollouts)[1]

    def buffer_stats(self) -> dict:
        return ray.get(self.buffer.stats.remote())

    def save(self, path: str) -> None:
        ray.get(self.learners.call("save", path))

    def rollout_versions(self) -> list[int]:
        return ray.get(self.rollouts.call("version"))

    def learner_checksum(self) -> float:
        return ray.get(self.learners.call("parameter_checksum"))[0]  # collective under ZeRO-3

    def shutdown(self) -> None:
        ray.get(self.rewards.call("close"))
        for group in (self.learners, self.rollouts, self.rewards):
            group.kill()
        ray.kill(self.buffer)
