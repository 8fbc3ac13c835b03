"""The generation work queue on a real local Ray (actors/generation_queue.py through RayWorkers):
chunks go to whichever rollout worker is free, so a slow chunk holds up only its own worker, and
the handles come back in the order of the problems. The rollout workers here stand in for
RolloutWorker with a fixed sleep per problem instead of a model (what is tested is the dispatch)."""
import time

import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, chunk_size  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.data import Problem  # noqa: E402
from rl_system.types import PromptGroup  # noqa: E402

pytestmark = pytest.mark.integration


@ray.remote
class SleepyRolloutWorker:
    """Problem 0 takes 3 s, problem 99 8 s, every other 0.05 s; each group records which worker made it."""

    def __init__(self, cfg, worker_index: int):
        self.index = worker_index

    def generate(self, problems, greedy=False, max_new_tokens=None, n=None, prefills=None, stop_strings=None):
        time.sleep(sum({0: 3.0, 99: 8.0}.get(p.problem_id, 0.05) for p in problems))
        groups = [PromptGroup(p, [1], [[2]], ["x"], [[0.0]], [False], self.index) for p in problems]
        return (*groups, len(groups))

    def precision(self) -> dict:  # no model, so no dtype resolved
        return {"role": "rollout", "requested": "auto", "dtype": "none (simulated)", "node_kind": "simulated"}


@pytest.fixture
def sleepy_workers():
    """RayWorkers with two SleepyRolloutWorkers, one problem a call, on a fresh local Ray."""
    cfg = load_config("configs/r1_zero.yaml", ["rollout.num_workers=2", "rollout.chunk_prompts=1",
                                               "cluster.include_dashboard=false", "reward.num_cpus=0.5"])
    ray.init(num_cpus=4, include_dashboard=False)
    try:
        workers = RayWorkers(cfg, with_learner=False, rollout_cls=SleepyRolloutWorker)
        try:
            yield workers
        finally:
            workers.shutdown()
    finally:
        ray.shutdown()


def test_a_slow_chunk_holds_up_only_its_own_worker(sleepy_workers):
    problems = [Problem(i, f"{i} + 1", str(i + 1)) for i in range(10)]
    groups = sleepy_workers.fetch(sleepy_workers.generate(problems))
    assert [g.problem.problem_id for g in groups] == list(range(10))  # in the order asked for
    by_worker = {w: [g.problem.problem_id for g in groups if g.policy_version == w] for w in (0, 1)}
    # Worker 0 got the slow problem and, queued behind it (2 calls a worker), problem 2; every
    # later chunk went to worker 1 as it came free. Round-robin would have given worker 0 five.
    assert by_worker == {0: [0, 2], 1: [1, 3, 4, 5, 6, 7, 8, 9]}


def test_chunk_size_is_one_call_per_worker_for_a_small_request_and_shrinks_for_a_large_one():
    rc = load_config("configs/r1_zero.yaml", []).rollout  # max_batch_sequences 64
    assert chunk_size(4, 4, 2, 8, rc, depth=2) == 2  # the demo: one batched call per worker, as before the queue
    assert chunk_size(2, 4, 2, 8, rc, depth=2) == 2
    assert chunk_size(3, 3, 8, 8, rc, depth=2) == 1
    assert chunk_size(64, 64, 2, 1, rc, depth=2) == 32  # greedy evaluation
    # 1024 prompts x 16 samples on 64 workers: one generation batch (4 prompts) a call while more than
    # 4 calls' worth per queue slot remain, then fewer, down to one prompt for the last calls.
    assert [chunk_size(r, 1024, 64, 16, rc, depth=2) for r in (1024, 512, 300, 128, 100, 1)] == [4, 4, 3, 1, 1, 1]
    with_chunk = load_config("configs/r1_zero.yaml", ["rollout.chunk_prompts=5"]).rollout
    assert chunk_size(1024, 1024, 64, 16, with_chunk, depth=2) == 5


def test_groups_are_scored_as_their_call_ends_while_a_slow_call_still_generates(sleepy_workers):
    """generate(score=True): the fast problems' groups are scored, by the real rule reward workers,
    while problem 99 (8 s) is still generating; score() then returns every group in order."""
    workers = sleepy_workers
    # Worker 0 takes 99 and, queued behind it, 2; worker 1 takes 1, 3, 4 and 5 as it comes free.
    problems = [Problem(i, f"{i} + 1", str(i + 1)) for i in (99, 1, 2, 3, 4, 5)]
    refs = workers.queue.resolve(workers.generate(problems, score=True))
    fast_scored = [_scored_within(workers, refs[i], timeout_s=5.0) for i in (1, 3, 4, 5)]
    slow_still_generating = not ray.wait([workers._generating[refs[0]].receipt], timeout=0)[0]
    scored, summaries = workers.score(refs)
    groups = ray.get(scored)
    assert fast_scored == [True] * 4 and slow_still_generating
    assert [g.problem.problem_id for g in groups] == [99, 1, 2, 3, 4, 5]  # in the order asked for
    assert [s["completions"] for s in summaries] == [1] * 6 and all(g.rewards for g in groups)


def _scored_within(workers, ref, timeout_s: float) -> bool:
    """Whether the group behind `ref` has been scored (its score call ended) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with workers.queue.lock:
            scoring = workers._scoring.get(ref)
        if scoring is not None:
            return bool(ray.wait([scoring[0].receipt], timeout=max(0.0, deadline - time.monotonic()))[0])
        time.sleep(0.01)
    return False
