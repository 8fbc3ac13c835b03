"""Reasoning steps of a completion, and Math-Shepherd style soft labels from Monte-Carlo continuations."""
from __future__ import annotations

import re

_SPLITTERS = {
    "lines": re.compile(r"\n+"),
    "step": re.compile(r"(?=\bStep \d+\s*:)"),
    "sentences": re.compile(r"(?<=[.!?])\s+"),
}


def step_ends(completion: str, mode: str) -> list[int]:
    """Character offsets in `completion` where each reasoning step ends.

    Steps are cut from the <think> text; the last step runs to the end of the completion, so
    it carries the answer and its label is the outcome itself. Always at least one step.
    """
    if mode not in _SPLITTERS:
        raise ValueError(f"step split '{mode}': expected one of {sorted(_SPLITTERS)}")
    start = completion.find("<think>")
    start = 0 if start < 0 else start + len("<think>")
    stop = completion.find("</think>", start)
    stop = len(completion) if stop < 0 else stop
    ends, pos = [], start
    for piece in _SPLITTERS[mode].split(completion[start:stop]):
        pos = completion.index(piece, pos) + len(piece) if piece.strip() else pos
        if piece.strip():
            ends.append(pos)
    if ends:
        ends[-1] = len(completion)
    return ends or [len(completion)]


def split_steps(completion: str, mode: str) -> list[str]:
    ends = step_ends(completion, mode)
    return [completion[a:b] for a, b in zip([0] + ends[:-1], ends)]


def mc_step_labels(ends: list[int], continuation_correct: list[list[float]], outcome_correct: float) -> list[float]:
    """Soft label per step: the fraction of K continuations from that step's prefix that reach
    the right answer; the last step (the whole completion) takes the outcome itself."""
    if len(continuation_correct) != len(ends) - 1:
        raise ValueError(f"{len(ends)} steps need {len(ends) - 1} continuation sets, got {len(continuation_correct)}")
    return [sum(c) / len(c) for c in continuation_correct] + [float(outcome_correct)]
