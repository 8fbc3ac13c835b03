"""Scoring a prompt group with a run's rewards: the rule functions (in the runner's child
process), learned rewards merged in as they arrive from elsewhere, the weighted total and the
small summary the driver logs. Rewards limited to another kind of prompt (`applies_to`) score 0."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from rl_system.config import RewardConfig
from rl_system.data.general import prompt_kind
from rl_system.rewards import reward_columns
from rl_system.rewards.runner import RewardRunner, weighted_total
from rl_system.rewards.shaping import overlong_penalty
from rl_system.types import PromptGroup, group_summary

# (start time, names that do not apply) -> learned reward name -> scores, or None for a failed call
LearnedScores = Callable[[float, set], dict[str, list[float] | None]]


class GroupScorer:
    def __init__(self, rc: RewardConfig, max_new_tokens: int = 0):
        """`max_new_tokens` (rollout.max_new_tokens) is the L of reward.overlong_buffer's penalty."""
        if rc.overlong_buffer and not 0 < rc.overlong_buffer < max_new_tokens:
            raise ValueError(f"reward.overlong_buffer={rc.overlong_buffer} needs max_new_tokens above it, "
                             f"got {max_new_tokens}")
        self.overlong = (max_new_tokens, rc.overlong_buffer, rc.overlong_penalty) if rc.overlong_buffer else None
        self.failure_score = rc.failure_score
        self.runner = RewardRunner([(f.name, f.weight) for f in rc.functions], rc.timeout_s, rc.failure_score,
                                   {f.name: f.kwargs for f in rc.functions})
        self.weights = {f.name: f.weight for f in rc.functions} | {m.name: m.weight for m in rc.models}
        if self.overlong:
            self.weights["overlong"] = 1.0
        self.applies_to = {r.name: r.applies_to for r in (*rc.functions, *rc.models)}

    def score(self, group: PromptGroup, learned: LearnedScores | None = None) -> tuple[PromptGroup, dict]:
        start = time.perf_counter()
        kind = prompt_kind(group.problem)
        not_here = {name for name, where in self.applies_to.items() if where not in ("all", kind)}
        n = len(group.completions)
        problem = group.problem
        result = self.runner.score([problem.question] * n, group.completions, reward_columns([problem] * n),
                                   skip=not_here, messages=[list(problem.messages)] * n if problem.messages else None,
                                   completion_ids=[ids.tolist() for ids in group.completion_ids])
        scores, failures, errors = result.scores, dict(result.failures), dict(result.errors)
        for name, values in (learned(start, not_here) if learned else {}).items():
            if values is None:  # late, crashed or dead: counted and scored, the run goes on
                values = [self.failure_score] * n
                failures[name] = failures.get(name, 0) + 1
                errors[name] = "no score from the reward model within its timeout_s (late, crashed or dead replica)"
            scores[name] = values
        scores.update({name: [0.0] * n for name in not_here})
        if self.overlong:  # DAPO's soft overlong punishment, added to the total with weight 1
            scores["overlong"] = overlong_penalty([len(ids) for ids in group.completion_ids], *self.overlong)
        scored = dataclasses.replace(group, rewards=scores, total_rewards=weighted_total(scores, self.weights),
                                     reward_failures=failures, reward_errors=errors,
                                     score_s=time.perf_counter() - start)
        return scored, group_summary(scored)

    def close(self) -> None:
        self.runner.close()


class RewardFailureError(ValueError):
    """A reward that keeps failing during the run; one line naming it (the CLI prints it as `error: ...`)."""


class RewardFailureWatch:
    """Stops a run whose reward keeps failing instead of training on failure scores: one reward scored
    reward.failure_score on more than reward.max_failure_fraction of a step's completions, in each
    of reward.max_failing_steps steps in a row."""

    def __init__(self, rc: RewardConfig):
        self.max_fraction, self.max_steps = rc.max_failure_fraction, rc.max_failing_steps
        # reward name -> its failed share in each step of its current run of failing steps
        self.failing: dict[str, list[float]] = {r.name: [] for r in (*rc.functions, *rc.models)}

    def check(self, summaries: list[dict]) -> None:
        """One step's group summaries; raises RewardFailureError once a reward has failed too often."""
        for name, shares in self.failing.items():
            completions = sum(len(s["scores"].get(name, ())) for s in summaries)
            failed = sum(len(s["scores"].get(name, ())) for s in summaries if s["reward_failures"].get(name))
            share = failed / max(completions, 1)
            shares[:] = [*shares, share] if share > self.max_fraction else []
            if len(shares) < self.max_steps:
                continue
            low, high = f"{min(shares):.0%}", f"{max(shares):.0%}"
            error = next(s["reward_errors"][name] for s in reversed(summaries) if name in s["reward_errors"])
            raise RewardFailureError(
                f"reward '{name}' failed on {low if low == high else f'{low}-{high}'} of {completions} completions "
                f"in each of the last {len(shares)} steps (last error: {error}): fix it, or raise "
                f"reward.max_failure_fraction ({self.max_fraction:g}) or reward.max_failing_steps ({self.max_steps})")
