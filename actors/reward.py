from __future__ import annotations

import os
import time

import ray
import torch

from actors.group import ActorGroup, assigned_gpu_index
from rl_system.config import RewardModelConfig, TrainConfig
from rl_system.models import pick_device
from rl_system.rewards.learned import LearnedReward
from rl_system.rewards.scoring import GroupScorer
from rl_system.types import PromptGroup


@ray.remote
class RuleRewardWorker:
    """Scores groups with the weighted rule rewards, merges the learned rewards computed at the
    same time on ModelRewardWorkers, and returns the scored groups plus a small summary of each.
    A failure or a timeout of any part costs a counted `reward.failure_score`, never the run."""

    def __init__(self, cfg: TrainConfig, worker_index: int):
        self.models = cfg.reward.models
        self.scorer = GroupScorer(cfg.reward, cfg.rollout.max_new_tokens)

    def score(self, learned_refs: list[list], *groups: PromptGroup) -> tuple:
        """Scores several groups in one call: (*scored groups, [their summaries]). `learned_refs[i]`
        holds group i's learned-reward refs, one per reward model."""
        scored = [self._score_group(group, refs) for group, refs in zip(groups, learned_refs)]
        return (*[group for group, _ in scored], [summary for _, summary in scored])

    def _score_group(self, group: PromptGroup, learned_refs: list) -> tuple[PromptGroup, dict]:
        def learned(start: float, not_here: set) -> dict:
            scores = {}
            for model_cfg, ref in zip(self.models, learned_refs):
                if model_cfg.name not in not_here:
                    remaining = max(0.0, model_cfg.timeout_s - (time.perf_counter() - start))
                    try:
                        scores[model_cfg.name] = ray.get(ref, timeout=remaining)
                    except Exception:  # late, crashed or dead replica
                        scores[model_cfg.name] = None
            return scores

        return self.scorer.score(group, learned)

    def close(self) -> None:
        self.scorer.close()  # end the grader process cleanly before the actor is killed


@ray.remote
class ModelRewardWorker:
    """Serves one learned reward (ORM or PRM) from a local HF directory, batched."""

    def __init__(self, cfg: RewardModelConfig, replicas: int, dtype_key: str, replica: int):
        torch.set_num_threads(max(1, int(cfg.num_cpus)) if cfg.num_gpus == 0 else 1)
        self.cfg, self.replica = cfg, replica
        self.reward = LearnedReward(cfg.path, cfg.kind, cfg.aggregate, cfg.batch_size, cfg.dtype,
                                    pick_device(cfg.num_gpus, assigned_gpu_index()), dtype_key=dtype_key,
                                    role=f"reward_model:{cfg.name}")
        self.calls, self.completions, self.busy_s = 0, 0, 0.0

    def score(self, *groups: PromptGroup):
        """Per group, its completions' scores; the completions of all groups share the batches."""
        start = time.perf_counter()
        prompts = [g.problem.prompt for g in groups for _ in g.completions]
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

    def precision(self) -> dict:
        return self.reward.precision.as_dict()


class ModelRewardPool:
    """Replicas of one learned reward behind one handle: a batch of groups is cut into one chunk
    per replica, and each chunk goes to the live replica with the fewest calls still in flight.

    A replica whose process dies is restarted by Ray (up to `max_restarts` times) and the calls it
    had run again there (the scores are a pure function of the groups); calls wait for the restart
    rather than fail, and new chunks go to the other replicas meanwhile, which hold fewer calls. A
    replica dead for good (restarts spent) gets no chunks once one of its calls has failed."""

    def __init__(self, cfg: RewardModelConfig, dtype_key: str, max_restarts: int = 0):
        """`dtype_key`: the config key of cfg.dtype, for what its replicas say about their precision."""
        self.cfg = cfg
        self.replicas = ActorGroup(ModelRewardWorker, f"reward-model-{cfg.name}", cfg.replicas, cfg, cfg.replicas,
                                   dtype_key,
                                   num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, strategy="SPREAD",
                                   max_restarts=max_restarts, max_task_retries=-1 if max_restarts else 0)
        self.in_flight: list[list] = [[] for _ in range(cfg.replicas)]
        self.dead: set[int] = set()  # replicas whose calls fail: dead for good
        self._next = 0  # the replica first in line among the least loaded

    def _least_loaded(self) -> int:
        for i, calls in enumerate(self.in_flight):
            if calls:
                done, pending = ray.wait(calls, num_returns=len(calls), timeout=0, fetch_local=False)
                calls[:] = pending
                if done and i not in self.dead and _actor_died(done[-1]):
                    self.dead.add(i)
        n = len(self.in_flight)
        live = [i for i in range(n) if i not in self.dead] or range(n)
        # Ties go round-robin: chunks that arrive one at a time (streaming scoring) find every replica
        # idle, and would otherwise all go to the first.
        chosen = min(live, key=lambda i: (len(self.in_flight[i]), (i - self._next) % n))
        self._next = chosen + 1
        return chosen

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


def _actor_died(ref: ray.ObjectRef) -> bool:
    """Whether a finished call failed because its actor is dead for good (a small result: scores)."""
    try:
        ray.get(ref)
        return False
    except ray.exceptions.ActorDiedError:
        return True
    except ray.exceptions.RayError:  # the call itself failed (e.g. the model raised): the replica lives
        return False
