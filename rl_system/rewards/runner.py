"""Runs reward functions in a killable child process with a deadline per call.

A reward that raises, hangs, returns the wrong shape or a score that is not a finite number
(NaN, inf, text) costs a counted failure score, never the run. The child process also gives
math-verify the main thread its signal-based timeout needs, which Ray worker threads do not have.
"""
from __future__ import annotations

import math
import multiprocessing
import time
from dataclasses import dataclass, field

from rl_system.config import one_line
from rl_system.rewards import RewardInputs, call_reward, resolve_reward


def check_scores(values, n: int) -> list[float]:
    """A reward's return value as n finite floats (None, TRL's "not applicable", counts 0.0); raises
    ValueError saying what is wrong: not a list, the wrong length, a non-number, NaN or inf."""
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        raise ValueError(f"returned {type(values).__name__}, expected a list of {n} scores")
    if len(values) != n:
        raise ValueError(f"returned {len(values)} score{'s' * (len(values) != 1)} for {n} completions, "
                         "expected one per completion")
    scores = []
    for i, v in enumerate(values):
        if v is None:
            scores.append(0.0)
            continue
        try:
            if isinstance(v, (str, bytes)):
                raise TypeError
            score = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"returned {type(v).__name__} {v!r:.40} for completion {i}, expected a number or None") \
                from None
        if not math.isfinite(score):
            raise ValueError(f"returned {score} for completion {i}, expected a finite number or None")
        scores.append(score)
    return scores


@dataclass
class RewardResult:
    scores: dict[str, list[float]]  # per reward function, unweighted
    failures: dict[str, int] = field(default_factory=dict)  # per function: calls that raised or timed out
    errors: dict[str, str] = field(default_factory=dict)  # per failed function: why, in one line
    seconds: float = 0.0


def weighted_total(scores: dict[str, list[float]], weights: dict[str, float]) -> list[float]:
    n = len(next(iter(scores.values())))
    return [sum(w * scores[name][i] for name, w in weights.items()) for i in range(n)]


class RewardRunner:
    def __init__(self, functions: list[tuple[str, float]], timeout_s: float, failure_score: float = 0.0,
                 kwargs: dict[str, dict] | None = None):
        for name, _ in functions:
            resolve_reward(name)  # unknown names fail here, before any scoring
        self.functions, self.timeout_s, self.failure_score = functions, timeout_s, failure_score
        self.kwargs = kwargs or {}
        self.failure_counts = {name: 0 for name, _ in functions}
        self._pool = None

    def _get_pool(self):
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(processes=1)
        return self._pool

    def _kill_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def score(self, prompts: list[str], completions: list[str], columns: dict[str, list],
              skip: set[str] = frozenset(), messages: list[list[dict]] | None = None,
              completion_ids: list[list[int]] | None = None) -> RewardResult:
        """Scores with every function but those in `skip`, which score 0 (not applicable here).
        `messages` (chat prompts) and `completion_ids` are what TRL-style rewards also receive."""
        start = time.perf_counter()
        inputs = RewardInputs(prompts, completions, columns, messages, completion_ids)
        n = len(completions)
        scores, failures, errors = {name: [0.0] * n for name in skip}, {}, {}
        for name, _ in self.functions:
            if name in skip:
                continue
            try:
                values = self._get_pool().apply_async(
                    call_reward, (name, inputs, self.kwargs.get(name, {}))).get(self.timeout_s)
                # None means "not applicable to this sample" (TRL convention): no contribution.
                values = check_scores(values, n)
            except multiprocessing.TimeoutError:
                self._kill_pool()  # the hung call dies with its process
                values, failures[name] = [self.failure_score] * n, 1
                errors[name] = f"no answer within reward.timeout_s={self.timeout_s:g}"
            except Exception as e:
                values, failures[name] = [self.failure_score] * n, 1
                errors[name] = one_line(e)
            scores[name] = values
        for name, count in failures.items():
            self.failure_counts[name] += count
        return RewardResult(scores, failures, errors, time.perf_counter() - start)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None
