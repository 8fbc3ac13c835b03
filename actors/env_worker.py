"""Environment workers: a rollout worker's tool calls run in actors of their own (LocalEnvs inside),
so a tool that crashes its process or never returns costs only its own trajectories a tool error,
and generation goes on. Ray restarts a dead worker; one that stops answering is replaced by a new one."""
from __future__ import annotations

from typing import Any, Mapping

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rl_system.envs import EnvConfig, StepResult
from rl_system.envs.runner import DEADLINE_GRACE_S, LocalEnvs, failed_step


@ray.remote(num_cpus=0, max_restarts=-1)
class EnvWorker:
    def __init__(self, config: EnvConfig):
        self.envs = LocalEnvs(config)

    @ray.method(max_task_retries=2)  # a fresh set of environments: safe to run again on a restarted worker
    def reset(self, problems: list[Mapping[str, Any]]) -> list[str | None]:
        return self.envs.reset(problems)

    def step(self, turns: dict[int, str]) -> tuple[dict[int, StepResult], int]:
        """The answers, and how many calls in this process are still running past their deadline."""
        return self.envs.step(turns), self.envs.stuck


class RayEnvs:
    """The EnvRunner of a rollout worker on Ray: trajectory i's environment lives on worker i % num_workers,
    started on the rollout worker's node when it has room."""

    def __init__(self, config: EnvConfig, node_id: str):
        self.config = config
        self.node_id = node_id
        self.workers = [self._start() for _ in range(config.num_workers)]
        self.to_restart: set[int] = set()  # workers holding calls past their deadline
        self.restarts = 0

    def reset(self, problems: list[Mapping[str, Any]]) -> list[str | None]:
        for w in self.to_restart:  # their trajectories are finished: a fresh process drops the stuck calls
            self._restart(w)
        self.to_restart.clear()
        count = len(self.workers)
        parts = ray.get([worker.reset.remote(problems[w::count]) for w, worker in enumerate(self.workers)])
        return [parts[i % count][i // count] for i in range(len(problems))]

    def step(self, turns: dict[int, str]) -> dict[int, StepResult]:
        count = len(self.workers)
        # Indices as each worker knows them: trajectory i is its (i // count)-th.
        parts = {w: {i // count: text for i, text in turns.items() if i % count == w} for w in range(count)}
        calls = {w: self.workers[w].step.remote(part) for w, part in parts.items() if part}
        ready, _ = ray.wait(list(calls.values()), num_returns=len(calls),
                            timeout=self.config.timeout_s + 2 * DEADLINE_GRACE_S)
        results: dict[int, StepResult] = {}
        for w, call in calls.items():
            answers, stuck = None, 0
            if call not in ready:  # hung beyond its own deadlines (a tool holding the process)
                self._restart(w)
                reason = "did not answer"
            else:
                try:
                    answers, stuck = ray.get(call)
                except RayActorError:  # its process died (Ray starts it again)
                    reason = "died"
            if answers is None:
                answers = {j: failed_step(f"the environment worker {reason}") for j in parts[w]}
            if stuck:
                self.to_restart.add(w)
            results.update({j * count + w: answer for j, answer in answers.items()})
        return results

    def _start(self):
        placement = NodeAffinitySchedulingStrategy(self.node_id, soft=True)
        return EnvWorker.options(num_cpus=self.config.num_cpus, scheduling_strategy=placement).remote(self.config)

    def _restart(self, w: int) -> None:
        """A new process in the worker's place; the old one is killed (its stuck calls with it)."""
        ray.kill(self.workers[w], no_restart=True)
        self.workers[w] = self._start()
        self.restarts += 1
