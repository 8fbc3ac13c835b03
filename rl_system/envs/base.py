"""The environment protocol for multi-turn rollouts, and the text conventions of a tool call.

A trajectory alternates the model's turns with the environment's observations:

    prompt | model turn 1 ... <tool>2*(3+4)</tool> | <result>14</result> | model turn 2 ... </answer>

The rollout loop stops generating when a turn closes a tool call (`</tool>`) or the answer ends,
passes the turn's text to `Environment.step`, appends the returned observation as tokens (masked
out of the loss: the model did not write them), and goes on for at most `env.max_turns` turns.
The final reward still comes from the reward functions at the end, as in single-turn training;
`StepResult.reward` is an optional per-step bonus an environment may add.

An environment sees text, never token ids: tokenisation stays in the rollout loop, so that the
trajectory the learner trains on is exactly what was sampled plus the observations' tokens.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rl_system.config import EnvConfig


@dataclass
class StepResult:
    """What the environment answers to one model turn.

    observation: text appended to the trajectory after the turn ("" when done: nothing to add).
    reward: a per-step reward added to the final one (0 for the built-in tools).
    done: the trajectory ends here (the turn called no tool: it answered).
    info: counters for the step's metrics: `tool_call` (bool), `error` (bool), `seconds` (float).
    """
    observation: str
    reward: float = 0.0
    done: bool = False
    info: dict = field(default_factory=dict)


@runtime_checkable
class Environment(Protocol):
    """One environment instance serves one trajectory: `reset` once, then `step` per model turn."""

    def reset(self, problem: Mapping[str, Any]) -> str | None:
        """Start a trajectory for `problem` (its question, answer and dataset columns).
        Returns an initial observation to append after the prompt, or None for none."""
        ...

    def step(self, turn_text: str) -> StepResult:
        """React to the model's latest turn (its text only, not the whole trajectory)."""
        ...


def parse_tool_call(text: str, tag: str = "tool") -> str | None:
    """The content of the tool call that ends this turn, or None when the turn calls no tool.

    Only a turn that ends with `</tag>` (trailing whitespace allowed) is a call: generation stops
    at that string, so a call earlier in the text was already answered, and a turn that ends with
    `</answer>` is a final answer even if it mentions `<tool>` on the way. The content is taken
    from the last `<tag>` before the closing tag and stripped.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    body = text.rstrip()
    if not body.endswith(closing):
        return None
    body = body[: -len(closing)]
    start = body.rfind(opening)
    if start < 0:
        return None
    return body[start + len(opening):].strip()


def truncate(text: str, max_chars: int) -> str:
    """At most `max_chars` characters of `text`, plus a marker saying how much was cut."""
    if len(text) <= max_chars:
        return text
    return f"{text[:max_chars]}\n...[truncated: {len(text) - max_chars} more characters]"


def format_observation(text: str, tag: str = "result", max_chars: int = 1000) -> str:
    """Tool output as the text appended to the trajectory: `<result>...</result>`, truncated.

    A closing tag inside the output is escaped so that a tool's output cannot end the result
    block early and pass its own text off as the model's (e.g. print('</result><answer>7')).
    """
    closing = f"</{tag}>"
    body = truncate(text, max_chars).replace(closing, f"<\\/{tag}>")
    return f"<{tag}>{body}{closing}"


class ToolEnvironment:
    """An environment whose one action is a tool call; subclasses say how to run the tool.

    A turn with a call gets the tool's output as `<result>...</result>` and the trajectory goes
    on; a turn without one ends it (the model answered). Anything the tool raises becomes an
    error observation the model can read: a tool never crashes a rollout.
    """

    def __init__(self, config: EnvConfig):
        self.config = config

    def reset(self, problem: Mapping[str, Any]) -> str | None:
        return None

    def run_tool(self, call: str) -> tuple[str, bool]:
        """The tool's output for the call's content, and whether it is an error."""
        raise NotImplementedError

    def step(self, turn_text: str) -> StepResult:
        call = parse_tool_call(turn_text, self.config.tool_tag)
        if call is None:
            return StepResult("", done=True, info={"tool_call": False, "error": False, "seconds": 0.0})
        start = time.perf_counter()
        try:
            output, error = self.run_tool(call)
        except Exception as e:  # a bug in the tool is the tool's error, reported to the model, counted
            output, error = f"error: {type(e).__name__}: {e}", True
        info = {"tool_call": True, "error": bool(error), "seconds": time.perf_counter() - start}
        return StepResult(format_observation(output, self.config.result_tag, self.config.max_observation_chars),
                          info=info)
