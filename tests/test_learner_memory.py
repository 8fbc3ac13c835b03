"""The learner's memory switches in a real DeepSpeed step (one process, no Ray): gradient
checkpointing, the chunked output layer, ZeRO-3 with a sharded or offloaded reference and the
optimizer offloaded all train, and take the same step as the defaults."""
import pytest
import torch

from rl_system.config import ConfigError, load_config
from rl_system.learner import (
    deepspeed_config, gathered_named_parameters, reference_deepspeed_config, zero3_construction,
)
from rl_system.local import LocalWorkers
from rl_system.models import load_model
from rl_system.pipeline import r1_zero

BASE = ["num_steps=1", "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "learner.num_ranks=1", "learner.micro_batch_size=4", "learner.lr=1e-3", "eval_before=false",
        "eval_after=false", "data.num_eval=4", "learner.autocast_dtype=float32",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]"]


def one_step(model_dir, out, *overrides, check=None) -> dict[str, torch.Tensor]:
    """The weights after one GRPO step (gathered under ZeRO-3); `check(workers)` runs before the step."""
    cfg = load_config("configs/r1_zero.yaml", [f"model.path={model_dir}", f"output_dir={out}", *BASE, *overrides])
    workers = LocalWorkers(cfg)
    try:
        if check:
            check(workers)
        r1_zero.train(cfg, workers)
        return {n: p.detach().clone()
                for n, p in gathered_named_parameters(workers.learner.engine.module, cfg.learner.zero_stage)}
    finally:
        workers.shutdown()


def nearly_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same samples, same update: Adam's first step moves every weight by about lr whatever its
    gradient's size, so a rounding difference in a near-zero gradient may flip a few weights."""
    assert list(a) == list(b)
    differ = sum(int(((a[n] - b[n]).abs() > 1e-6).sum()) for n in a)
    return differ <= 1e-3 * sum(p.numel() for p in a.values())


def test_checkpointed_chunked_step_equals_the_default_step(tiny_model_dir, tmp_path):
    default = one_step(tiny_model_dir, tmp_path / "a", "learner.share_prompt=false")
    lean = one_step(tiny_model_dir, tmp_path / "b", "learner.share_prompt=false", "learner.gradient_checkpointing=true",
                    "learner.logprob_chunk_tokens=3")
    assert nearly_equal(default, lean)


def test_zero3_with_a_sharded_or_offloaded_reference_takes_the_zero2_step(tiny_model_dir, tmp_path):
    """The KL to the reference matters here (beta 1, lr 1e-3, and two passes, so that the second
    pass's policy has left the reference and the KL has a gradient): the reference as a ZeRO-3 engine
    (partitioned, or in CPU memory) gives the update a full copy gives, and so do the optimizer
    moments offloaded, and so do buckets, optimizer sub-groups and gathered parameters smaller than a
    weight (each weight reduced and stepped on its own, nothing prefetched). ZeRO-3 builds the model
    partitioned (zero.Init), and publishes it a module at a time."""
    def built_partitioned(workers):
        for p in workers.learner.engine.module.parameters():
            assert hasattr(p, "ds_id")  # a ZeRO-3 parameter: this rank holds its partition only
        # zero3_construction: the model is partitioned as it is built, never whole on a rank
        ds = deepspeed_config(micro_batch_size=4, grad_accum=2, world_size=1, grad_clip=1.0, zero_stage=3, lr=1e-3,
                              weight_decay=0.0)
        with zero3_construction(ds):
            model = load_model(tiny_model_dir)
        assert all(hasattr(p, "ds_id") and p.numel() == 0 for p in model.parameters())
        assert all(not hasattr(p, "ds_id") for p in load_model(tiny_model_dir).parameters())  # closed: plain again

    kl = ["learner.beta=1.0", "learner.ppo_epochs=2"]
    zero2 = one_step(tiny_model_dir, tmp_path / "z2", *kl, "learner.zero_stage=2")
    small = ("learner.deepspeed={zero_optimization: {reduce_bucket_size: 1000, sub_group_size: 1000, "
             "stage3_prefetch_bucket_size: 1000, stage3_max_live_parameters: 1000}}")
    sharded = one_step(tiny_model_dir, tmp_path / "z3", *kl, "learner.zero_stage=3", small, check=built_partitioned)
    offloaded = one_step(tiny_model_dir, tmp_path / "z3o", *kl, "learner.zero_stage=3", "learner.reference=offload",
                         "learner.offload_optimizer=true")
    assert nearly_equal(zero2, sharded) and nearly_equal(zero2, offloaded)
    without_kl = one_step(tiny_model_dir, tmp_path / "nokl", "learner.beta=0", "learner.ppo_epochs=2",
                          "learner.zero_stage=2")
    assert not nearly_equal(zero2, without_kl)  # the reference really entered the update


