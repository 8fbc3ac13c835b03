"""The Workers protocol in one process, without Ray: the same generate, score, buffer, train and
weight-sync work as RayWorkers with one worker per role (one policy copy for sampling, the rule
rewards in their child process, the ledger, one DeepSpeed rank). The baseline of
benchmarks/overhead.py, and a way to step through the driver loop in a debugger."""
from __future__ import annotations

from pathlib import Path

import torch

from rl_system.buffer import GroupLedger
from rl_system.checkpoints import TRAINING_STATE_DIR, load_rollout_rng, save_rollout_rng
from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.envs.runner import LocalEnvs
from rl_system.learner import Learner
from rl_system.models import announce, detect, load_policy, load_tokenizer, pick_device, resolve
from rl_system.rewards.scoring import GroupScorer
from rl_system.rollout import HFSampler
from rl_system.weights import load_packed_weights


class LocalWorkers:
    def __init__(self, cfg: TrainConfig):
        if cfg.learner.num_ranks != 1:
            raise ValueError(f"LocalWorkers runs one learner rank, not learner.num_ranks={cfg.learner.num_ranks}")
        self.cfg = cfg
        self.learner = Learner(cfg, world_size=1, rank=0)
        self.device = pick_device(cfg.rollout.num_gpus)
        rollout = resolve(cfg.rollout.dtype, "rollout.dtype", detect(self.device))
        self.reports = [self.learner.precision(), rollout.as_dict()]
        announce(self.reports)
        self.learner.setup_alone(rollout.dtype)
        self.sampler = HFSampler(cfg, load_tokenizer(cfg.model.path, cfg.model.trust_remote_code),
                                 load_policy(cfg.model, rollout.dtype, self.device).eval())
        torch.manual_seed(cfg.seed * 1000)  # as rollout worker 0 seeds itself
        self.policy_version = 0
        self.envs = LocalEnvs(cfg.env) if cfg.env.name else None  # multi-turn: one runner, not one per call
        self.scorer = GroupScorer(cfg.reward, cfg.rollout.max_new_tokens)
        self.ledger = GroupLedger(cfg.buffer_capacity, cfg.max_staleness)
        self.phase_memory: dict[str, float] = {}

    def precision(self) -> list[dict]:
        return self.reports

    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None,
                 n: int | None = None, prefills: list[str] | None = None,
                 stop_strings: tuple[str, ...] | None = None, score: bool = False) -> list:
        return self.sampler.sample(problems, self.policy_version, greedy, max_new_tokens, n, prefills, stop_strings,
                                   self.envs)

    def wait(self, handles: list) -> list:
        return handles

    def score(self, rollouts: list) -> tuple[list, list[dict]]:
        results = [self.scorer.score(group) for group in rollouts]
        return [scored for scored, _ in results], [summary for _, summary in results]

    def buffer_add(self, keys: list[int], scored: list, summaries: list[dict]) -> None:
        for key, group, summary in zip(keys, scored, summaries):
            self.ledger.add(key, summary["policy_version"], group)

    def buffer_sample(self, n: int, learner_version: int) -> tuple[list, list[int]]:
        return self.ledger.sample(n, learner_version), self.ledger.last_sample_lags

    def train(self, batch: list) -> dict:
        if self.cfg.cluster.colocate:  # as RayWorkers: generation is done, its memory goes to the learner
            self.phase_memory["memory/rollout_generate_gib"] = self.sampler.memory_bytes() / 2**30
            self.sampler.release()
            self.phase_memory["memory/rollout_released_gib"] = self.sampler.memory_bytes() / 2**30
        stats = self.learner.train([group for _, group in batch])
        self.ledger.acknowledge([key for key, _ in batch])
        return stats

    def sync_weights(self, version: int, wait: bool = True) -> None:
        if self.cfg.cluster.colocate:  # the learner is done: the sampler's memory back, for the load below
            self.sampler.restore()
            self.phase_memory["memory/rollout_restored_gib"] = self.sampler.memory_bytes() / 2**30
        self.policy_version = load_packed_weights(self.sampler.model, self.learner.packed_weights(),
                                                  expected_version=version)

    def evaluate(self, problems: list[Problem], max_new_tokens: int) -> list[dict]:
        return self.score(self.generate(problems, greedy=True, max_new_tokens=max_new_tokens))[1]

    def buffer_stats(self) -> dict:
        return self.ledger.stats()

    def step_done(self, step: int, metrics: dict) -> dict:
        return dict(self.phase_memory)

    def save(self, path: str) -> None:
        self.learner.save(path)
        self.learner.save_training_state(str(Path(path) / TRAINING_STATE_DIR))
        save_rollout_rng(path, {"rollout-0": {"cpu": torch.get_rng_state()}})

    def restore(self, path: str, version: int) -> None:
        self.learner.load_training_state(str(Path(path) / TRAINING_STATE_DIR))
        self.sync_weights(version)
        torch.set_rng_state(load_rollout_rng(path)["rollout-0"]["cpu"])

    def shutdown(self) -> None:
        self.scorer.close()
