"""DAPO's sampling-side pieces (Yu et al. 2025, arXiv 2503.14476): soft overlong punishment, a
length penalty the reward scorer adds (`reward.overlong_buffer`), and dynamic sampling, which
trains only on prompt groups whose rewards differ (`dynamic_sampling`, run by the r1_zero driver).
DAPO's token-level loss is `learner.loss_agg: token-mean`; its clip-higher, `learner.epsilon_high`.

Its config, DynamicSamplingConfig, is in rl_system/config/sections.py.
"""
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


def is_informative(summary: dict) -> bool:
    """A scored group whose rewards are not all equal, so its advantages (and gradient) are not all 0.
    The std of equal floats can come out a rounding error above 0 (0.1 x 3: 1.4e-17), hence the tolerance."""
    return summary["reward_std"] > 1e-9 * max(1.0, abs(summary["total_reward"]))
