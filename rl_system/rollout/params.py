"""What every rollout backend shares: the sampling settings of a call, and the prompt as token ids."""
from __future__ import annotations

from dataclasses import dataclass

from rl_system.config import TrainConfig
from rl_system.data import Problem, format_prompt


@dataclass(frozen=True)
class SamplingParams:
    n: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    greedy: bool = False
    stop_strings: tuple[str, ...] = ("</answer>",)


def sampling_params(cfg: TrainConfig, greedy: bool = False, max_new_tokens: int | None = None, n: int | None = None,
                    stop_strings: tuple[str, ...] | None = None) -> SamplingParams:
    """The run's rollout settings; any argument given overrides its setting."""
    rc = cfg.rollout
    return SamplingParams(n=1 if greedy else (n or rc.group_size), max_new_tokens=max_new_tokens or rc.max_new_tokens,
                          temperature=rc.temperature, top_p=rc.top_p, top_k=rc.top_k, greedy=greedy,
                          stop_strings=stop_strings or rc.stop_strings)


def chat_texts(tokenizer, problems: list[Problem], system_prompt: str, prefills: list[str]) -> list[str]:
    """Each problem's chat prompt continued by its prefill, as text."""
    return [format_prompt(tokenizer, p.prompt, system_prompt, pre) for p, pre in zip(problems, prefills)]


def prompt_token_ids(tokenizer, problems: list[Problem], system_prompt: str, prefills: list[str]) -> list[list[int]]:
    """Each problem's chat prompt continued by its prefill, as token ids (the ids encode_prompts pads)."""
    return tokenizer(chat_texts(tokenizer, problems, system_prompt, prefills), add_special_tokens=False)["input_ids"]
