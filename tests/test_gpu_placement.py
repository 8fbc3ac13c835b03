"""GPU-correct placement without a GPU: Ray hands out logical GPU ids on this CPU machine and sets
CUDA_VISIBLE_DEVICES for each actor exactly as on a GPU node, so the device index every role
computes from them (rl_system.models.visible_gpu_index) is tested here against Ray itself."""
import pytest

from rl_system.config import ConfigError, load_config
from rl_system.models import visible_gpu_index


@pytest.mark.parametrize("assigned, visible, index", [
    ([], None, 0),                 # no GPU: the CPU, LOCAL_RANK 0
    (["3"], "3", 0),               # Ray narrowed visibility to the assigned GPU: it is cuda:0
    ([2], "2,3", 0),
    (["3"], "2,3", 1),             # two GPUs visible, the second one assigned
    (["5"], None, 5),              # visibility not narrowed (RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES)
    (["5"], "", 5),
])
def test_visible_gpu_index(assigned, visible, index):
    assert visible_gpu_index(assigned, visible) == index


def test_an_assigned_gpu_that_is_not_visible_is_an_error():
    with pytest.raises(RuntimeError, match="GPU 4 assigned by Ray is not among CUDA_VISIBLE_DEVICES=0,1"):
        visible_gpu_index(["4"], "0,1")


def test_fractional_learner_gpus_only_for_one_rank():
    with pytest.raises(ConfigError, match="'learner.num_gpus': expected 0, 1 .* or a fraction with learner.num_ranks=1"):
        load_config("configs/r1_zero.yaml", ["learner.num_gpus=0.5"])  # 2 ranks would share one GPU under NCCL
    with pytest.raises(ConfigError, match="'learner.num_gpus'"):
        load_config("configs/r1_zero.yaml", ["learner.num_gpus=2"])
    assert load_config("configs/r1_zero.yaml", ["learner.num_gpus=0.5", "learner.num_ranks=1",
                                                "learner.micro_batch_size=32"]).learner.num_gpus == 0.5
    assert load_config("configs/r1_zero.yaml", ["rollout.num_gpus=0.25"]).rollout.num_gpus == 0.25
    assert load_config("configs/r1_zero_cluster.yaml").learner.num_gpus == 1


@pytest.mark.integration
def test_every_actor_of_a_four_gpu_node_sees_its_gpu_as_cuda_0():
    ray = pytest.importorskip("ray")
    from actors.group import ActorGroup, assigned_gpu_index

    @ray.remote
    class Probe:
        def __init__(self, index):
            self.index = index

        def placement(self):
            import os

            return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"), assigned_gpu_index()

    ray.init(num_cpus=2, num_gpus=4, include_dashboard=False)
    try:
        ranks = ActorGroup(Probe, "learner", 4, num_cpus=0, num_gpus=1, strategy="STRICT_PACK")
        seen = ray.get(ranks.call("placement"))
        assert sorted(int(ids[0]) for ids, _, _ in seen) == [0, 1, 2, 3]  # one physical GPU each
        assert all(visible == str(ids[0]) for ids, visible, _ in seen)
        assert [index for _, _, index in seen] == [0, 0, 0, 0]  # so LOCAL_RANK is 0 on every rank
        ranks.kill()
        # Rollout workers may share a GPU by fractions (vLLM's gpu_memory_utilization): same id, both cuda:0.
        halves = ActorGroup(Probe, "rollout", 2, num_cpus=0, num_gpus=0.5, strategy="STRICT_PACK")
        (ids_a, _, index_a), (ids_b, _, index_b) = ray.get(halves.call("placement"))
        assert ids_a == ids_b and index_a == index_b == 0
        halves.kill()
    finally:
        ray.shutdown()
