"""A reward function's first call, made before a run starts: each configured function scores a
well-formed completion (the reference answer in tags) for a couple of train problems, in this
process, so a plug-in that raises, returns the wrong number of scores, NaN / inf or something that
is not a number stops the run with one line instead of costing reward.failure_score all run long.
At run time the runner still contains whatever a reward does (rewards/runner.py)."""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager

from rl_system.config import RewardFunctionConfig, one_line
from rl_system.data import Problem
from rl_system.data.general import prompt_kind
from rl_system.rewards import RewardInputs, UnknownRewardError, call_reward, resolve_reward, reward_columns
from rl_system.rewards.runner import check_scores

PROBE_PROBLEMS = 2


class RewardProbeError(UnknownRewardError):
    """A configured reward function that failed its probe call; one line naming it."""


class _ProbeTimeout(Exception):
    pass


def probe_completion(problem: Problem) -> str:
    return f"<think>Let me work it out.</think>\n<answer>{problem.answer}</answer>"


def probe_rewards(functions: tuple[RewardFunctionConfig, ...], problems: list[Problem], timeout_s: float) -> None:
    """Calls every function once on up to PROBE_PROBLEMS problems of the kind it applies to; raises
    RewardProbeError naming `reward.functions[i]` and what was wrong."""
    for i, f in enumerate(functions):
        where = f"reward.functions[{i}] '{f.name}'"
        resolve_reward(f.name)
        chosen = [p for p in problems if f.applies_to in ("all", prompt_kind(p))][:PROBE_PROBLEMS]
        if not chosen:
            continue
        n = len(chosen)
        inputs = RewardInputs([p.question for p in chosen], [probe_completion(p) for p in chosen],
                              reward_columns(chosen), [list(p.messages) for p in chosen],
                              [[] for _ in chosen])  # no tokenizer here: no token ids
        try:
            with _deadline(timeout_s):
                values = call_reward(f.name, inputs, f.kwargs)
        except _ProbeTimeout:
            raise RewardProbeError(f"{where}: no scores within reward.timeout_s={timeout_s:g} s for {n} completions "
                                   "(every call would score reward.failure_score); raise reward.timeout_s if it is "
                                   "just slow") from None
        except Exception as e:
            given = f" with kwargs {f.kwargs}" if f.kwargs else ""
            raise RewardProbeError(f"{where}: raised {one_line(e)} when scoring {n} well-formed completions"
                                   f"{given}") from None
        try:
            check_scores(values, n)
        except ValueError as e:
            raise RewardProbeError(f"{where}: {e}") from None


@contextmanager
def _deadline(seconds: float):
    """SIGALRM after `seconds` on the main thread (where signals can be used; no deadline elsewhere).
    A timer someone else armed (a test runner's timeout) keeps its own handler and time."""
    usable = threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer") \
        and math.isfinite(seconds) and seconds > 0
    if not usable:
        yield
        return
    start = time.monotonic()
    outer, interval = signal.getitimer(signal.ITIMER_REAL)
    previous = signal.getsignal(signal.SIGALRM)
    fired_outer = False

    def expire(signum, frame):
        nonlocal fired_outer
        if time.monotonic() - start >= seconds - 1e-3:
            raise _ProbeTimeout()
        fired_outer = True  # the outer timer is due first: its handler runs as if we were not here
        signal.signal(signal.SIGALRM, previous)
        signal.raise_signal(signal.SIGALRM)

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer > 0 else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0 and not fired_outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3), interval)
