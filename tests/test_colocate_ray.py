"""cluster.colocate with weight_sync.method=broadcast under Ray: learner rank 0 and rollout worker 0
share one bundle; the worker's weights are released while the learner trains and come back, filled
by a bucketed gloo broadcast, equal to the learner's."""
import pytest
import torch

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, resolve_paths  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.models import load_model  # noqa: E402
from tests.test_weight_publish_ray import shift_learner  # noqa: E402

pytestmark = pytest.mark.integration


def placement(actor) -> str:
    return ray.util.get_current_placement_group().id.hex()


def weights_sum(worker) -> float:
    return sum(float(p.detach().double().sum()) for p in worker.sampler.model.parameters())


def test_colocated_worker_is_released_then_refilled_by_the_broadcast(tiny_model_dir):
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "rollout.num_workers=1", "rollout.num_cpus=0.5", "rollout.dtype=float32",
        "learner.num_ranks=1", "learner.num_cpus=0.5", "reward.num_workers=1", "reward.num_cpus=0.5",
        "learner.micro_batch_size=4", "cluster.include_dashboard=false", "cluster.colocate=true",
        "weight_sync.method=broadcast", "weight_sync.bucket_mib=0.05", "sync_timeout_s=30"]))
    expected_model = load_model(tiny_model_dir)
    ray.init(num_cpus=2, namespace=cfg.cluster.namespace)
    try:
        workers = RayWorkers(cfg)
        try:
            learner, rollout = workers.learners.actors[0], workers.rollouts.actors[0]
            assert ray.get(learner.__ray_call__.remote(placement)) == ray.get(rollout.__ray_call__.remote(placement))
            assert workers.shared_placement.bundle_specs == [{"CPU": 1.0}]
            for version in (1, 2):
                released = ray.get(rollout.release.remote())  # what RayWorkers.train does before training
                assert released["released"] == 0 < released["generate"]
                ray.get(learner.__ray_call__.remote(shift_learner, 0.25, version))
                workers.sync_weights(version)  # restores, then broadcasts
                with torch.no_grad():
                    for p in expected_model.parameters():
                        p.add_(0.25)
                expected = sum(float(p.detach().double().sum()) for p in expected_model.parameters())
                assert ray.get(rollout.__ray_call__.remote(weights_sum)) == pytest.approx(expected, rel=1e-9)
            assert workers.rollout_versions() == [2]
            logged = workers.phase_memory  # what step_done adds to the step's metrics
            assert logged["weight_sync/buckets"] > 1 and logged["memory/rollout_restored_gib"] > 0
        finally:
            workers.shutdown()
    finally:
        ray.shutdown()
