"""Advantage estimators by name (`learner.advantage`): each maps the batch's rewards and group ids
to one advantage per completion. GRPO's is algorithms/grpo.group_advantages; the others here."""
from __future__ import annotations

from collections.abc import Callable

import torch

from rl_system.algorithms.grpo import group_advantages
from rl_system.config import ADVANTAGE_ESTIMATORS

SumAcrossRanks = Callable[[torch.Tensor], torch.Tensor]  # a tensor summed over the learner ranks (all-reduce)


def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO: each reward minus the mean of the OTHER completions of its prompt, r_i - mean_{j != i} r_j
    = G / (G - 1) * (r_i - mean); a group of one sample gets 0."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(num_groups).index_add_(0, inverse, torch.ones_like(rewards, dtype=torch.float))[inverse]
    centred = group_advantages(rewards, group_ids, std_norm=False)
    return torch.where(count > 1, centred * count / (count - 1).clamp(min=1), torch.zeros_like(centred))


def reinforce_pp_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6,
                            across_ranks: SumAcrossRanks | None = None) -> torch.Tensor:
    """REINFORCE++ with a group baseline: the reward minus its prompt's mean, then normalised by the
    mean and std of the whole batch (not of each group), so groups of different spread keep their
    relative weight. `across_ranks` sums the batch's moments when each rank holds part of it."""
    centred = group_advantages(rewards, group_ids, std_norm=False)
    moments = torch.tensor([centred.numel(), centred.sum().item(), (centred.double() ** 2).sum().item()],
                           dtype=torch.float64)
    count, total, squares = (across_ranks(moments) if across_ranks else moments).tolist()
    if count < 2:
        return torch.zeros_like(centred)
    mean = total / count
    std = max(0.0, (squares - count * mean * mean) / (count - 1)) ** 0.5  # unbiased, as torch.std
    return (centred - mean) / (std + eps)


def advantages(name: str, rewards: torch.Tensor, group_ids: torch.Tensor, std_norm: bool = True,
               across_ranks: SumAcrossRanks | None = None) -> torch.Tensor:
    """`learner.advantage`: "grpo" (group mean, and group std unless std_norm is off: Dr. GRPO),
    "rloo" or "reinforce_pp". Groups are whole on one rank; only REINFORCE++ needs `across_ranks`."""
    rewards = rewards.float()
    if name == "grpo":
        return group_advantages(rewards, group_ids, std_norm)
    if name == "rloo":
        return rloo_advantages(rewards, group_ids)
    if name == "reinforce_pp":
        return reinforce_pp_advantages(rewards, group_ids, across_ranks=across_ranks)
    raise ValueError(f"learner.advantage '{name}': expected one of {ADVANTAGE_ESTIMATORS}")
