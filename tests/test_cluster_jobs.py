"""The product as users run it: `ray start --head` (token auth, dashboard on 127.0.0.1), training
submitted through the Jobs SDK with clusters/runtime_env.yaml, watched with `ray list actors` and
the node's Prometheus endpoint, stopped with `ray job stop`.

One head serves the module. Two jobs run on it at the same time (the machine has 2 cores): a short
one that must succeed, and a long one that is watched and then stopped.
"""
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: E402

from tests.cluster_head import RAY, start_head  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
ROLES = {"learner-0", "rollout-0", "rollout-1", "reward-0", "replay-buffer"}
TINY_RUN = ["num_steps=200", "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
            "learner.micro_batch_size=4", "learner.num_ranks=1", "rollout.num_workers=1", "data.num_eval=4",
            "eval_max_new_tokens=8", "checkpoint_every=0"]


@pytest.fixture(scope="module")
def head():
    # Logical CPUs for both jobs' learners, rollout and reward workers; the machine has fewer.
    # As the README's steps start it: every port of the one-machine cluster on 127.0.0.1.
    head = start_head(num_cpus=6, extra_env={"RAY_metrics_report_interval_ms": "1000",
                                             "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="module")
def client(head):
    return JobSubmissionClient(head.dashboard_url)


def submit(client, model_dir: str, run_dir: Path, *overrides: str) -> str:
    runtime_env = yaml.safe_load((REPO / "clusters/runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)  # what `ray job submit --working-dir .` uploads
    entrypoint = " ".join(["python -m rl_system train --config configs/r1_zero.yaml", f"model.path={model_dir}",
                           f"output_dir={run_dir}", *TINY_RUN, *overrides])
    return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)


def wait_status(client, job_id: str, statuses: set, timeout_s: float) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while (status := client.get_job_status(job_id)) not in statuses:
        assert not status.is_terminal(), f"job {status}:\n{client.get_job_logs(job_id)[-4000:]}"
        assert time.monotonic() < deadline, f"job still {status} after {timeout_s:.0f} s:\n" \
                                            f"{client.get_job_logs(job_id)[-4000:]}"
        time.sleep(1.0)
    return status


def logged_steps(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def ray_list_actors(head) -> list[dict]:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": head.dashboard_url}
    out = subprocess.run([RAY, "list", "actors", "--format", "json", "--limit", "1000"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def scrape(port: int) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text -> metric name -> [(labels, value)]."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    series: dict[str, list] = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$", line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
            series.setdefault(match.group(1), []).append((labels, float(match.group(3))))
    return series


def of_worker(series: dict, worker_id: str) -> dict:
    """The series one process (here: one job's driver) exports."""
    return {name: [(lab, v) for lab, v in entries if lab.get("WorkerId") == worker_id]
            for name, entries in series.items()}


def value(series: dict, name: str, **labels) -> float:
    matches = [v for lab, v in series.get(name, []) if all(lab.get(k) == want for k, want in labels.items())]
    assert len(matches) == 1, (name, labels, series.get(name))
    return matches[0]


@pytest.fixture(scope="module")
def short_job(client, tiny_model_dir, tmp_path_factory):
    """2 steps with evaluation before and after, in its own namespace."""
    run_dir = tmp_path_factory.mktemp("short") / "run"
    submitted = time.monotonic()
    return submit(client, tiny_model_dir, run_dir, "num_steps=2", "cluster.namespace=short-job"), run_dir, submitted


@pytest.fixture(scope="module")
def long_job(client, tiny_model_dir, tmp_path_factory, short_job):
    """A 200-step job, elastic between 1 and 2 rollout workers with a threshold that always asks for
    more: it grows to 2 workers, then keeps training until stopped. Starts with the short job."""
    run_dir = tmp_path_factory.mktemp("long") / "run"
    job_id = submit(client, tiny_model_dir, run_dir, "eval_before=false", "rollout.min_workers=1",
                    "rollout.max_workers=2", "rollout.scale_up_above=0.01", "rollout.scale_down_below=0.0",
                    "rollout.scale_cooldown_steps=0")
    wait_status(client, job_id, {JobStatus.RUNNING}, 120)
    deadline = time.monotonic() + 240
    while not any(m.get("rollout/workers") == 2 for m in logged_steps(run_dir)[:-1]):  # a step after the join
        assert not client.get_job_status(job_id).is_terminal(), client.get_job_logs(job_id)[-4000:]
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-4000:]
        time.sleep(1.0)
    yield job_id, run_dir
    if not client.get_job_status(job_id).is_terminal():
        client.stop_job(job_id)


def test_dashboard_and_metrics_are_local_only_and_the_dashboard_wants_the_token(head):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(head.dashboard_url + "/api/jobs/", timeout=10)  # no token sent
    assert refused.value.code == 401
    node_ip = head.address.rsplit(":", 1)[0]  # the machine's own address, as another host would reach it
    for port in (head.dashboard_port, head.metrics_port):  # the metrics exporter has no auth at all
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"http://{node_ip}:{port}/", timeout=10)
    assert scrape(head.metrics_port)  # while 127.0.0.1 gets it


def test_elastic_rollout_worker_joins_with_current_weights(long_job):
    steps = logged_steps(long_job[1])
    assert steps[0]["rollout/workers"] == 1 and steps[-1]["rollout/workers"] == 2
    assert [m["rollout/target_workers"] for m in steps[1:]] == [2] * (len(steps) - 1)
    # A joiner that generated with old weights would show as lagging groups (max_staleness 0: dropped).
    assert all(m["staleness/max"] == 0 and m["buffer/dropped_stale"] == 0 for m in steps)


def test_ray_list_actors_shows_every_role_by_name(head, long_job):
    ours = [a for a in ray_list_actors(head) if a["state"] == "ALIVE" and a["ray_namespace"] == "rl_system"]
    assert ROLES <= {a["name"] for a in ours}, ours


def test_prometheus_endpoint_has_the_run_metrics_with_sane_values(head, long_job):
    from actors.metrics import MIXTURE_ONLY, PROMETHEUS_NAMES
    from tests.test_cluster_manifests import grafana_metric_names

    prompts = 2
    deadline = time.monotonic() + 90
    while True:  # until one scrape has every metric and a consistent snapshot of a step
        everything = scrape(head.metrics_port)
        try:
            # The long job's driver is the one process with 2 rollout workers in use.
            driver = [lab["WorkerId"] for lab, v in everything.get("ray_rl_rollout_workers", [])
                      if lab["state"] == "active" and v == 2]
            assert len(driver) == 1, everything.get("ray_rl_rollout_workers")
            series = of_worker(everything, driver[0])
            assert PROMETHEUS_NAMES - MIXTURE_ONLY <= {n for n, entries in series.items() if entries}, sorted(series)
            step = value(series, "ray_rl_step")
            groups = {lab["state"]: v for lab, v in series["ray_rl_prompt_groups"]}
            assert step >= 2 and groups["generated"] == groups["scored"] == prompts * step, (step, groups)
            break
        except AssertionError:
            assert time.monotonic() < deadline, f"no complete metrics within 90 s: {sorted(everything)}"
            time.sleep(2.0)
    assert groups["generated"] == groups["trained"] + groups["dropped_stale"] + groups["dropped_overflow"] \
        + groups["in_buffer"] + groups["in_flight"]
    assert groups["dropped_stale"] == groups["dropped_overflow"] == 0
    assert value(series, "ray_rl_steps_total") >= 2
    assert value(series, "ray_rl_generated_tokens_total") > 0
    for reward in ("format", "accuracy", "total"):
        assert 0.0 <= value(series, "ray_rl_reward", reward=reward) <= 1.5
    assert 0.0 <= value(series, "ray_rl_accuracy") <= 1.0 and 0.0 <= value(series, "ray_rl_format_rate") <= 1.0
    assert value(series, "ray_rl_tokens_per_second", phase="generate") > 0
    assert 0 <= value(series, "ray_rl_buffer_size") <= 64
    assert value(series, "ray_rl_staleness_versions", stat="max") == 0
    assert value(series, "ray_rl_reward_failures") == 0
    assert value(series, "ray_rl_step_seconds", phase="step") >= value(series, "ray_rl_step_seconds", phase="train") > 0
    assert math.isfinite(value(series, "ray_rl_learner", stat="loss"))
    assert value(series, "ray_rl_rollout_workers", state="active") == 2
    precision = {(labels["role"], labels["dtype"]) for labels, v in series["ray_rl_precision"] if v == 1}
    assert {role for role, _ in precision} >= {"rollout", "learner"}, precision  # each role's resolved dtype
    for actor, method in (("rollout-0", "generate"), ("reward-0", "score"), ("learner-0", "train")):
        calls = value(series, "ray_rl_actor_call_seconds_count", actor=actor, method=method)
        assert calls >= 2 and value(series, "ray_rl_actor_call_seconds_sum", actor=actor, method=method) > 0
    # Every metric the Grafana dashboard charts is really exported (per-task ones by mixtures only).
    for title, names in grafana_metric_names().items():
        assert names - MIXTURE_ONLY <= set(series), (title, names - set(series))


def test_ray_job_stop_checkpoints_and_shuts_down_cleanly(head, client, long_job):
    job_id, run_dir = long_job
    stop_wait_s = int(yaml.safe_load((REPO / "clusters/runtime_env.yaml").read_text())["env_vars"][
        "RAY_JOB_STOP_WAIT_TIME_S"])
    started = time.monotonic()
    assert client.stop_job(job_id)
    wait_status(client, job_id, {JobStatus.STOPPED}, stop_wait_s + 30)
    took = time.monotonic() - started
    assert took < stop_wait_s / 2, f"{took:.0f} s: the driver did not exit by itself before the SIGKILL deadline"
    logs = client.get_job_logs(job_id)
    stopped = re.search(r"SIGTERM: stopped after step (\d+), checkpoint saved", logs)
    assert stopped, logs[-4000:]
    last = int(stopped.group(1))
    assert logged_steps(run_dir)[-1]["step"] == last < 200
    state = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == last and state["version"] == last
    assert (run_dir / "checkpoint" / "model.safetensors").is_file()
    assert not (run_dir / "checkpoint.partial").exists()
    deadline = time.monotonic() + 30
    while alive := [a["name"] for a in ray_list_actors(head)
                    if a["state"] == "ALIVE" and a["ray_namespace"] == "rl_system"]:
        assert time.monotonic() < deadline, f"still alive after the stop: {alive}"
        time.sleep(1.0)
    print(f"\njob stop: STOPPED {took:.1f} s after `ray job stop`, checkpoint of step {last}")


def test_job_round_trip_succeeds_and_logs_the_final_metrics(client, short_job):
    job_id, run_dir, _ = short_job
    wait_status(client, job_id, {JobStatus.SUCCEEDED}, 300)
    info = client.get_job_info(job_id)
    took = (info.end_time - info.start_time) / 1000
    logs = client.get_job_logs(job_id)
    final = logged_steps(run_dir)[-1]
    assert final["step"] == 2
    line = re.search(r"step +2 +reward (\S+) +acc (\S+) +format (\S+) +loss (\S+)", logs)
    assert line, logs[-4000:]
    assert [float(x) for x in line.groups()] == pytest.approx(
        [final["reward/total"], final["accuracy"], final["format_rate"], final["loss"]], abs=5e-3)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["after"]["num_problems"] == 4 and "Held-out evaluation (4 problems)" in logs
    assert json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    plots = subprocess.run([sys.executable, "-m", "rl_system", "plot", str(run_dir)], capture_output=True, text=True,
                           timeout=120, cwd=REPO)
    assert plots.returncode == 0, plots.stderr[-2000:]
    assert {"reward.png", "time.png", "buffer.png", "groups.png"} <= {p.name for p in (run_dir / "plots").iterdir()}
    print(f"\njob round trip: SUCCEEDED {took:.1f} s after it started (beside the long job)")
