"""Final answers compared by meaning, not spelling, so that votes for "7", " 7.0" and "$7$" count together."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from rl_system.rewards.rules import extract_answer

_BOXED = re.compile(r"^\\boxed\{(.*)\}$", re.DOTALL)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def normalize_answer(answer: str | None) -> str | None:
    """A canonical form of an answer: `\\boxed{}` and `$` removed, a trailing period dropped,
    whitespace collapsed, lower case; numbers without thousands separators, sign `+`, or
    trailing zeros ("1,000.50" -> "1000.5", "-0" -> "0"). None for a missing or empty answer."""
    if answer is None:
        return None
    text = answer.strip().strip("$").strip()
    boxed = _BOXED.match(text)
    if boxed:
        text = boxed.group(1).strip()
    text = " ".join(text.rstrip(".").split()).lower()
    number = text.replace(",", "")
    if _NUMBER.match(number):
        try:
            value = Decimal(number)
        except InvalidOperation:
            return text or None
        return "0" if value == 0 else format(value.normalize(), "f")
    return text or None


def answer_of(completion: str) -> str | None:
    """The normalised text inside the completion's last <answer> block."""
    return normalize_answer(extract_answer(completion))


def vote(completions: list[str], weights: list[float]) -> int:
    """Index of the winning completion: the answer with the largest summed weight wins (the first
    answer seen on a tie), represented by its highest-weight completion. Completions without an
    answer do not vote; when none has one, the highest-weight completion wins."""
    totals: dict[str, float] = {}
    for completion, weight in zip(completions, weights):
        answer = answer_of(completion)
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + weight
    if not totals:
        return max(range(len(completions)), key=lambda i: weights[i])
    winner = max(totals, key=totals.get)
    return max((i for i, c in enumerate(completions) if answer_of(c) == winner), key=lambda i: weights[i])
