from __future__ import annotations

import dataclasses
import os
import time

import ray
import torch

from actors.group import ActorGroup
from rl_system.config import RewardModelConfig, TrainConfig
from rl_system.data.general import prompt_kind
from rl_system.models import pick_device
from rl_system.rewards.learned import LearnedReward
from rl_system.rewards.runner import RewardRunner, weighted_total
from rl_system.types import PromptGroup, group_summary


def _reward_inputs(group: PromptGroup) -> tuple[list[str], list[str], dict[str, list]]:
    n = len(group.completions)
    columns = {"answer": [group.problem.answer] * n}
    columns.update({k: [v] * n for k, v in group.problem.columns.items()})
    return [group.problem.question] * n, group.completions, columns


@ray.remote
class RuleRewardWorker:
    """Scores a group with the weighted rule rewards, merges the learned rewards computed at the
    same time on ModelRewardWorkers, and returns the scored group plus a small summary.
    A failure or a timeout of any part costs a counted `reward.failure_score`, never the run."""

    def __init__(self, cfg: TrainConfig, worker_index: int):
        rc = cfg.reward
        self.cfg = cfg
        self.runner = RewardRunner([(f.name, f.weight) for f in rc.functions], rc.timeout_s, rc.failure_score,
                                   {f.name: f.kwargs for f in rc.functions})
        self.weights = {f.name: f.weight for f in rc.functions} | {m.name: m.weight for m in rc.models}
        self.applies_to = {r.name: r.applies_to for r in (*rc.functions, *rc.models)}

    def score(self, group: PromptGroup, learned_refs: list | None = None) -> tuple[PromptGroup, dict]:
        start = time.perf_counter()
        kind = prompt_kind(group.problem)
        not_here = {name for name, where in self.applies_to.items() if where not in ("all", kind)}
        result = self.runner.score(*_reward_inputs(group), skip=not_here)
        scores, failures = result.scores, dict(result.failures)
        n = len(group.completions)
        for model_cfg, ref in zip(self.cfg.reward.models, learned_refs or []):
            if model_cfg.name in not_here:
                continue
            remaining = max(0.0, model_cfg.timeout_s - (time.perf_counter() - start))
            try:
                scores[model_cfg.name] = ray.get(ref, timeout=remaining)
            except Exception:  # late, crashed or dead replica: counted, scored, the run goes on
                scores[model_cfg.name] = [self.cfg.reward.failure_score] * n
                failures[model_cfg.name] = failures.get(model_cfg.name, 0) + 1
        scores.update({name: [0.0] * n for name in not_here})  # learned rewards that do not apply here
        scored = dataclasses.replace(group, rewards=scores, total_rewards=weighted_total(scores, self.weights),
                                     reward_failures=failures, score_s=time.perf_counter() - start)
        return scored, group_summary(scored)

    def close(self) -> None:
        self.runner.close()  # end the grader process cleanly before the actor is killed


@ray.remote
class ModelRewardWorker:
    """Serves one learned reward (ORM or PRM) from a local HF directory, batched."""

    def __init__(self, cfg: RewardModelConfig, replicas: int, replica: int):
        torch.set_num_threads(max(1, int(cfg.num_cpus)) if cfg.num_gpus == 0 else 1)
        self.cfg, self.replica = cfg, replica
        self.reward = LearnedReward(cfg.path, cfg.kind, cfg.aggregate, cfg.batch_size, cfg.dtype,
                                    pick_device(cfg.num_gpus))
        self.calls, self.completions, self.busy_s = 0, 0, 0.0

    def score(self, *groups: PromptGroup):
        """Per group, its completions' scores; the completions of all groups share the batches."""
        start = time.perf_counter()
        prompts = [g.problem.question for g in groups for _ in g.completions]
        completions = [c for g in groups for c in g.completions]
        flat = self.reward(prompts, completions)
        out, i = [], 0
        for g in groups:
            out.append(flat[i:i + len(g.completions)])
            i += len(g.completions)
        self.calls, self.completions = self.calls + 1, self.completions + len(completions)
        self.busy_s += time.perf_counter() - start
        return out[0] if len(out) == 1 else tuple(out)

    def health(self) -> dict:
        return {"name": self.cfg.name, "kind": self.cfg.kind, "path": self.cfg.path, "replica": self.replica,
                "version": self.reward.meta.get("version", "unknown"), "pid": os.getpid(), "calls": self.calls,
                "completions": self.completions, "mean_call_s": self.busy_s / max(1, self.calls)}


class ModelRewardPool:
    """Replicas of one learned reward behind one handle: a batch of groups is cut into one chunk
    per replica, and each chunk goes to the replica with the fewest calls still in flight."""

    def __init__(self, cfg: RewardModelConfig):
        self.cfg = cfg
        self.replicas = ActorGroup(ModelRewardWorker, f"reward-model-{cfg.name}", cfg.replicas, cfg, cfg.replicas,
                                   num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, strategy="SPREAD")
        self.in_flight: list[list] = [[] for _ in range(cfg.replicas)]

    def _least_loaded(self) -> int:
        for calls in self.in_flight:
            if calls:
                done, _ = ray.wait(calls, num_returns=len(calls), timeout=0, fetch_local=False)
                calls[:] = [c for c in calls if c not in done]
        return min(range(len(self.in_flight)), key=lambda i: len(self.in_flight[i]))

    def score(self, group_refs: list) -> list:
        """One ref per group, each resolving to that group's list of scores."""
        size = -(-len(group_refs) // len(self.in_flight))
        refs = []
        for start in range(0, len(group_refs), size):
            chunk = group_refs[start:start + size]
            i = self._least_loaded()
            out = self.replicas.actors[i].score.options(num_returns=len(chunk)).remote(*chunk)
            out = [out] if len(chunk) == 1 else list(out)
            self.in_flight[i].extend(out)
            refs.extend(out)
        return refs

    def health(self) -> list[dict]:
        return ray.get(self.replicas.call("health"))

    def kill(self) -> None:
        self.replicas.kill()
