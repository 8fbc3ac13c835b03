"""The learner's memory switches in a real DeepSpeed step (one process, no Ray): gradient
checkpointing and the chunked output layer train, and take the same step as the defaults."""
import pytest
import torch

from rl_system.config import ConfigError, load_config
from rl_system.local import LocalWorkers
from rl_system.pipeline import r1_zero

BASE = ["num_steps=1", "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "learner.num_ranks=1", "learner.micro_batch_size=4", "learner.lr=1e-3", "eval_before=false",
        "eval_after=false", "data.num_eval=4", "learner.autocast_dtype=float32",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]"]


def one_step(model_dir, out, *overrides) -> dict[str, torch.Tensor]:
    cfg = load_config("configs/r1_zero.yaml", [f"model.path={model_dir}", f"output_dir={out}", *BASE, *overrides])
    workers = LocalWorkers(cfg)
    try:
        r1_zero.train(cfg, workers)
        return {n: p.detach().clone() for n, p in workers.learner.engine.module.named_parameters()}
    finally:
        workers.shutdown()


def test_checkpointed_chunked_step_equals_the_default_step(tiny_model_dir, tmp_path):
    default = one_step(tiny_model_dir, tmp_path / "a", "learner.share_prompt=false")
    lean = one_step(tiny_model_dir, tmp_path / "b", "learner.share_prompt=false", "learner.gradient_checkpointing=true",
                    "learner.logprob_chunk_tokens=3")
    # Same samples, same update: Adam's first step moves every weight by about lr whatever its gradient's
    # size, so a rounding difference in a near-zero gradient may flip a few weights; nearly all agree.
    differ = sum(int(((default[n] - lean[n]).abs() > 1e-6).sum()) for n in default)
    assert differ <= 1e-3 * sum(p.numel() for p in default.values()), differ


def test_gradient_checkpointing_needs_the_prompt_per_row():
    with pytest.raises(ConfigError, match="'learner.share_prompt': expected false with learner.gradient_checkpointing"):
        load_config("configs/r1_zero.yaml", ["learner.gradient_checkpointing=true"])
