"""Before any actor starts: does the run fit on this cluster? Reads the live nodes and the
autoscaler's node types, and runs rl_system/resources.py's plan over them."""
from __future__ import annotations

import json
import time

import ray
import ray._private.state
from ray._private import ray_constants
from ray.autoscaler.sdk import request_resources
from ray.experimental.internal_kv import _internal_kv_get

from rl_system.resources import IGNORED, Demand, NodeType, SchedulingError, Verdict, plan, request_bundles


def _usable(resources: dict) -> dict:
    return {k: float(v) for k, v in resources.items() if k not in IGNORED and not k.startswith("node:")
            and not k.startswith("accelerator_type:")}


STATUS_WAIT_S = 15.0


def autoscaler_node_types() -> tuple[str, list[NodeType]]:
    """What the cluster's autoscaler can add: ("known", its node types) from the v2 autoscaler's
    config in the GCS; ("unknown", []) for a v1 autoscaler with a config (it keeps its node types
    to itself); ("none", []) for a fixed cluster, where `ray start` runs a read-only one whose node
    types are named after the nodes themselves."""
    config = ray._private.state.state.get_cluster_config()
    if config is not None:
        return "known", [NodeType(g.name, _usable(dict(g.resources)), g.max_count)
                         for g in config.node_group_configs if g.max_count != 0]
    deadline = time.monotonic() + STATUS_WAIT_S
    while not (mapping := _node_types_in_status()) and time.monotonic() < deadline:
        time.sleep(0.5)  # a head that just started: its monitor has not reported its nodes yet
    read_only = all(kind == f"node_{node_id}" for node_id, kind in mapping.items())
    return ("none" if read_only else "unknown"), []


def _node_types_in_status() -> dict:
    """Node id -> node type name, from the autoscaler monitor's last report ({} before its first)."""
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    return (json.loads(status).get("autoscaler_report") or {}).get("node_type_mapping") or {} if status else {}


def check(demands: list[Demand]) -> Verdict:
    free = [_usable(r) for r in ray._private.state.available_resources_per_node().values()]
    total = [_usable(r) for r in ray._private.state.total_resources_per_node().values()]
    verdict = plan(demands, free, total, [])
    if verdict.fits_now:
        return verdict
    kind, types = autoscaler_node_types()
    return plan(demands, free, total, types, kind)


def check_on_cluster(address: str, stages: list[list[Demand]]) -> list[Verdict]:
    """Each stage's verdict on the running cluster at `address`, joined as a driver that starts no actor
    (`--dry-run`); a cluster that cannot be reached is a one-line SchedulingError."""
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except ConnectionError as e:
        raise SchedulingError(f"cluster.address '{address}': {' '.join(str(e).split())}") from None
    try:
        return [check(stage) for stage in stages]
    finally:
        ray.shutdown()


def wait_until_schedulable(stages: list[list[Demand]], timeout_s: float, log=print,
                           timeout_key: str = "cluster.schedule_timeout_s") -> None:
    """Returns once the first stage fits in the cluster's free resources; raises SchedulingError at
    once if some stage can never fit, or after `timeout_s` of waiting. While it waits, the
    autoscaler is asked for the stage's bundles (request_resources), as a pending actor would."""
    for stage in stages[1:]:  # later stages: only "never" matters now
        verdict = check(stage)
        if not verdict.fits_eventually:
            raise SchedulingError(verdict.message)
    stage = stages[0]
    verdict = check(stage)
    if verdict.fits_now:
        return
    if not verdict.fits_eventually:
        raise SchedulingError(verdict.message)
    log(f"{verdict.message}; giving up after {timeout_key}={timeout_s:g} s", flush=True)
    request_resources(bundles=request_bundles(stage))
    deadline = time.monotonic() + timeout_s
    try:
        while not (verdict := check(stage)).fits_now:
            if time.monotonic() > deadline:
                raise SchedulingError(f"gave up after {timeout_key}={timeout_s:g} s: "
                                      f"{verdict.message.removeprefix('waiting for resources: ')}")
            time.sleep(1.0)
    finally:
        request_resources(bundles=[])
    log("resources available: starting the run's actors", flush=True)
