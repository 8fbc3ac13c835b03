"""Environment workers on a real local Ray (actors/env_worker.py): a tool that hangs costs its own
trajectory a timeout, one that kills its process costs that worker's trajectories an error, and
neither blocks the others or the next rollout (the worker is restarted). The environment is a
user's one loaded by import path (tests/env_fixtures.py:MisbehavingEnv); no model is needed, since
what is tested is where the calls run."""
import time

import pytest

ray = pytest.importorskip("ray")

from actors.env_worker import RayEnvs  # noqa: E402
from rl_system.envs import EnvConfig  # noqa: E402

pytestmark = pytest.mark.integration

CONFIG = EnvConfig(name="tests.env_fixtures:MisbehavingEnv", timeout_s=1.0, num_workers=2, max_observation_chars=100)


@pytest.fixture(scope="module")
def envs():
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        yield RayEnvs(CONFIG, ray.get_runtime_context().get_node_id())
    finally:
        ray.shutdown()


def call(text: str) -> str:
    return f"<tool>{text}</tool>"


def test_calls_are_answered_by_each_trajectorys_own_environment(envs):
    assert envs.reset([{"question": str(i)} for i in range(5)]) == [None] * 5
    answers = envs.step({i: call(f"echo {i}") for i in (0, 1, 3, 4)})
    assert {i: a.observation for i, a in answers.items()} == {i: f"<result>echo {i}</result>" for i in (0, 1, 3, 4)}
    flood = envs.step({2: call("flood")})[2].observation
    assert len(flood) < 200 and "[truncated: 999900 more characters]" in flood


def test_a_hanging_tool_times_out_alone_and_its_worker_is_restarted_before_the_next_rollout(envs):
    envs.reset([{}] * 4)
    start = time.perf_counter()
    answers = envs.step({0: call("hang"), 1: call("b"), 2: call("c"), 3: call("d")})
    elapsed = time.perf_counter() - start
    assert answers[0].done and answers[0].info["error"] and "did not answer within 3 s" in answers[0].observation
    assert [answers[i].observation for i in (1, 2, 3)] == ["<result>b</result>", "<result>c</result>",
                                                            "<result>d</result>"]
    assert elapsed < 6  # the deadline (timeout_s + grace), not the hour the tool would take
    restarts = envs.restarts
    envs.reset([{}] * 2)
    assert envs.restarts == restarts + 1  # the worker still running the hung call got a fresh process
    assert envs.step({0: call("again")})[0].observation == "<result>again</result>"


def test_a_tool_that_kills_its_process_costs_only_that_workers_trajectories(envs):
    envs.reset([{}] * 4)
    answers = envs.step({0: call("a"), 1: call("crash"), 2: call("c"), 3: call("d")})
    assert [answers[i].observation for i in (0, 2)] == ["<result>a</result>", "<result>c</result>"]
    for i in (1, 3):  # trajectories 1 and 3 lived on the worker that died
        assert answers[i].done and answers[i].info["error"] and "environment worker died" in answers[i].observation
    envs.reset([{}] * 2)  # Ray restarted it; reset runs again there if it was still starting
    assert envs.step({1: call("back")})[1].observation == "<result>back</result>"


def test_python_tool_attacks_on_env_workers_are_contained_and_counted(envs):
    """The python tool's jail inside Ray's environment workers (bwrap started from an actor): attacks from
    tests/test_python_jail.py come back as counted tool errors, and the trajectories go on."""
    from tests.test_python_jail import ATTACKS

    names = ["fork-bomb", "memory", "ctypes-new-user-namespace", "raw-system-calls", "see-host-processes", "cpu"]
    config = EnvConfig(name="python", python_enabled=True, timeout_s=2.0, python_cpu_s=1, num_workers=2,
                       max_observation_chars=2000)
    python = RayEnvs(config, ray.get_runtime_context().get_node_id())
    python.reset([{}] * len(names))
    fill = {"escaped": "'ESC' + 'APED'", "token": "no-such-host-process"}
    answers = python.step({i: call(ATTACKS[name].format(**fill)) for i, name in enumerate(names)})
    for i, name in enumerate(names):
        assert answers[i].info["tool_call"] and answers[i].info["error"], (name, answers[i].observation)
        assert not answers[i].done and "ESCAPED" not in answers[i].observation, (name, answers[i].observation)
