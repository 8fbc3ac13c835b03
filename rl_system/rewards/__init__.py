"""Reward functions by name, and the three conventions a user's reward function may follow, told
apart by its parameters:

- this project's: f(prompts, completions, **columns) -> list[float], prompts and completions by
  position as text;
- TRL's: a parameter named `completions` and **kwargs; called by keyword with prompts, completions,
  completion_ids and every dataset column, completions as TRL gives them (for a chat-format prompt,
  [{"role": "assistant", "content": text}] each, and prompts as the row's message lists);
- veRL's: compute_score(data_source, solution_str, ground_truth, extra_info=None) -> float or
  {"score": float, ...}, called once per completion.

None, from any of them, means "does not apply to this completion" and adds nothing to the total.
The registered rewards follow this project's convention."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from rl_system.imports import import_object
from rl_system.rewards.rules import accuracy_reward, extract_answer, format_reward, language_consistency_reward

RewardFn = Callable[..., list]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "language_consistency": language_consistency_reward,
}
SIGNATURES = ("f(prompts, completions, **kwargs) -> list[float], TRL's f(completions, **kwargs) or veRL's "
              "compute_score(data_source, solution_str, ground_truth, extra_info=None)")
POSITIONAL, TRL, VERL = "positional", "trl", "verl"
VERL_PARAMETERS = ("data_source", "solution_str", "ground_truth", "extra_info")


class UnknownRewardError(ValueError):
    pass


@dataclass
class RewardInputs:
    """One call's completions and what rewards may read about them; lists have one item per completion."""
    prompts: list[str]  # the question texts
    completions: list[str]
    columns: dict[str, list]  # `answer` and every dataset column under its own name
    messages: list[list[dict]] | None = None  # each completion's chat prompt ([] for a text prompt); None: all text
    completion_ids: list[list[int]] | None = None


def reward_columns(problems: list) -> dict[str, list]:
    """What rewards read about each problem (one list item per problem): its dataset columns under their
    own names, and `answer`, the reference answer as text (over a dataset column of that name)."""
    names = list(dict.fromkeys(k for p in problems for k in p.columns))
    return {**{k: [p.columns.get(k) for p in problems] for k in names}, "answer": [p.answer for p in problems]}


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
                                 f"expected a function {SIGNATURES}")
    reward_convention(name, fn)
    return fn


def reward_convention(name: str, fn: RewardFn) -> str:
    """POSITIONAL, TRL or VERL, from the function's parameters; raises UnknownRewardError for none of them."""
    if name in REWARD_FUNCTIONS:
        return POSITIONAL
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable without one: judged by calling it
        return POSITIONAL
    parameters = signature.parameters.values()
    kinds = [p.kind for p in parameters]
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    any_keyword = inspect.Parameter.VAR_KEYWORD in kinds
    if "solution_str" in named and (any_keyword or named >= set(VERL_PARAMETERS)):
        return VERL
    if "completions" in named and any_keyword:
        return TRL
    positional = sum(k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds)
    if (positional >= 2 or inspect.Parameter.VAR_POSITIONAL in kinds) and any_keyword:
        return POSITIONAL
    raise UnknownRewardError(f"reward.functions name '{name}': expected a function {SIGNATURES} (the dataset's "
                             f"columns arrive as keywords), got {getattr(fn, '__name__', 'it')}{signature}")


def call_reward(name: str, inputs: RewardInputs, kwargs: dict) -> list:
    """The scores of reward `name` (kwargs: its reward.functions kwargs), called in its own convention."""
    fn = resolve_reward(name)
    convention, columns = reward_convention(name, fn), inputs.columns
    if convention == VERL:
        n = len(inputs.completions)
        data_sources, extra_infos = columns.get("data_source", [None] * n), columns.get("extra_info", [None] * n)
        return [_verl_score(fn(data_source=source, solution_str=completion, ground_truth=answer, extra_info=extra,
                               **kwargs))
                for source, completion, answer, extra in zip(data_sources, inputs.completions, columns["answer"],
                                                             extra_infos)]
    if convention == TRL:
        chats = inputs.messages or [[]] * len(inputs.completions)
        prompts = [chat or prompt for chat, prompt in zip(chats, inputs.prompts)]
        completions = [[{"role": "assistant", "content": text}] if chat else text
                       for chat, text in zip(chats, inputs.completions)]
        return _as_list(fn(prompts=prompts, completions=completions, completion_ids=inputs.completion_ids,
                           **columns, **kwargs))
    return _as_list(fn(inputs.prompts, inputs.completions, **columns, **kwargs))


def _as_list(values):
    """A returned iterable (a generator, an array) as a list, so it can leave the runner's process; any
    other value as it is, for check_scores to name."""
    if hasattr(values, "__iter__") and not isinstance(values, (str, bytes, dict)):
        return list(values)
    return values


def _verl_score(value):
    """veRL's compute_score returns a number, or a dict whose "score" is the reward (other keys: extra info)."""
    if isinstance(value, dict):
        if "score" not in value:
            raise ValueError(f"returned a dict without 'score' (keys: {', '.join(map(str, value))}), expected a "
                             "number or {'score': number, ...}")
        return value["score"]
    return value


__all__ = ["REWARD_FUNCTIONS", "RewardFn", "RewardInputs", "UnknownRewardError", "accuracy_reward", "call_reward",
           "extract_answer", "format_reward", "language_consistency_reward", "resolve_reward", "reward_columns",
           "reward_convention"]
