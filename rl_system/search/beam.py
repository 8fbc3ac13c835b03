"""Beam search over reasoning steps, guided by a process reward model."""
from __future__ import annotations

from rl_system.data import Problem
from rl_system.search.base import Policy, Request, SearchResult, Step, Verifier, cut_step


def prm_beam_search(problems: list[Problem], policy: Policy, prm: Verifier, width: int, expansions: int,
                    step_delimiter: str, max_steps: int, step_max_tokens: int,
                    max_new_tokens: int) -> list[SearchResult]:
    """Per level, every open beam of every problem is extended by `expansions` sampled steps (one
    policy call for all problems), the PRM scores the distinct candidates (one call), and each
    problem keeps its `width` best. Kept candidates that finished the answer leave the beam; the
    rest are extended at the next level. After `max_steps` levels the open beams are written to
    the end in one more call. The answer is the finished candidate the PRM scores highest."""
    beams: list[list[str]] = [[policy.prefill] for _ in problems]
    finished: list[list[tuple[float, str]]] = [[] for _ in problems]
    tokens = [0] * len(problems)

    for _ in range(max_steps):
        owners = [i for i, open_beams in enumerate(beams) for _ in open_beams]
        if not owners:
            break
        requests = [Request(problems[i], prefix) for i, open_beams in enumerate(beams) for prefix in open_beams]
        candidates: list[dict[str, Step]] = [{} for _ in problems]  # text -> step: duplicates are scored once
        for owner, request, continuations in zip(owners, requests,
                                                 policy.sample(requests, expansions, step_max_tokens, step_delimiter)):
            for continuation in continuations:
                tokens[owner] += continuation.tokens
                step = cut_step(request.prefix, continuation, step_delimiter)
                candidates[owner].setdefault(step.text, step)
        flat = [(i, step) for i, steps in enumerate(candidates) for step in steps.values()]
        scores = prm.score([problems[i] for i, _ in flat], [step.text for _, step in flat])
        ranked: list[list[tuple[float, Step]]] = [[] for _ in problems]
        for (i, step), score in zip(flat, scores):
            ranked[i].append((score, step))
        beams = [[] for _ in problems]
        for i, scored in enumerate(ranked):
            for score, step in sorted(scored, key=lambda pair: -pair[0])[:width]:
                if step.finished:
                    finished[i].append((score, step.text))
                else:
                    beams[i].append(step.text)

    open_beams = [(i, prefix) for i, prefixes in enumerate(beams) for prefix in prefixes]
    if open_beams:
        completions = policy.sample([Request(problems[i], prefix) for i, prefix in open_beams], 1, max_new_tokens)
        texts = []
        for (i, _), [continuation] in zip(open_beams, completions):
            tokens[i] += continuation.tokens
            texts.append(continuation.text)
        for (i, _), text, score in zip(open_beams, texts, prm.score([problems[i] for i, _ in open_beams], texts)):
            finished[i].append((score, text))
    return [SearchResult(max(done, key=lambda pair: pair[0])[1], n) for done, n in zip(finished, tokens)]
