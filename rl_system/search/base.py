"""What every search method is written against: a Policy that continues partial answers and a
Verifier that scores answers, plus the records they exchange.

A method never sees Ray. It asks the policy for continuations of many (problem, prefix) pairs in
one batched call per search level, for all problems at once, and the verifier for scores of many
(problem, completion) pairs in one call; actors/search_backend.py runs both on the cluster.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rl_system.data import Problem

ANSWER_END = "</answer>"  # the answer's closing tag: a completion that wrote it is finished


@dataclass(frozen=True)
class Request:
    problem: Problem
    prefix: str  # the assistant turn so far; every continuation of it starts with this text


@dataclass(frozen=True)
class Continuation:
    text: str  # the prefix plus the newly generated text
    tokens: int  # tokens generated for it, counted even if part of the text is cut away later
    stopped: bool  # ended on a stop string or end-of-sequence; False: it ran out of tokens


class Policy(Protocol):
    prefill: str  # the text every answer starts with (the prefix of a search's root)

    def sample(self, requests: list[Request], n: int, max_new_tokens: int, step_delimiter: str | None = None,
               greedy: bool = False) -> list[list[Continuation]]:
        """n continuations per request, in request order, from one batched call. With a
        `step_delimiter`, generation also stops there (one reasoning step); without, it runs to
        the end of the answer."""
        ...


class Verifier(Protocol):
    name: str

    def score(self, problems: list[Problem], completions: list[str]) -> list[float]:
        """One score per (problem, completion) pair, higher is better. An ORM judges whole answers;
        a PRM also judges partial ones (its step scores aggregated to one number)."""
        ...


@dataclass(frozen=True)
class SearchResult:
    completion: str  # the answer the method chose
    tokens: int  # every token the method generated for this problem


@dataclass(frozen=True)
class Step:
    text: str  # the prefix plus one reasoning step
    finished: bool  # the answer is complete: no further step follows


def cut_step(prefix: str, continuation: Continuation, delimiter: str) -> Step:
    """The prefix extended by one step: the new text up to and including the first delimiter,
    or up to the answer's end when that comes first. Generation stops on the delimiter a token
    late at worst, so anything after it is dropped (its tokens stay counted)."""
    new = continuation.text[len(prefix):]
    at_delimiter, at_end = new.find(delimiter), new.find(ANSWER_END)
    if at_end >= 0 and (at_delimiter < 0 or at_end < at_delimiter):
        return Step(prefix + new[:at_end + len(ANSWER_END)], True)
    if at_delimiter >= 0:
        return Step(prefix + new[:at_delimiter + len(delimiter)], False)
    # No delimiter: end-of-sequence finished the answer; the token limit only ended a long step.
    return Step(continuation.text, continuation.stopped)
