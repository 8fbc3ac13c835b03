"""Test-time search on the cluster: the Policy samples on the rollout workers, learned verifiers
score on ModelRewardPools, the rule grader on the rule reward workers. Thin adapters over
RayWorkers; the search methods themselves live in rl_system/search."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from actors.controller import RayWorkers, connect
from actors.reward import ModelRewardPool
from actors.scheduling import wait_until_schedulable
from rl_system.config import RewardModelConfig, TrainConfig, sampling_for
from rl_system.data import Problem
from rl_system.resources import command_stages
from rl_system.search.base import Continuation, Request
from rl_system.search.evaluate import run_evaluation
from rl_system.types import PromptGroup, logprob_array, token_array


class RayPolicy:
    """Continuations from the rollout workers; one `sample` is one batched generate across them."""

    def __init__(self, workers: RayWorkers, prefill: str, answer_stops: tuple[str, ...]):
        self.workers, self.prefill, self.answer_stops = workers, prefill, answer_stops

    def sample(self, requests: list[Request], n: int, max_new_tokens: int, step_delimiter: str | None = None,
               greedy: bool = False) -> list[list[Continuation]]:
        refs = self.workers.generate([r.problem for r in requests], greedy=greedy, max_new_tokens=max_new_tokens, n=n,
                                     prefills=[r.prefix for r in requests],
                                     stop_strings=(step_delimiter, *self.answer_stops) if step_delimiter else None)
        return [[Continuation(text, len(ids), not truncated)
                 for text, ids, truncated in zip(g.completions, g.completion_ids, g.truncated)]
                for g in self.workers.fetch(refs)]


def as_groups(problems: list[Problem], completions: list[str]) -> list[PromptGroup]:
    """Consecutive completions of one problem travel to a reward worker as one group."""
    texts: list[tuple[Problem, list[str]]] = []
    for problem, completion in zip(problems, completions):
        if texts and texts[-1][0] == problem:
            texts[-1][1].append(completion)
        else:
            texts.append((problem, [completion]))
    return [PromptGroup(problem, [], [token_array([])] * len(group), group, [logprob_array([])] * len(group),
                        [False] * len(group), 0)
            for problem, group in texts]


class PoolVerifier:
    """A learned ORM / PRM served by a ModelRewardPool (PRM step scores aggregated by the pool's config)."""

    def __init__(self, name: str, pool: ModelRewardPool, workers: RayWorkers):
        self.name, self.pool, self.workers = name, pool, workers

    def score(self, problems: list[Problem], completions: list[str]) -> list[float]:
        return [s for group in self.workers.fetch(self.pool.score(as_groups(problems, completions))) for s in group]


class RuleGrader:
    """The rule `accuracy` reward on the rule reward workers: 1.0 for a right answer. It reads the
    reference answer, so as a search verifier it is an oracle."""
    name = "rule"

    def __init__(self, workers: RayWorkers):
        self.workers = workers

    def score(self, problems: list[Problem], completions: list[str]) -> list[float]:
        _, summaries = self.workers.score(as_groups(problems, completions))
        return [s for summary in summaries for s in summary["scores"]["accuracy"]]


def sized_for_search(cfg: TrainConfig) -> TrainConfig:
    """Absolute reward-model paths for the actors, rollout workers that sample with search.temperature
    / top_p / top_k, and a local Ray with CPUs for what evaluate starts: rollout and reward workers
    plus the search's reward-model pools, no learners."""
    search = dataclasses.replace(cfg.search, orm_path=str(Path(cfg.search.orm_path).resolve()),
                                 prm_path=str(Path(cfg.search.prm_path).resolve()))
    cluster = cfg.cluster
    if not cluster.address and not cluster.num_cpus:
        needed = (cfg.rollout.num_workers * cfg.rollout.num_cpus + cfg.reward.num_workers * cfg.reward.num_cpus
                  + sum(m.replicas * m.num_cpus for m in cfg.reward.models)
                  + len(search.reward_models()) * search.reward_model_replicas * search.reward_model_num_cpus)
        cluster = dataclasses.replace(cluster, num_cpus=max(math.ceil(needed), os.cpu_count() or 1))
    return dataclasses.replace(sampling_for(cfg, cfg.search), search=search, cluster=cluster)


def evaluate_on_ray(cfg: TrainConfig, log=print, before_start=lambda: None) -> list[dict]:
    """`before_start` runs once the cluster is known to fit the search (the CLI clears an
    --overwrite'd output directory there)."""
    cfg = sized_for_search(cfg)
    connect(cfg)
    wait_until_schedulable(command_stages("evaluate", cfg), cfg.cluster.schedule_timeout_s, log)
    before_start()
    workers = RayWorkers(cfg, with_learner=False)
    pools: dict[str, ModelRewardPool] = {}
    try:
        for kind in cfg.search.reward_models():
            pools[kind] = ModelRewardPool(RewardModelConfig(
                name=f"search-{kind}", path=getattr(cfg.search, f"{kind}_path"), kind=kind,
                aggregate=cfg.search.prm_aggregate, replicas=cfg.search.reward_model_replicas,
                num_cpus=cfg.search.reward_model_num_cpus, dtype=cfg.search.reward_model_dtype),
                "search.reward_model_dtype", max_restarts=cfg.cluster.max_restarts)
            pools[kind].health()  # loaded before the clock of the first method starts
        grader = RuleGrader(workers)
        verifiers = {"rule": grader, **{kind: PoolVerifier(kind, pool, workers) for kind, pool in pools.items()}}
        policy = RayPolicy(workers, cfg.data.prefill, cfg.rollout.stop_strings)
        return run_evaluation(cfg, policy, verifiers, grader, log)
    finally:
        for pool in pools.values():
            pool.kill()
        workers.shutdown()
