"""Will a run fit on a cluster? rl_system/resources.py's plan over made-up nodes (no Ray)."""
from rl_system.config import SFTConfig, load_config
from rl_system.resources import NodeType, command_stages, plan, request_bundles, train_demands

DEMO = load_config("configs/r1_zero.yaml")  # 2 learner ranks x 1 CPU, 2 rollout x 1, 1 reward x 0.5


def test_demo_on_a_two_cpu_head_can_never_fit_and_says_how_to_start_the_head():
    verdict = plan(train_demands(DEMO), free=[{"CPU": 2.0}], total=[{"CPU": 2.0}], node_types=[], autoscaler="none")
    assert not verdict.fits_now and not verdict.fits_eventually
    assert "CPU 4.5 (learner 2 x 1, rollout 2 x 1, reward 1 x 0.5)" in verdict.message
    assert "`ray start --head --num-cpus 5`" in verdict.message
    assert "lower learner.num_cpus / rollout.num_cpus / reward.num_cpus" in verdict.message
    assert "\n" not in verdict.message


def test_demo_fits_on_six_logical_cpus():
    verdict = plan(train_demands(DEMO), free=[{"CPU": 6.0}], total=[{"CPU": 6.0}], node_types=[], autoscaler="none")
    assert verdict.fits_now and verdict.message == ""


def test_fits_after_the_autoscaler_adds_nodes():
    cfg = load_config("configs/r1_zero.yaml", ["rollout.resources={rollout: 1}"])
    types = [NodeType("rollout", {"CPU": 1.0, "rollout": 1.0}, max_count=2)]
    verdict = plan(train_demands(cfg), free=[{"CPU": 4.0}], total=[{"CPU": 4.0}], node_types=types, autoscaler="known")
    assert not verdict.fits_now and verdict.fits_eventually
    assert "the autoscaler has to add nodes (rollout)" in verdict.message
    # One node type too few: never, and the message names the custom resource.
    types = [NodeType("rollout", {"CPU": 1.0, "rollout": 1.0}, max_count=1)]
    verdict = plan(train_demands(cfg), free=[{"CPU": 4.0}], total=[{"CPU": 4.0}], node_types=types, autoscaler="known")
    assert not verdict.fits_eventually
    assert "it asks for rollout 2 (rollout 2 x 1), the cluster and what its autoscaler can add has rollout 1" \
        in verdict.message
    assert "drop 'rollout' from rollout.resources.rollout" in verdict.message


def test_waits_while_other_work_holds_the_cluster():
    verdict = plan(train_demands(DEMO), free=[{"CPU": 1.0}], total=[{"CPU": 8.0}], node_types=[], autoscaler="none")
    assert not verdict.fits_now and verdict.fits_eventually
    assert "other actors or jobs hold part of the cluster now" in verdict.message


def test_strict_pack_needs_one_node_large_enough():
    cfg = load_config("configs/r1_zero.yaml", ["learner.num_ranks=4", "learner.num_gpus=1",
                                               "learner.placement_strategy=STRICT_PACK", "learner.micro_batch_size=8"])
    nodes = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0}]
    verdict = plan(train_demands(cfg), free=nodes, total=nodes, node_types=[], autoscaler="none")
    assert not verdict.fits_eventually
    assert "learner needs 4 x {CPU: 1, GPU: 1} placed STRICT_PACK" in verdict.message
    assert "largest: {CPU: 8, GPU: 2}" in verdict.message and "learner.placement_strategy=PACK" in verdict.message
    packed = plan(train_demands(cfg), free=[{"CPU": 8.0, "GPU": 4.0}], total=[{"CPU": 8.0, "GPU": 4.0}],
                  node_types=[], autoscaler="none")
    assert packed.fits_now
    # Asked of the autoscaler as one bundle, so that it starts a node holding the whole group.
    assert request_bundles(train_demands(cfg))[:2] == [{"CPU": 4.0, "GPU": 4.0}, {"CPU": 1.0}]


def test_gpus_on_a_cpu_cluster_and_sft_keys():
    cfg = load_config("configs/r1_zero.yaml", ["rollout.num_gpus=1"])
    verdict = plan(train_demands(cfg), free=[{"CPU": 8.0}], total=[{"CPU": 8.0}], node_types=[], autoscaler="none")
    assert "it asks for GPU 2 (rollout 2 x 1)" in verdict.message and "has no GPU" in verdict.message
    assert "lower rollout.num_gpus" in verdict.message
    [sft] = command_stages("sft", SFTConfig(use_gpu=True))
    verdict = plan(sft, free=[{"CPU": 8.0}], total=[{"CPU": 8.0}], node_types=[], autoscaler="none")
    assert "add GPU nodes" in verdict.message and "lower use_gpu" in verdict.message
    stages = command_stages("pipeline", load_config("configs/r1.yaml"))
    assert [d.role for d in stages[0]] == ["sft"] and stages[1][0].role == "learner"


def test_an_autoscaler_whose_node_types_are_unknown_is_waited_for():
    verdict = plan(train_demands(DEMO), free=[{"CPU": 2.0}], total=[{"CPU": 2.0}], node_types=[], autoscaler="unknown")
    assert not verdict.fits_now and verdict.fits_eventually
    assert "its autoscaler may add nodes" in verdict.message
