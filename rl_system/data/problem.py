"""A problem: what every prompt source yields and everything downstream carries."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer and the columns reward functions receive."""
    problem_id: int
    question: str
    answer: str
    columns: dict = field(default_factory=dict)  # passed as **columns to reward functions
    task: str = ""  # the data.tasks entry it comes from; "" in a one-task run
    level: int = 0  # the task's curriculum level (its index in the task's levels)
