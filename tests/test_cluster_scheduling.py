"""A run that does not fit its cluster says so instead of hanging: on a `ray start --head` with 2
CPUs, the demo config stops at once with the shortfall and the fix; a run that fits only once other
work ends waits, then gives up after cluster.schedule_timeout_s with the same kind of line."""
import os
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from actors.scheduling import autoscaler_node_types  # noqa: E402
from tests.cluster_head import start_head  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_head():
    head = start_head(num_cpus=2, include_dashboard=False)
    try:
        yield head
    finally:
        head.stop()


def train_on(head, model_dir: str, run_dir, *overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "rl_system", "train", "--config", "configs/r1_zero.yaml",
                             f"model.path={model_dir}", f"output_dir={run_dir}", f"cluster.address={head.address}",
                             *overrides], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "RAY_AUTH_MODE": "token"})
    return result, time.monotonic() - start


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_demo_config_on_a_two_cpu_head_fails_fast_with_the_fix(small_head, tiny_model_dir, tmp_path):
    result, seconds = train_on(small_head, tiny_model_dir, tmp_path / "run")
    assert result.returncode != 0
    assert seconds < 30, f"took {seconds:.0f} s"
    [line] = error_lines(result) or [result.stderr[-3000:]]
    assert "this run can never be scheduled: it asks for CPU 4.5 (learner 2 x 1, rollout 2 x 1, reward 1 x 0.5)" in line
    assert "the cluster (no autoscaler to add nodes) has CPU 2" in line
    assert "`ray start --head --num-cpus 5`" in line, line
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_a_run_that_fits_once_other_work_ends_waits_then_gives_up(small_head, tiny_model_dir, tmp_path):
    ray.init(address=small_head.address)
    try:
        @ray.remote(num_cpus=1)
        class Holder:
            pass

        assert autoscaler_node_types() == ("none", [])  # `ray start` without an autoscaling config
        holder = Holder.remote()
        ray.get(holder.__ray_ready__.remote())
        # 1.5 CPUs: fits the head's 2, not the 1 the holder leaves free.
        result, seconds = train_on(small_head, tiny_model_dir, tmp_path / "run", "learner.num_ranks=1",
                                   "learner.num_cpus=0.5", "rollout.num_workers=1", "rollout.num_cpus=0.5",
                                   "cluster.schedule_timeout_s=3")
        ray.kill(holder)
    finally:
        ray.shutdown()
    assert result.returncode != 0
    assert "waiting for resources: this run asks for learner 1 x {CPU: 0.5}, rollout 1 x {CPU: 0.5}, " \
           "reward 1 x {CPU: 0.5}; other actors or jobs hold part of the cluster now" in result.stdout
    [line] = error_lines(result)
    assert line.startswith("error: gave up after cluster.schedule_timeout_s=3 s: this run asks for"), line
    assert 3 <= seconds < 60
