"""Scoring a prompt group with a run's rewards: the rule functions (in the runner's child
process), learned rewards merged in as they arrive from elsewhere, the weighted total and the
small summary the driver logs. Rewards limited to another kind of prompt (`applies_to`) score 0."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from rl_system.config import RewardConfig
from rl_system.data.general import prompt_kind
from rl_system.rewards.runner import RewardRunner, weighted_total
from rl_system.types import PromptGroup, group_summary

# (start time, names that do not apply) -> learned reward name -> scores, or None for a failed call
LearnedScores = Callable[[float, set], dict[str, list[float] | None]]


class GroupScorer:
    def __init__(self, rc: RewardConfig):
        self.failure_score = rc.failure_score
        self.runner = RewardRunner([(f.name, f.weight) for f in rc.functions], rc.timeout_s, rc.failure_score,
                                   {f.name: f.kwargs for f in rc.functions})
        self.weights = {f.name: f.weight for f in rc.functions} | {m.name: m.weight for m in rc.models}
        self.applies_to = {r.name: r.applies_to for r in (*rc.functions, *rc.models)}

    def score(self, group: PromptGroup, learned: LearnedScores | None = None) -> tuple[PromptGroup, dict]:
        start = time.perf_counter()
        kind = prompt_kind(group.problem)
        not_here = {name for name, where in self.applies_to.items() if where not in ("all", kind)}
        n = len(group.completions)
        columns = {"answer": [group.problem.answer] * n, **{k: [v] * n for k, v in group.problem.columns.items()}}
        result = self.runner.score([group.problem.question] * n, group.completions, columns, skip=not_here)
        scores, failures = result.scores, dict(result.failures)
        for name, values in (learned(start, not_here) if learned else {}).items():
            if values is None:  # late, crashed or dead: counted and scored, the run goes on
                values = [self.failure_score] * n
                failures[name] = failures.get(name, 0) + 1
            scores[name] = values
        scores.update({name: [0.0] * n for name in not_here})
        scored = dataclasses.replace(group, rewards=scores, total_rewards=weighted_total(scores, self.weights),
                                     reward_failures=failures, score_s=time.perf_counter() - start)
        return scored, group_summary(scored)

    def close(self) -> None:
        self.runner.close()
