"""When to grow or shrink the rollout pool: a pure policy that the Ray controller asks after each step."""
from __future__ import annotations

from dataclasses import dataclass

from rl_system.config import RolloutConfig


@dataclass
class RolloutScaler:
    """The number of rollout workers wanted, from the share of each step spent generating.

    Above `up_above`, generation is the bottleneck: one more worker, up to `maximum`, unless an
    earlier one is still waiting for its node. Below `down_below`, workers sit idle most of the
    step: one fewer, down to `minimum`. After a change, `cooldown_steps` steps pass before the
    next, so that the change is measured before acting again.
    """

    minimum: int
    maximum: int
    up_above: float
    down_below: float
    cooldown_steps: int
    target: int
    last_change_step: int | None = None

    @classmethod
    def from_config(cls, rc: RolloutConfig) -> RolloutScaler:
        low, high = rc.worker_bounds()
        return cls(low, high, rc.scale_up_above, rc.scale_down_below, rc.scale_cooldown_steps, rc.num_workers)

    @property
    def elastic(self) -> bool:
        return self.maximum > self.minimum

    def decide(self, step: int, metrics: dict, pending: int) -> int:
        """The target after `step`, given its metrics (`time/generate`, `time/step`) and the number of
        started workers not yet ready."""
        cooling = self.last_change_step is not None and step - self.last_change_step < self.cooldown_steps
        if not self.elastic or cooling:
            return self.target
        share = metrics["time/generate"] / max(metrics["time/step"], 1e-9)
        if share > self.up_above and self.target < self.maximum and pending == 0:
            self.target += 1
        elif share < self.down_below and self.target > self.minimum:
            self.target -= 1
        else:
            return self.target
        self.last_change_step = step
        return self.target
