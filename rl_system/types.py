"""The records that travel between workers through the object store."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rl_system.data.problem import Problem

# The token payload of a PromptGroup is numpy, one 1-D array per completion, from the sampler to the
# learner's collate. A group crosses the object store twice (rollout worker -> reward worker ->
# learner), and pickling Python lists of ints and floats costs per element: one pickle round trip
# of a 16 x 2048-token group took 2.9 ms as lists, 0.2 ms as arrays (benchmarks/payload.py measures it).
# Converting only on the wire gained nothing, since `.tolist()` on arrival costs what it saves, so
# the arrays are used end to end; `.tolist()` only where something needs Python ints (vLLM's
# prompt_token_ids, JSON). Loss masks are bool, not int8: Python's sum() over an int8 array adds
# in int8 and wraps past 127, over a bool array it counts.
TOKEN_DTYPE, LOGPROB_DTYPE, MASK_DTYPE = np.int32, np.float32, np.bool_
VERSION_DTYPE = np.int32


def token_array(ids) -> np.ndarray:
    """Token ids (a list, a tensor's numpy, an array) as the payload's 1-D int32 array."""
    return np.asarray(ids, dtype=TOKEN_DTYPE)


def logprob_array(logprobs) -> np.ndarray:
    return np.asarray(logprobs, dtype=LOGPROB_DTYPE)


def mask_array(mask) -> np.ndarray:
    return np.asarray(mask, dtype=MASK_DTYPE)


def version_array(versions) -> np.ndarray:
    return np.asarray(versions, dtype=VERSION_DTYPE)


@dataclass
class PromptGroup:
    """G sampled completions of one prompt; rewards are filled in by a reward worker.

    completion_ids, logprobs and loss_masks are lists of numpy arrays (int32, float32, bool), not
    lists of lists: see the comment on TOKEN_DTYPE. Lists given to the constructor are converted
    (tests and fakes may write literals); an array of the right dtype is kept as it is, not copied.
    Arrays that arrive through Ray are read-only views of the object store (zero-copy): read them,
    never write into them.
    prompt_ids stays a list of ints: one short row per group, a dict key in collate and vLLM's
    prompt_token_ids, and negligible on the wire next to the completions."""
    problem: Problem
    prompt_ids: list[int]
    completion_ids: list[np.ndarray]  # int32, one 1-D array per completion
    completions: list[str]  # decoded assistant turns, prefill included
    logprobs: list[np.ndarray]  # float32: behaviour-policy log-prob of each completion token
    truncated: list[bool]  # hit max_new_tokens before a stop
    policy_version: int  # the weights the group started with: its oldest tokens'
    generate_s: float = 0.0
    rewards: dict[str, list[float]] = field(default_factory=dict)  # per reward function
    total_rewards: list[float] = field(default_factory=list)
    reward_failures: dict[str, int] = field(default_factory=dict)
    reward_errors: dict[str, str] = field(default_factory=dict)  # per failed reward: why, in one line
    score_s: float = 0.0
    # Multi-turn rollouts (env.name): per completion, a bool array, True where the model sampled the
    # token, False where a tool wrote it (an empty list: every token is the model's); the group's tool
    # counters, summed.
    loss_masks: list[np.ndarray] = field(default_factory=list)
    env_stats: dict[str, float] = field(default_factory=dict)
    # Partial rollouts (rollout.partial_rollout): per completion, an int32 array, the policy version that
    # sampled each token (a generation resumed under newer weights changes version mid-way); an empty
    # list: every token is policy_version's.
    token_versions: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        # Runs at construction only: unpickling restores the fields without calling __init__.
        self.completion_ids = [token_array(ids) for ids in self.completion_ids]
        self.logprobs = [logprob_array(lp) for lp in self.logprobs]
        self.loss_masks = [mask_array(m) for m in self.loss_masks]
        self.token_versions = [version_array(v) for v in self.token_versions]

    def is_partial(self) -> bool:
        """Some completion was resumed under newer weights: its tokens span policy versions."""
        return any(len(v) and v[0] != v[-1] for v in self.token_versions)


def group_summary(group: PromptGroup) -> dict:
    """The small per-group numbers the driver logs, so it never needs the token payload."""
    lengths = [len(c) for c in group.completion_ids]
    return {
        "policy_version": group.policy_version,
        "task": group.problem.task,  # per-task metrics and the curriculum of a data.tasks mixture
        "level": group.problem.level,
        "problem_id": group.problem.problem_id,  # data.difficulty_filter's pass-rate history
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
        "partial": group.is_partial(),
    }


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
