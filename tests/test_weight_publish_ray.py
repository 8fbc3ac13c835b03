"""Weight publish on a two-node fake cluster (ray.cluster_utils.Cluster): the rollout worker on the
learner's node maps learner rank 0's shared slot in place, the one on the other node gets the same
bytes through the object store, and both end up with exactly the learner's weights, publish after
publish."""
import pytest
import torch

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from actors.controller import RayWorkers, resolve_paths  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.models import dtype_from_name, load_model, publish_dtype  # noqa: E402

pytestmark = pytest.mark.integration


def shift_learner(rank, shift: float, version: int) -> None:
    with torch.no_grad():
        for p in rank.engine.module.parameters():
            p.add_(shift)
    rank.version = version


def rollout_view(worker) -> tuple[str, float, int]:
    """(node, sum of the worker's weights, shared slots it has mapped)."""
    total = sum(float(p.detach().double().sum()) for p in worker.sampler.model.parameters())
    return worker.node_id, total, len(worker.shared_weights._mapped)


def test_rollout_workers_on_and_off_the_learners_node_load_the_published_weights(tiny_model_dir):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"rollout": 1}})
    cluster.add_node(num_cpus=1, resources={"rollout": 1})  # the second rollout worker lands here
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "rollout.num_workers=2", "rollout.resources={rollout: 1}",
        "rollout.num_cpus=0.5", "learner.num_ranks=1", "learner.num_cpus=0.5", "reward.num_workers=1",
        "reward.num_cpus=0.5", "learner.micro_batch_size=4", "cluster.include_dashboard=false"]))
    expected_model = load_model(tiny_model_dir)
    try:
        ray.init(address=cluster.address, namespace=cfg.cluster.namespace)
        workers = RayWorkers(cfg)
        learner, head = workers.learners.actors[0], cluster.head_node.node_id
        dtype = dtype_from_name(publish_dtype(workers.precision()))  # the rollout workers' own, resolved here
        try:
            for version in (1, 2, 3):  # slots 1, 0, 1: the second pass reuses a slot
                ray.get(learner.__ray_call__.remote(shift_learner, 0.25, version))
                workers.sync_weights(version)
                with torch.no_grad():
                    for p in expected_model.parameters():
                        p.add_(0.25)
                expected = sum(float(p.detach().to(dtype).double().sum()) for p in expected_model.parameters())
                views = ray.get([w.__ray_call__.remote(rollout_view) for w in workers.rollouts.actors])
                assert sorted(node == head for node, _, _ in views) == [False, True]  # one on each node
                for node, total, mapped in views:
                    assert total == pytest.approx(expected, rel=1e-9), (node == head, version)
                    assert mapped == (min(version, 2) if node == head else 0)  # each slot mapped once
                sent = ray.get(learner.__ray_call__.remote(lambda rank: rank._sent_bytes[0]))
                assert sent == version  # the far worker asked for this version's bytes
            assert workers.rollout_versions() == [3, 3]
        finally:
            workers.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()
