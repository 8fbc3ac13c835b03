"""The learner's update options on one real DeepSpeed rank (no Ray): several optimizer steps per
batch (ppo_epochs x mini_batches) make the clipped ratio act, the reference log-probs feed the KL,
GSPO and the entropy bonus train, and the policy's entropy is reported every update."""
import dataclasses

import pytest
import torch

from rl_system.config import load_config
from rl_system.data import Problem
from rl_system.learner import Learner
from rl_system.models import load_tokenizer
from rl_system.types import PromptGroup


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    cfg = load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "prompts_per_step=2", "rollout.group_size=4", "learner.num_ranks=1",
        "learner.micro_batch_size=2", "learner.lr=0.02", "learner.autocast_dtype=float32", "learner.beta=0",
        "learner.num_threads=1"])
    rank = Learner(cfg, world_size=1, rank=0)
    rank.setup_alone("float32")
    return rank


def batch(tiny_model_dir, version: int) -> list[PromptGroup]:
    tok = load_tokenizer(tiny_model_dir)
    groups = []
    for q, rewards in (("What is 1 + 2?", [1.0, 0.0, 0.0, 0.5]), ("What is 7 - 3?", [0.0, 1.0, 1.0, 0.0])):
        completions = [tok.encode(f" <answer>{i + 3}</answer> and some more words {i}") for i in range(4)]
        groups.append(PromptGroup(Problem(0, q, "3"), tok.encode(q), completions, [""] * 4,
                                  [[-2.0] * len(c) for c in completions], [False] * 4, version,
                                  total_rewards=rewards))
    return groups


def update(learner, tiny_model_dir, **options) -> dict:
    learner.cfg = dataclasses.replace(learner.cfg, learner=dataclasses.replace(learner.cfg.learner, **options))
    steps_before, version = learner.engine.global_steps, learner.version
    stats = learner.train(batch(tiny_model_dir, learner.version))
    stats["optimizer_steps"] = learner.engine.global_steps - steps_before
    assert learner.version == version + 1  # one policy version per batch, however many steps
    return stats


def test_one_step_per_batch_leaves_the_ratio_at_one(learner, tiny_model_dir):
    stats = update(learner, tiny_model_dir, ppo_epochs=1, mini_batches=1)
    assert stats["optimizer_steps"] == 1 and stats["clipped_tokens"] == 0 and stats["dual_clipped_tokens"] == 0


def test_several_steps_per_batch_make_clipping_act(learner, tiny_model_dir):
    stats = update(learner, tiny_model_dir, ppo_epochs=3, mini_batches=2, epsilon_high=0.05, epsilon_low=0.05,
                   dual_clip=1.5)
    assert stats["optimizer_steps"] == 6
    assert stats["clipped_tokens"] > 0  # the steps after the first move the policy off pi_old
    assert stats["tokens"] == 3 * sum(len(c) for g in batch(tiny_model_dir, 0) for c in g.completion_ids)
    assert stats["entropy"] / stats["tokens"] > 0


def test_old_logprobs_are_fixed_before_the_first_step(learner, tiny_model_dir):
    """pi_old is the learner's policy at the start of the update, for every pass."""
    from rl_system.training import completion_logprobs, collate, flatten_groups

    learner.cfg = dataclasses.replace(learner.cfg, learner=dataclasses.replace(learner.cfg.learner, ppo_epochs=2))
    samples = flatten_groups(batch(tiny_model_dir, learner.version), True)
    learner.attach_fixed_logprobs([samples], 1, samples[0])
    with torch.no_grad():
        expected = completion_logprobs(learner.engine, collate(samples, learner.pad_id, learner.device), 1.0)
    for i, s in enumerate(samples):
        assert torch.allclose(s.old_logprobs, expected[i, :len(s.completion_ids)], atol=1e-5)
        assert s.ref_logprobs is None  # beta = 0: no reference pass
    stale = flatten_groups(batch(tiny_model_dir, learner.version - 1), True)
    learner.attach_fixed_logprobs([stale], 1, stale[0])
    # a lagging sample keeps pi_behaviour
    assert all(s.old_logprobs.tolist() == s.behaviour_logprobs.tolist() for s in stale)


def test_gspo_kl_and_entropy_bonus_train(learner, tiny_model_dir):
    learner.ref_model = learner.engine.module  # as the reference, the current policy: KL 0 at the first pass
    try:
        stats = update(learner, tiny_model_dir, policy_loss="gspo", beta=0.1, entropy_coef=0.01, ppo_epochs=2, mini_batches=1,
                       epsilon_low=3e-4, epsilon_high=4e-4)
    finally:
        learner.ref_model = None
    assert stats["optimizer_steps"] == 2 and torch.isfinite(torch.tensor(stats["loss"]))
    assert 0 <= stats["kl"] / stats["tokens"] < 1.0
    assert stats["clipped_tokens"] > 0  # GSPO's tight sequence clip acts on the second pass


def test_lora_trains_adapters_only_and_publishes_merged_weights(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from rl_system.weights import unpacked_tensors

    cfg = load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "prompts_per_step=2", "rollout.group_size=4", "learner.num_ranks=1",
        "learner.micro_batch_size=4", "learner.lr=0.05", "learner.autocast_dtype=float32", "learner.beta=0.1",
        "learner.num_threads=1", "learner.lora.r=4", "rollout.dtype=float32"])
    rank = Learner(cfg, world_size=1, rank=0)
    rank.setup_alone("float32")
    assert rank.ref_model is None  # the reference is the base under the disabled adapter, no copy
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base = {n: p.detach().clone() for n, p in rank.engine.module.named_parameters() if "lora_" not in n}
    stats = rank.train(batch(tiny_model_dir, 0))
    assert stats["kl"] / stats["tokens"] < 1e-6  # lora_B starts at 0: the first pass is the reference itself
    after = dict(rank.engine.module.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in base.items())  # the base weights never move
    published = dict(unpacked_tensors(rank.packed_weights()))
    assert list(published) == [n for n, _ in plain.named_parameters()]  # the plain model's names, tied once
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(published[q], plain.state_dict()[q])  # base + the trained adapter
    rank.save(str(tmp_path / "merged"))
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert torch.allclose(saved.state_dict()[q], published[q]) and (tmp_path / "merged" / "adapter").is_dir()
