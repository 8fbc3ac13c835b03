"""A problem: what every prompt source yields and everything downstream carries."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer and the columns reward functions receive."""
    problem_id: int
    question: str  # the user's question as text (for chat data, the last user message): logs, search, hints
    answer: str
    columns: dict = field(default_factory=dict)  # passed as **columns to reward functions
    task: str = ""  # the data.tasks entry it comes from; "" in a one-task run
    level: int = 0  # the task's curriculum level (its index in the task's levels)
    messages: tuple[dict, ...] = ()  # a chat-format row's own messages ({role, content}); () for a text prompt

    @property
    def prompt(self) -> str | list[dict]:
        """What the model is asked: the row's chat messages, or the question text."""
        return [dict(m) for m in self.messages] if self.messages else self.question

    def with_question(self, text: str) -> Problem:
        """The problem asking `text` instead (the last user message, for chat data), all else kept."""
        if not self.messages:
            return dataclasses.replace(self, question=text)
        last_user = max(i for i, m in enumerate(self.messages) if m["role"] == "user")
        messages = tuple({**m, "content": text} if i == last_user else m for i, m in enumerate(self.messages))
        return dataclasses.replace(self, question=text, messages=messages)
