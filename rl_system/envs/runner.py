"""Where a rollout's environments run. The multi-turn loop (rl_system/rollout/multiturn.py) talks to
an environment runner: `reset` starts one environment per trajectory, `step` sends the open
trajectories' latest turns and gets a StepResult for each.

`LocalEnvs` runs them in the calling process, each call on a thread with a deadline: a tool that
hangs costs its own trajectory a timeout, not every other trajectory its turn. On Ray the rollout
worker runs LocalEnvs inside restartable environment workers (actors/env_worker.py), so a tool that
crashes its process or holds it forever never takes the rollout worker with it.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from typing import Any, Mapping, Protocol

from rl_system.envs.base import Environment, StepResult
from rl_system.config import EnvConfig

# A call's deadline is env.timeout_s plus this: a tool that enforces env.timeout_s itself (the python
# tool kills its child then) answers with its own error first.
DEADLINE_GRACE_S = 2.0


class EnvRunner(Protocol):
    config: EnvConfig

    def reset(self, problems: list[Mapping[str, Any]]) -> list[str | None]:
        """Fresh environments, one per problem (trajectory), dropping the previous ones; each one's
        initial observation or None."""
        ...

    def step(self, turns: dict[int, str]) -> dict[int, StepResult]:
        """Trajectory index -> its latest turn's text, answered by that trajectory's environment."""
        ...


def failed_step(message: str, seconds: float = 0.0) -> StepResult:
    """A call the environment could not answer: the trajectory ends there (its environment's state is
    unknown), counted as a tool error. The message is kept as the observation, never appended."""
    return StepResult(f"error: {message}", done=True, info={"tool_call": True, "error": True, "seconds": seconds})


def env_step(env: Environment, turn_text: str) -> StepResult:
    """The environment's answer to a turn; one that raises is the tool's error, shown to the model."""
    start = time.perf_counter()
    try:
        return env.step(turn_text)
    except Exception as e:
        return StepResult(f"error: the environment failed: {type(e).__name__}: {e}",
                          info={"tool_call": True, "error": True, "seconds": time.perf_counter() - start})


class LocalEnvs:
    """Environments in this process; at most env.threads calls run at once, each until its deadline."""

    def __init__(self, config: EnvConfig):
        from rl_system.envs import make_env  # the registry imports this module's neighbours

        self.config, self._make_env = config, make_env
        self.envs: list[Environment] = []
        self.pool = ThreadPoolExecutor(config.threads, thread_name_prefix="env-step")
        self.stuck = 0  # calls still running past their deadline: a thread cannot be stopped, only its process

    def reset(self, problems: list[Mapping[str, Any]]) -> list[str | None]:
        self.envs = [self._make_env(self.config) for _ in problems]
        return [env.reset(problem) for env, problem in zip(self.envs, problems)]

    def step(self, turns: dict[int, str]) -> dict[int, StepResult]:
        start = time.perf_counter()
        deadline = start + self.config.timeout_s + DEADLINE_GRACE_S
        results = {i: failed_step("no environment holds this trajectory (its worker restarted)")
                   for i in turns if i >= len(self.envs)}
        calls = {i: self.pool.submit(env_step, self.envs[i], text) for i, text in turns.items() if i not in results}
        for i, call in calls.items():
            try:
                results[i] = call.result(timeout=max(0.0, deadline - time.perf_counter()))
            except FutureTimeout:
                self.stuck += not call.cancel()  # one that never started is simply dropped
                results[i] = failed_step(f"the environment did not answer within "
                                         f"{self.config.timeout_s + DEADLINE_GRACE_S:g} s",
                                         time.perf_counter() - start)
        return results
