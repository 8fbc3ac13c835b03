"""DAPO's sampling side (Yu et al. 2025, arXiv 2503.14476): dynamic sampling, which trains only on
prompt groups whose rewards differ (`dynamic_sampling`, run by the r1_zero driver). DAPO's soft
overlong punishment is a reward shaping (rl_system/rewards/shaping.py, `reward.overlong_buffer`);
its token-level loss is `learner.loss_agg: token-mean`; its clip-higher, `learner.epsilon_high`.

Its config, DynamicSamplingConfig, is in rl_system/config/sections.py.
"""
from __future__ import annotations


def is_informative(summary: dict) -> bool:
    """A scored group whose rewards are not all equal, so its advantages (and gradient) are not all 0.
    The std of equal floats can come out a rounding error above 0 (0.1 x 3: 1.4e-17), hence the tolerance."""
    return summary["reward_std"] > 1e-9 * max(1.0, abs(summary["total_reward"]))
