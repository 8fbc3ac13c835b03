from __future__ import annotations

import os

import ray
import torch

from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.models import load_model, load_tokenizer, pick_device
from rl_system.rollout import SamplingParams, generate_groups
from rl_system.weights import load_packed_weights


@ray.remote
class RolloutWorker:
    """Holds a generation copy of the policy, samples groups, and loads each published version."""

    def __init__(self, cfg: TrainConfig, worker_index: int):
        rc = cfg.rollout
        torch.set_num_threads(rc.num_threads or max(1, (os.cpu_count() or 1) // rc.num_workers))
        torch.manual_seed(cfg.seed * 1000 + worker_index)
        self.cfg, self.worker_index = cfg, worker_index
        self.device = pick_device(rc.num_gpus)
        self.tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
        self.model = load_model(cfg.model.path, rc.dtype, self.device, cfg.model.trust_remote_code).eval()
        self.policy_version = 0

    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None,
                 n: int | None = None, prefills: list[str] | None = None,
                 stop_strings: tuple[str, ...] | None = None):
        """`stop_strings` replaces rollout.stop_strings for this call (test-time search stops at a step)."""
        rc = self.cfg.rollout
        params = SamplingParams(n=1 if greedy else (n or rc.group_size),
                                max_new_tokens=max_new_tokens or rc.max_new_tokens, temperature=rc.temperature,
                                top_p=rc.top_p, greedy=greedy, stop_strings=stop_strings or rc.stop_strings)
        per_call = max(1, rc.max_batch_sequences // params.n)  # bounds the logits kept in memory
        groups = [g for i in range(0, len(problems), per_call) for g in generate_groups(
            self.model, self.tokenizer, problems[i:i + per_call], params, self.policy_version,
            self.cfg.data.system_prompt, self.cfg.data.prefill, prefills[i:i + per_call] if prefills else None)]
        return groups[0] if len(groups) == 1 else tuple(groups)  # one object-store entry per group

    def load_weights(self, version: int, packed_ref: list) -> int:
        self.policy_version = load_packed_weights(self.model, ray.get(packed_ref[0]), expected_version=version)
        return self.policy_version

    def version(self) -> int:
        return self.policy_version
