"""A Ray head of the cluster tests' own: `ray start --head --block` on free ports and in its own
temp dir. It is stopped by signalling that one process and ending what it started, by pid, because
`ray stop` (and AutoscalingCluster.shutdown, which calls it) would end every Ray on the machine.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalHead:
    process: subprocess.Popen
    temp_dir: str
    gcs_port: int
    dashboard_port: int
    metrics_port: int
    env: dict = field(repr=False)

    @property
    def address(self) -> str:
        return f"{_node_ip()}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def log(self) -> str:
        return Path(self.temp_dir, "ray_start.log").read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to `ray start --block` ends its node's processes; stragglers are killed by pid."""
        try:
            started = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        _, alive = psutil.wait_procs(started, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        subprocess.run(["rm", "-rf", self.temp_dir], check=False)


def _node_ip() -> str:
    import ray._private.services

    return ray._private.services.get_node_ip_address()


def start_head(num_cpus: int, resources: dict | None = None, autoscaling_config: dict | None = None,
               include_dashboard: bool = True, extra_env: dict | None = None, timeout_s: float = 120.0) -> LocalHead:
    """Starts the head with token auth on and the dashboard on 127.0.0.1; returns once it serves."""
    # Short path: Ray's Unix sockets live under the temp dir and must stay below ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="rlh", dir="/tmp")
    ports = {name: free_port() for name in ("port", "dashboard-port", "metrics-export-port", "dashboard-agent-listen-port",
                                             "dashboard-agent-grpc-port", "runtime-env-agent-port", "node-manager-port",
                                             "object-manager-port", "ray-client-server-port")}
    cmd = [RAY, "start", "--head", "--block", f"--temp-dir={temp_dir}", f"--num-cpus={num_cpus}",
           f"--include-dashboard={str(include_dashboard).lower()}", "--dashboard-host=127.0.0.1",
           *[f"--{name}={port}" for name, port in ports.items()]]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    # The venv first on PATH, as after `source .venv/bin/activate`: a job's `python` is looked up there.
    env = {**os.environ, "PATH": f"{Path(RAY).parent}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
           "RAY_USAGE_STATS_ENABLED": "0", **(extra_env or {})}
    if autoscaling_config is not None:
        # The fake provider starts its nodes against this GCS (by default it would assume port 6379).
        provider = {**autoscaling_config["provider"], "gcs_address": f"{_node_ip()}:{ports['port']}"}
        config_path = Path(temp_dir, "autoscaling.json")
        config_path.write_text(json.dumps({**autoscaling_config, "provider": provider}))
        cmd.append(f"--autoscaling-config={config_path}")
        env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    with open(Path(temp_dir, "ray_start.log"), "w") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    head = LocalHead(process, temp_dir, ports["port"], ports["dashboard-port"], ports["metrics-export-port"], env)
    try:
        _wait_until_serving(head, include_dashboard, timeout_s)
    except BaseException:
        head.stop()
        raise
    return head


def _wait_until_serving(head: LocalHead, include_dashboard: bool, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    address_file = Path(head.temp_dir, "ray_current_cluster")  # written once the node is up
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.process.returncode}:\n{head.log[-3000:]}")
        if address_file.exists() and (not include_dashboard or _answers(head.dashboard_url + "/api/version")):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the Ray head did not come up within {timeout_s:.0f} s:\n{head.log[-3000:]}")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except urllib.error.HTTPError:  # 401 without a token still means the server is up
        return True
    except OSError:
        return False
