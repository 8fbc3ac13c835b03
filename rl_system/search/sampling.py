"""Methods that sample whole answers in parallel and then choose one: greedy decoding,
self-consistency (majority vote), best-of-N and weighted best-of-N by an outcome verifier.

Each makes one batched policy call (N answers for every problem) and at most one verifier call.
"""
from __future__ import annotations

from rl_system.data import Problem
from rl_system.search.answers import vote
from rl_system.search.base import Continuation, Policy, Request, SearchResult, Verifier


def sample_answers(problems: list[Problem], policy: Policy, n: int, max_new_tokens: int,
                   greedy: bool = False) -> list[list[Continuation]]:
    return policy.sample([Request(p, policy.prefill) for p in problems], n, max_new_tokens, greedy=greedy)


def greedy(problems: list[Problem], policy: Policy, max_new_tokens: int) -> list[SearchResult]:
    return [SearchResult(s[0].text, s[0].tokens) for s in sample_answers(problems, policy, 1, max_new_tokens, True)]


def majority_vote(problems: list[Problem], policy: Policy, n: int, max_new_tokens: int) -> list[SearchResult]:
    """Self-consistency: the most frequent normalised answer among n samples."""
    return [_chosen(samples, vote([s.text for s in samples], [1.0] * len(samples)))
            for samples in sample_answers(problems, policy, n, max_new_tokens)]


def best_of_n(problems: list[Problem], policy: Policy, orm: Verifier, n: int, max_new_tokens: int) -> list[SearchResult]:
    """The sample the verifier scores highest."""
    samples, scores = _scored_samples(problems, policy, orm, n, max_new_tokens)
    return [_chosen(group, max(range(len(group)), key=lambda i: s[i])) for group, s in zip(samples, scores)]


def weighted_best_of_n(problems: list[Problem], policy: Policy, orm: Verifier, n: int,
                       max_new_tokens: int) -> list[SearchResult]:
    """The answer whose samples have the largest summed verifier score: many good votes beat one."""
    samples, scores = _scored_samples(problems, policy, orm, n, max_new_tokens)
    return [_chosen(group, vote([c.text for c in group], s)) for group, s in zip(samples, scores)]


def _scored_samples(problems, policy, orm, n, max_new_tokens):
    samples = sample_answers(problems, policy, n, max_new_tokens)
    flat = orm.score([p for p, group in zip(problems, samples) for _ in group],
                     [c.text for group in samples for c in group])
    scores, start = [], 0
    for group in samples:
        scores.append(flat[start:start + len(group)])
        start += len(group)
    return samples, scores


def _chosen(samples: list[Continuation], index: int) -> SearchResult:
    return SearchResult(samples[index].text, sum(s.tokens for s in samples))
