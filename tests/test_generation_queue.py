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
    """Problem 0 takes 3 s, every other 0.05 s; each group records which worker made it."""

    def __init__(self, cfg, worker_index: int):
        self.index = worker_index

    def generate(self, problems, greedy=False, max_new_tokens=None, n=None, prefills=None, stop_strings=None):
        time.sleep(sum(3.0 if p.problem_id == 0 else 0.05 for p in problems))
        groups = [PromptGroup(p, [1], [[2]], ["x"], [[0.0]], [False], self.index) for p in problems]
        return (*groups, len(groups))


def test_a_slow_chunk_holds_up_only_its_own_worker(tmp_path):
    cfg = load_config("configs/r1_zero.yaml", ["rollout.num_workers=2", "rollout.chunk_prompts=1",
                                               "cluster.include_dashboard=false", "reward.num_cpus=0.5"])
    ray.init(num_cpus=4, include_dashboard=False)
    try:
        workers = RayWorkers(cfg, with_learner=False, rollout_cls=SleepyRolloutWorker)
        try:
            problems = [Problem(i, f"{i} + 1", str(i + 1)) for i in range(10)]
            groups = workers.fetch(workers.generate(problems))
        finally:
            workers.shutdown()
    finally:
        ray.shutdown()
    assert [g.problem.problem_id for g in groups] == list(range(10))  # in the order asked for
    by_worker = {w: [g.problem.problem_id for g in groups if g.policy_version == w] for w in (0, 1)}
    # Worker 0 got the slow problem and, queued behind it (2 calls a worker), problem 2; every
    # later chunk went to worker 1 as it came free. Round-robin would have given worker 0 five.
    assert by_worker == {0: [0, 2], 1: [1, 3, 4, 5, 6, 7, 8, 9]}


def test_chunk_size_defaults_to_a_share_per_worker_cut_to_one_generation_batch():
    rc = load_config("configs/r1_zero.yaml", []).rollout  # max_batch_sequences 64
    assert chunk_size(4, 2, 8, rc) == 2  # the demo: one batched call per worker, as before the queue
    assert chunk_size(1024, 64, 16, rc) == 4  # 16 a worker, cut to 64 sequences: 4 chunks each
    assert chunk_size(3, 8, 8, rc) == 1
    assert chunk_size(64, 2, 1, rc) == 32  # greedy evaluation
    with_chunk = load_config("configs/r1_zero.yaml", ["rollout.chunk_prompts=5"]).rollout
    assert chunk_size(1024, 64, 16, with_chunk) == 5
