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

from actors.group import ActorGroup, ElasticActorGroup, role_resources, wait_until_gone
from actors.learner import LearnerRank
from actors.metrics import RunMetrics
from actors.replay_buffer import ReplayBuffer
from actors.reward import ModelRewardPool, RuleRewardWorker
from actors.rollout import RolloutWorker
from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.elastic import RolloutScaler
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
    most_rollouts = cfg.rollout.worker_bounds()[1]
    needed = (cfg.learner.num_ranks * cfg.learner.num_cpus + most_rollouts * cfg.rollout.num_cpus
              + cfg.reward.num_workers * cfg.reward.num_cpus + sum(m.replicas * m.num_cpus for m in cfg.reward.models))
    ray.init(num_cpus=cfg.cluster.num_cpus or max(math.ceil(needed), os.cpu_count() or 1),
             include_dashboard=cfg.cluster.include_dashboard, dashboard_host=cfg.cluster.dashboard_host,
             namespace=cfg.cluster.namespace, runtime_env=env,
             _metrics_export_port=cfg.cluster.metrics_export_port or None)


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute paths, since actors do not share the driver's working directory."""
    def absolute(path: str) -> str:
        return str(Path(path).resolve()) if Path(path).exists() else path

    models = tuple(dataclasses.replace(m, path=absolute(m.path)) for m in cfg.reward.models)
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, path=absolute(cfg.model.path)),
        reward=dataclasses.replace(cfg.reward, models=models),
        collect=dataclasses.replace(cfg.collect, output_dir=str(Path(cfg.collect.output_dir).resolve())),
        output_dir=str(Path(cfg.output_dir).resolve()))


