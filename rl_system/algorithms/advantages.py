"""Advantage estimators by name (`learner.advantage`): each maps the batch's rewards and group ids
to one advantage per completion. GRPO's is algorithms/grpo.group_advantages; the others here."""
from __future__ import annotations

import torch

from rl_system.algorithms.grpo import group_advantages
from rl_system.config import ADVANTAGE_ESTIMATORS


def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO: each reward minus the mean of the OTHER completions of its prompt, r_i - mean_{j != i} r_j
    = G / (G - 1) * (r_i - mean); a group of one sample gets 0."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups).index_add_(0, inverse, torch.ones_like(rewards, dtype=torch.float))[inverse]
    centred = group_advantages(rewards, group_ids, std_norm=False)
    return torch.where(count > 1, centred * count / (count - 1).clamp(min=1), torch.zeros_like(centred))


def reinforce_pp_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++ with a group baseline: the reward minus its prompt's mean, then normalised by the
    mean and std of the whole batch (not of each group), so groups of different spread keep their
    relative weight."""
    centred = group_advantages(rewards, group_ids, std_norm=False)
    if centred.numel() < 2:
        return torch.zeros_like(centred)
    return (centred - centred.mean()) / (centred.std() + eps)


def advantages(name: str, rewards: torch.Tensor, group_ids: torch.Tensor, std_norm: bool = True) -> torch.Tensor:
    """`learner.advantage`: "grpo" (group mean, and group std unless std_norm is off: Dr. GRPO),
    "rloo" or "reinforce_pp"."""
    rewards = rewards.float()
    if name == "grpo":
        return group_advantages(rewards, group_ids, std_norm)
    if name == "rloo":
        return rloo_advantages(rewards, group_ids)
    if name == "reinforce_pp":
        return reinforce_pp_advantages(rewards, group_ids)
    raise ValueError(f"learner.advantage '{name}': expected one of {ADVANTAGE_ESTIMATORS}")
