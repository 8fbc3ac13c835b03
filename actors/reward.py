from __future__ import annotations

import dataclasses

import ray

from rl_system.config import TrainConfig
from rl_system.rewards.runner import RewardRunner
from rl_system.types import PromptGroup, group_summary


@ray.remote
class RuleRewardWorker:
    """Scores groups with weighted rule rewards; failures and timeouts become counted scores."""

    def __init__(self, cfg: TrainConfig, worker_index: int):
        rc = cfg.reward
        self.runner = RewardRunner([(f.name, f.weight) for f in rc.functions], rc.timeout_s, rc.failure_score)

    def score(self, group: PromptGroup) -> tuple[PromptGroup, dict]:
        n = len(group.completions)
        columns = {"answer": [group.problem.answer] * n}
        columns.update({k: [v] * n for k, v in group.problem.columns.items()})
        result = self.runner.score([group.problem.question] * n, group.completions, columns)
        scored = dataclasses.replace(group, rewards=result.scores, total_rewards=result.total,
                                     reward_failures=result.failures, score_s=result.seconds)
        return scored, group_summary(scored)

    def failure_counts(self) -> dict[str, int]:
        return dict(self.runner.failure_counts)

    def close(self) -> None:
        self.runner.close()  # end the grader process cleanly before the actor is killed