class RayWorkers:
    """Every worker group of a run. `with_learner=False` starts only rollout and reward workers
    (sample collection, evaluation)."""

    def __init__(self, cfg: TrainConfig, with_learner: bool = True):
        self.cfg = cfg
        rc, lc, wc = cfg.rollout, cfg.learner, cfg.reward
        self.learners = None
        if with_learner:
            self.learners = ActorGroup(LearnerRank, "learner", lc.num_ranks, cfg, lc.num_ranks,
                                       **role_resources(lc), strategy=lc.placement_strategy)
        self.metrics = RunMetrics()
        self.scaler = RolloutScaler.from_config(rc)
        self.rollouts = ElasticActorGroup(RolloutWorker, "rollout", rc.num_workers, cfg, **role_resources(rc),
                                          request_nodes=self.scaler.elastic)
        self.rewards = ActorGroup(RuleRewardWorker, "reward", wc.num_workers, cfg, **role_resources(wc),
                                  strategy="SPREAD")
        self.reward_models = [ModelRewardPool(m) for m in wc.models]
        self.buffer = ReplayBuffer.options(name="replay-buffer").remote(cfg.buffer_capacity, cfg.max_staleness)
        if self.learners:
            addr, port = ray.get(self.learners.actors[0].master_address.remote())
            ray.get(self.learners.call("setup", addr, port))  # collective: all ranks join together
        for pool in self.reward_models:
            pool.health()  # every replica loaded its model
        self._next_reward = 0
        self._weights: tuple[int, list] | None = None  # the last published (version, [ref]), for late joiners
        self._generate_calls: list[tuple[str, float, list]] = []

    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None,
                 n: int | None = None, prefills: list[str] | None = None,
                 stop_strings: tuple[str, ...] | None = None) -> list:
        """One ref per problem, in the order given; `stop_strings` overrides rollout.stop_strings."""
        size = len(self.rollouts)
        refs: list = [None] * len(problems)
        self._generate_calls = []
        for w, (name, worker) in enumerate(zip(self.rollouts.names, self.rollouts.actors)):
            index = list(range(w, len(problems), size))
            if not index:
                continue
            out = worker.generate.options(num_returns=len(index)).remote(
                [problems[i] for i in index], greedy, max_new_tokens, n,
                [prefills[i] for i in index] if prefills else None, stop_strings)
            out = [out] if len(index) == 1 else list(out)
            self._generate_calls.append((name, time.monotonic(), out))
            for i, ref in zip(index, out):
                refs[i] = ref
        return refs

    def wait(self, handles: list) -> None:
        """Waits for generation, timing each rollout worker's call of the last `generate`."""
        self._wait_timed(self._generate_calls, "generate")
        self._generate_calls = []
        ray.wait(handles, num_returns=len(handles), fetch_local=False)

    def _wait_timed(self, calls: list[tuple[str, float, list]], method: str) -> None:
        """Waits for every (actor name, submitted at, refs) call and records each actor's latency,
        from submission to its last result, in the `rl_actor_call_seconds` histogram."""
        owner = {ref: name for name, _, refs in calls for ref in refs}
        left = {name: len(refs) for name, _, refs in calls}
        submitted = {name: start for name, start, _ in calls}
        pending = list(owner)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, fetch_local=False)
            for ref in done:
                left[owner[ref]] -= 1
                if left[owner[ref]] == 0:
                    self.metrics.actor_call(owner[ref], method, time.monotonic() - submitted[owner[ref]])

    def score(self, rollouts: list) -> tuple[list, list[dict]]:
        """Rule and learned rewards run at the same time; each group travels rollout worker ->
        object store -> reward workers, and the rule worker merges the learned scores."""
        learned = [pool.score(rollouts) for pool in self.reward_models]
        scored, summary_refs = [], []
        start, by_actor = time.monotonic(), {}
        for i, ref in enumerate(rollouts):
            k = self._next_reward % len(self.rewards)
            self._next_reward += 1
            group_ref, summary_ref = self.rewards.actors[k].score.options(num_returns=2).remote(
                ref, [refs[i] for refs in learned])
            scored.append(group_ref)
            summary_refs.append(summary_ref)
            by_actor.setdefault(self.rewards.names[k], []).append(summary_ref)
        self._wait_timed([(name, start, refs) for name, refs in by_actor.items()], "score")
        return scored, ray.get(summary_refs)

    def buffer_add(self, scored: list, summaries: list[dict]) -> None:
        ray.get([self.buffer.add.remote(s["key"], s["key"][1], [ref]) for ref, s in zip(scored, summaries)])

    def buffer_sample(self, n: int, learner_version: int) -> tuple[list, list[int]]:
        return ray.get(self.buffer.sample.remote(n, learner_version))

    def train(self, batch: list) -> dict:
        start, refs = time.monotonic(), self.learners.call("train", batch)
        self._wait_timed([(name, start, [ref]) for name, ref in zip(self.learners.names, refs)], "train")
        per_rank = ray.get(refs)
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
        if self.scaler.elastic:
            self._weights = (version, packed)

    def step_done(self, step: int, metrics: dict) -> dict:
        """After each training step: rollout workers started earlier that are now up load the current
        weights and join; the pool is resized for the step's share of generation; the step's metrics
        go to Prometheus. Returns the pool size for metrics.jsonl."""
        self.rollouts.admit_ready(self._load_current_weights)
        target = self.scaler.decide(step, metrics, pending=len(self.rollouts.pending))
        if target != self.rollouts.size:
            self.rollouts.resize(target)
        self.metrics.record(step, metrics)
        self.metrics.rollout_pool(len(self.rollouts), target)
        return {"rollout/workers": len(self.rollouts), "rollout/target_workers": target}

    def _load_current_weights(self, worker) -> ray.ObjectRef:
        if self._weights is None:  # nothing published yet: the worker holds the initial model
            return worker.version.remote()
        return worker.load_weights.remote(*self._weights)

    def evaluate(self, problems: list[Problem], max_new_tokens: int) -> list[dict]:
        rollouts = self.generate(problems, greedy=True, max_new_tokens=max_new_tokens)
        return self.score(rollouts)[1]

    def fetch(self, handles: list) -> list:
        return ray.get(handles)

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
        for group in [self.learners, self.rollouts, self.rewards, *self.reward_models]:
            if group is not None:
                group.kill()
        ray.kill(self.buffer)
        wait_until_gone(["replay-buffer"])