def test_zero3_bounds_what_a_rank_holds_at_once():
    """ZeRO-3 (not ZeRO-2) gets bounded gradient buckets, optimizer sub-groups and gathered parameters,
    the reference engine gathering as the policy does, a user's override included (results.md (j))."""
    def config(stage: int) -> dict:
        return deepspeed_config(micro_batch_size=4, grad_accum=1, world_size=2, grad_clip=1.0, zero_stage=stage,
                                lr=1e-3, weight_decay=0.0,
                                overrides={"zero_optimization": {"stage3_max_live_parameters": 5}})

    zero = config(3)["zero_optimization"]
    assert max(zero["reduce_bucket_size"], zero["sub_group_size"], zero["stage3_prefetch_bucket_size"]) <= 2e7
    reference = reference_deepspeed_config(config(3), offload=True)["zero_optimization"]
    assert reference["stage3_max_live_parameters"] == 5 and reference["stage"] == 3
    assert reference["stage3_prefetch_bucket_size"] == zero["stage3_prefetch_bucket_size"]
    assert "reduce_bucket_size" not in config(2)["zero_optimization"]


def test_reference_placement_and_offload_are_checked():
    for overrides, message in (
            (["learner.reference=sharded", "learner.zero_stage=2"], "'learner.reference': expected 'auto' or 'copy' "
                                                                    "with learner.zero_stage=2"),
            (["learner.reference=gpu"], "'learner.reference': expected one of"),
            (["learner.offload_optimizer=true", "learner.zero_stage=0"], "'learner.offload_optimizer': expected false")):
        with pytest.raises(ConfigError, match=message):
            load_config("configs/r1_zero.yaml", overrides)


def test_gradient_checkpointing_needs_the_prompt_per_row():
    with pytest.raises(ConfigError, match="'learner.share_prompt': expected false with learner.gradient_checkpointing"):
        load_config("configs/r1_zero.yaml", ["learner.gradient_checkpointing=true"])


def test_bf16_weights_train_with_fp32_master_weights(tiny_model_dir, tmp_path):
    """learner.bf16_weights: the engine's model in bf16 (half the bytes of fp32 weights and gradients),
    DeepSpeed's optimizer updating fp32 master copies; the step goes where the fp32 step goes."""
    before = {n: p.detach().clone() for n, p in load_model(tiny_model_dir).named_parameters()}

    def in_bf16(workers):
        assert all(p.dtype == torch.bfloat16 for p in workers.learner.engine.module.parameters())
        assert workers.learner.autocast is None
        masters = [p for group in workers.learner.engine.optimizer.param_groups for p in group["params"]]
        assert masters and all(p.dtype == torch.float32 for p in masters)

    bf16 = one_step(tiny_model_dir, tmp_path / "bf16", "learner.bf16_weights=true", "learner.autocast_dtype=auto",
                    "learner.beta=0.1", check=in_bf16)
    fp32 = one_step(tiny_model_dir, tmp_path / "fp32", "learner.beta=0.1")
    moved = [(bf16[n].float() - before[n], fp32[n] - before[n]) for n in before]
    agree = sum(int(((a.sign() == b.sign()) & (b.abs() > 1e-4)).sum()) for a, b in moved)
    assert agree >= 0.9 * sum(int((b.abs() > 1e-4).sum()) for _, b in moved)
