"""The records that travel between workers through the object store."""
from __future__ import annotations

from dataclasses import dataclass, field

from rl_system.data import Problem


@dataclass
class PromptGroup:
    """G sampled completions of one prompt; rewards are filled in by a reward worker."""
    problem: Problem
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    completions: list[str]  # decoded assistant turns, prefill included
    logprobs: list[list[float]]  # behaviour-policy log-prob of each completion token
    truncated: list[bool]  # hit max_new_tokens before a stop
    policy_version: int
    generate_s: float = 0.0
    rewards: dict[str, list[float]] = field(default_factory=dict)  # per reward function
    total_rewards: list[float] = field(default_factory=list)
    reward_failures: dict[str, int] = field(default_factory=dict)
    reward_errors: dict[str, str] = field(default_factory=dict)  # per failed reward: why, in one line
    score_s: float = 0.0
    # Multi-turn rollouts (env.name): per completion, 1 where the model sampled the token, 0 where a
    # tool wrote it (empty: every token is the model's); the group's tool counters, summed.
    loss_masks: list[list[int]] = field(default_factory=list)
    env_stats: dict[str, float] = field(default_factory=dict)


def group_summary(group: PromptGroup) -> dict:
    """The small per-group numbers the driver logs, so it never needs the token payload."""
    lengths = [len(c) for c in group.completion_ids]
    return {
        "policy_version": group.policy_version,
        "task": group.problem.task,  # per-task metrics and the curriculum of a data.tasks mixture
        "level": group.problem.level,
        "rewards": {name: sum(v) / len(v) for name, v in group.rewards.items()},
        "scores": {name: list(v) for name, v in group.rewards.items()},  # per completion
        "total_reward": sum(group.total_rewards) / len(group.total_rewards),
        "correct": [float(v >= 1.0) for v in group.rewards.get("accuracy", [])],
        "formatted": [float(v >= 1.0) for v in group.rewards.get("format", [])],
        "completion_tokens": sum(lengths),
        "completions": len(lengths),
        "mean_length": sum(lengths) / len(lengths),
        "truncated": sum(group.truncated) / len(group.truncated),
        "reward_std": _std(group.total_rewards),
        "reward_failures": dict(group.reward_failures),
        "reward_errors": dict(group.reward_errors),
        "generate_s": group.generate_s,
        "score_s": group.score_s,
        "env_stats": dict(group.env_stats),
    }


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
