"""Cluster operations without a cluster: resource and elastic-rollout config, the scaling policy,
the graceful stop on SIGTERM, and `python -m rl_system plot`."""
import json
import os
import signal
import subprocess
import sys

import matplotlib.image
import pytest

from rl_system.config import ConfigError, load_config
from rl_system.elastic import RolloutScaler
from rl_system.plot import plot_run
from rl_system.shutdown import GracefulStop


def test_role_resources_and_elastic_bounds_load():
    cfg = load_config("configs/r1_zero.yaml", [
        "rollout.resources={rollout: 1}", "rollout.memory=2e9", "rollout.min_workers=1", "rollout.max_workers=6",
        "learner.placement_strategy=STRICT_SPREAD", "learner.resources={learner: 1}", "reward.resources={reward: 0.5}"])
    assert cfg.rollout.resources == {"rollout": 1} and cfg.rollout.memory == 2e9
    assert cfg.rollout.worker_bounds() == (1, 6)
    assert cfg.learner.placement_strategy == "STRICT_SPREAD" and cfg.reward.resources == {"reward": 0.5}
    assert load_config("configs/r1_zero.yaml").rollout.worker_bounds() == (2, 2)  # not elastic by default


@pytest.mark.parametrize("override, message", [
    ("rollout.resources={GPU: 1}", "config key 'rollout.resources': expected custom resource names only"),
    ("learner.resources={learner: -1}", "config key 'learner.resources.learner': expected a number >= 0"),
    ("reward.memory=-5", "config key 'reward.memory': expected a number >= 0"),
    ("rollout.max_workers=1", "config key 'rollout.max_workers': expected >= rollout.num_workers (2)"),
    ("rollout.min_workers=3", "config key 'rollout.min_workers': expected <= rollout.num_workers (2)"),
    ("rollout.scale_up_above=0.1", "config key 'rollout.scale_up_above'"),
    ("learner.placement_strategy=TIGHT", "config key 'learner.placement_strategy'"),
    ("cluster.metrics_export_port=99999", "config key 'cluster.metrics_export_port'"),
])
def test_bad_resource_values_give_one_line_errors(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("configs/r1_zero.yaml", [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def step(generate_s: float, step_s: float = 10.0) -> dict:
    return {"time/generate": generate_s, "time/step": step_s}


def test_scaler_grows_while_generation_dominates_and_shrinks_when_it_does_not():
    scaler = RolloutScaler(minimum=1, maximum=3, up_above=0.6, down_below=0.3, cooldown_steps=0, target=1)
    assert scaler.decide(1, step(8), pending=0) == 2
    assert scaler.decide(2, step(8), pending=1) == 2  # the last request still waits for its node
    assert scaler.decide(3, step(8), pending=0) == 3
    assert scaler.decide(4, step(9), pending=0) == 3  # at the maximum
    assert scaler.decide(5, step(4.5), pending=0) == 3  # between the thresholds: keep
    assert scaler.decide(6, step(1), pending=0) == 2
    assert scaler.decide(7, step(1), pending=0) == 1
    assert scaler.decide(8, step(0), pending=0) == 1  # at the minimum


def test_scaler_cooldown_and_fixed_pool():
    scaler = RolloutScaler(minimum=1, maximum=4, up_above=0.6, down_below=0.3, cooldown_steps=2, target=1)
    assert [scaler.decide(s, step(9), pending=0) for s in range(1, 6)] == [2, 2, 3, 3, 4]
    fixed = RolloutScaler.from_config(load_config("configs/r1_zero.yaml").rollout)
    assert not fixed.elastic and fixed.decide(1, step(10), pending=0) == 2


def test_sigterm_inside_graceful_stop_only_sets_the_flag_and_the_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)  # without the handler, pytest itself would die here
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_signal_gets_the_previous_behaviour():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with GracefulStop() as stop:
                os.kill(os.getpid(), signal.SIGINT)
                assert stop.requested
                os.kill(os.getpid(), signal.SIGINT)  # the user insists: Ctrl-C again interrupts at once
    finally:
        signal.signal(signal.SIGINT, previous)


def write_run(run_dir, steps: int = 4) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({
                "step": s, "time": 1.7e9 + s, "reward/format": 0.1 * s, "reward/accuracy": 0.2 * s,
                "reward/total": 0.25 * s, "accuracy": 0.2 * s, "format_rate": 0.1 * s, "loss": 0.5 / s, "kl": 0.01 * s,
                "grad_norm": 1.0, "time/generate": 2.0, "time/step": 5.0, "tokens_per_s/generate": 100.0 + s,
                "buffer/size": 0, "buffer/trained": 4 * s, "staleness/max": 0, "groups/generated": 4 * s,
                "rollout/workers": 1 + (s > 2), "note": "text values are skipped"}) + "\n")


def test_plot_writes_one_png_per_metric_group(tmp_path):
    run = tmp_path / "run"
    write_run(run)
    written = plot_run(run)
    assert set(written) == {"reward", "quality", "learner", "time", "tokens_per_s", "buffer", "staleness", "groups",
                            "rollout"}
    for path in written.values():
        assert path.parent == run / "plots" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(written["reward"]).shape
    assert width > height > 100  # three charts side by side: format, accuracy, total


def test_plot_command(tmp_path):
    write_run(tmp_path / "run")
    ok = subprocess.run([sys.executable, "-m", "rl_system", "plot", str(tmp_path / "run"), "--output",
                         str(tmp_path / "png")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == sorted(
        line.rsplit("/", 1)[-1] for line in ok.stdout.split())
    missing = subprocess.run([sys.executable, "-m", "rl_system", "plot", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and missing.stderr.strip().startswith("error:") and "metrics" in missing.stderr


LISTENERS = """import sys, time
from rl_system.cli import local_ray_on_loopback
local_ray_on_loopback(sys.argv[1])
import psutil, ray
ray.init(num_cpus=1, include_dashboard=False, _metrics_export_port=int(sys.argv[2]))
try:
    for _ in range(60):  # the exporter starts with the node's agent, a few seconds after init
        found = [c.laddr.ip for c in psutil.net_connections('tcp') if c.status == 'LISTEN' and c.laddr.port == int(sys.argv[2])]
        if found:
            break
        time.sleep(0.5)
    print(' '.join(found))
finally:
    ray.shutdown()
"""


def test_a_local_ray_serves_its_metrics_on_loopback_only():
    """Ray binds its metrics exporter (Prometheus text, no auth) to every interface of a node whose
    address is not loopback; a local run's node is on 127.0.0.1 (docs/security.md)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    done = subprocess.run([sys.executable, "-c", LISTENERS, "", str(port)], capture_output=True, text=True,
                          timeout=180, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.stdout.split() == ["127.0.0.1"], done.stdout + done.stderr[-3000:]
