"""Reward functions by name. A reward is any callable f(prompts, completions, **columns) -> list[float]."""
from __future__ import annotations

import importlib
from typing import Callable

from rl_system.rewards.rules import accuracy_reward, extract_answer, format_reward, language_consistency_reward

RewardFn = Callable[..., list]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "language_consistency": language_consistency_reward,
}


class UnknownRewardError(ValueError):
    pass


def resolve_reward(name: str) -> RewardFn:
    """A registered name, or `package.module:function` for a user's own reward."""
    if name in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name]
    module, sep, attr = name.partition(":")
    if sep:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UnknownRewardError(f"reward.functions name '{name}': cannot import ({e})") from None
        if callable(fn):
            return fn
    raise UnknownRewardError(f"reward.functions name '{name}': unknown reward (registered: "
                             f"{', '.join(sorted(REWARD_FUNCTIONS))}; or give 'package.module:function')")


__all__ = ["REWARD_FUNCTIONS", "RewardFn", "UnknownRewardError", "accuracy_reward", "extract_answer",
           "format_reward", "language_consistency_reward", "resolve_reward"]
