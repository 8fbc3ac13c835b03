"""Elastic rollout on Ray's fake multi-node autoscaler (ray.cluster_utils.AutoscalingCluster).

Steps where generation dominates make the controller ask the autoscaler for rollout capacity
(request_resources); nodes are added, new rollout workers start on them and join the pool. Steps
where it does not retire the extra workers; the autoscaler then removes the idle nodes.
"""
import copy
import json
import time
from pathlib import Path

import jsonschema
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import AutoscalingCluster  # noqa: E402

from actors.controller import RayWorkers, resolve_paths  # noqa: E402
from actors.scheduling import autoscaler_node_types  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.data import load_splits  # noqa: E402
from tests.cluster_head import start_head  # noqa: E402

pytestmark = pytest.mark.integration

NO_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
               "head_start_ray_commands", "worker_start_ray_commands")


class LocalAutoscalingCluster(AutoscalingCluster):
    """AutoscalingCluster with the fake-provider base config built here (the Ray 2.60 wheel lacks
    the example.yaml it reads) and the head started and stopped by tests/cluster_head.py (its own
    start and shutdown run `ray stop --force`, which would end every Ray on this machine)."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False, **config_kwargs):
        config = {
            "cluster_name": "fake_multinode", "max_workers": 8, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True},
            "available_node_types": {**copy.deepcopy(worker_node_types), "ray.head.default": {
                "resources": head_resources, "node_config": {}, "max_workers": 0}},
            "head_node_type": "ray.head.default", "auth": {"ssh_user": "ubuntu"}, "docker": {},
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], **{key: [] for key in NO_COMMANDS},
        }
        config.update(config_kwargs)
        return config

    def start(self):
        resources = dict(self._head_resources)
        self.head = start_head(num_cpus=resources.pop("CPU"), resources=resources, autoscaling_config=self._config,
                               include_dashboard=False)

    def shutdown(self):
        self.head.stop()


def step_metrics(generate_s: float, step_s: float = 10.0) -> dict:
    """A step's metrics as r1_zero.train hands them to step_done; only the generation share varies."""
    return {"time/generate": generate_s, "time/step": step_s, "tokens_per_s/step": 10.0, "accuracy": 0.0,
            "format_rate": 0.0, "buffer/size": 0, "groups/generated": 0, "groups/scored": 0, "buffer/trained": 0,
            "buffer/dropped_stale": 0, "buffer/dropped_overflow": 0, "buffer/in_flight": 0}


def alive_nodes() -> int:
    return sum(node["Alive"] for node in ray.nodes())


def wait_for(condition, timeout_s: float, what: str, tick=None) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s:.0f} s"
        if tick:
            tick()
        time.sleep(1.0)
    return time.monotonic() - start


def test_rollout_workers_follow_generation_demand_onto_new_nodes_and_back(tiny_model_dir):
    # The head holds one rollout slot; each added node one more.
    cluster = LocalAutoscalingCluster(
        head_resources={"CPU": 2, "rollout": 1},
        worker_node_types={"rollout": {"resources": {"CPU": 1, "rollout": 1}, "node_config": {},
                                       "min_workers": 0, "max_workers": 2}})
    jsonschema.validate(cluster._config, json.loads(
        (Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text()))
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "rollout.num_workers=1", "rollout.min_workers=1", "rollout.max_workers=3",
        "rollout.resources={rollout: 1}", "rollout.num_cpus=1", "rollout.scale_cooldown_steps=0",
        "rollout.group_size=2", "rollout.max_new_tokens=4", "learner.micro_batch_size=4", "reward.num_cpus=0.5",
        "data.num_eval=4"]))
    started = time.monotonic()
    cluster.start()
    workers = None
    try:
        ray.init(address=cluster.head.address, namespace=cfg.cluster.namespace)
        head_up = time.monotonic() - started
        # Ray's v1 autoscaler keeps its node types to itself: a run that does not fit yet waits for it.
        assert autoscaler_node_types() == ("unknown", [])
        workers = RayWorkers(cfg, with_learner=False)
        assert len(workers.rollouts) == 1 and alive_nodes() == 1
        steps = iter(range(1, 10**6))

        # Generation takes 90% of each step: one more worker per step, while none is still starting.
        grow_s = wait_for(lambda: len(workers.rollouts) == 3, 240, "three rollout workers",
                          tick=lambda: workers.step_done(next(steps), step_metrics(generate_s=9.0)))
        assert alive_nodes() == 3
        assert ray.cluster_resources()["rollout"] == 3 and ray.available_resources().get("rollout", 0) == 0
        nodes = ray.get([w.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                         for w in workers.rollouts.actors])
        assert len(set(nodes)) == 3  # one worker on the head and one on each new node
        problems = load_splits(cfg.data)[0][:3]
        groups = workers.fetch(workers.generate(problems))
        assert [g.problem for g in groups] == problems and all(len(g.completions) == 2 for g in groups)

        # Generation falls to 5% of the step: the extra workers retire, then their nodes go.
        retire_s = wait_for(lambda: len(workers.rollouts) == 1, 30, "one rollout worker",
                            tick=lambda: workers.step_done(next(steps), step_metrics(generate_s=0.5)))
        assert workers.rollouts.names == ["rollout-0"] and not workers.rollouts.pending
        shrink_s = wait_for(lambda: alive_nodes() == 1, 180, "idle rollout nodes removed")
        print(f"\nautoscaling: head up {head_up:.1f} s, grown to 3 workers on 3 nodes in {grow_s:.1f} s, "
              f"retired in {retire_s:.1f} s, nodes removed {shrink_s:.1f} s later; "
              f"total {time.monotonic() - started:.1f} s")
    finally:
        if workers is not None and ray.is_initialized():
            workers.shutdown()
        ray.shutdown()
        cluster.shutdown()
