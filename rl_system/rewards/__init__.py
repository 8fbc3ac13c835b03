"""Reward functions by name. A reward is any callable f(prompts, completions, **columns) -> list[float]."""
from __future__ import annotations

import inspect
from typing import Callable

from rl_system.imports import import_object
from rl_system.rewards.rules import accuracy_reward, extract_answer, format_reward, language_consistency_reward

RewardFn = Callable[..., list]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "language_consistency": language_consistency_reward,
}
SIGNATURE = "f(prompts, completions, **kwargs) -> list[float]"


class UnknownRewardError(ValueError):
    pass


def resolve_reward(name: str) -> RewardFn:
    """A registered name, or `package.module:function` for a user's own reward (its signature checked)."""
    if name in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name]
    if ":" not in name:
        raise UnknownRewardError(f"reward.functions name '{name}': unknown reward (registered: "
                                 f"{', '.join(sorted(REWARD_FUNCTIONS))}; or give 'package.module:function')")
    fn = import_object(name, f"reward.functions name '{name}'", "package.module:function", UnknownRewardError)
    if not callable(fn):
        attr = name.partition(":")[2]
        raise UnknownRewardError(f"reward.functions name '{name}': '{attr}' is a {type(fn).__name__}, "
                                 f"expected a function {SIGNATURE}")
    _check_signature(name, fn)
    return fn


def _check_signature(name: str, fn: RewardFn) -> None:
    """TRL's reward signature: prompts and completions by position, every dataset column by keyword."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without one: judged by calling it
        return
    kinds = [p.kind for p in sig.parameters.values()]
    positional = sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)
    if (positional < 2 and inspect.Parameter.VAR_POSITIONAL not in kinds) or inspect.Parameter.VAR_KEYWORD not in kinds:
        raise UnknownRewardError(f"reward.functions name '{name}': expected a function {SIGNATURE} (the dataset's "
                                 f"columns arrive as keywords), got {getattr(fn, '__name__', 'it')}{sig}")


__all__ = ["REWARD_FUNCTIONS", "RewardFn", "UnknownRewardError", "accuracy_reward", "extract_answer",
           "format_reward", "language_consistency_reward", "resolve_reward"]
