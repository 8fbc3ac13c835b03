"""Reward shaping: terms the scorer adds to a completion's reward from its form rather than its content."""
from __future__ import annotations


def overlong_penalty(lengths: list[int], max_new_tokens: int, buffer: int, penalty: float = 1.0) -> list[float]:
    """DAPO's soft overlong punishment of completions of `lengths` tokens, with L = max_new_tokens and
    B = buffer: 0 up to L - B tokens, then a linear ramp to -penalty at L, and -penalty beyond it:
    R(y) = 0 if |y| <= L - B;  (L - B - |y|) / B * penalty if L - B < |y| <= L;  -penalty if |y| > L."""
    start = max_new_tokens - buffer  # the longest completion that costs nothing
    out = []
    for n in lengths:
        if n <= start:
            out.append(0.0)
        elif n <= max_new_tokens:  # here buffer > 0
            out.append((start - n) / buffer * penalty)
        else:
            out.append(-penalty)
    return out
