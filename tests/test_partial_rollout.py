"""Partial rollouts (rollout.partial_rollout): a generate call that finds newer weights published
stops, loads them and resumes its unfinished rows; no Ray."""
import copy

import numpy as np
import pytest
import torch

from rl_system.config import ConfigError, LearnerConfig, load_config
from rl_system.data import Problem
from rl_system.models import load_model, load_tokenizer
from rl_system.rollout import SamplingParams
from rl_system.rollout.hf import encode_prompts, generate_groups, sample_with_logprobs
from rl_system.training import collate, completion_logprobs, flatten_groups, grpo_loss

PROBLEMS = [Problem(0, "What is 1 + 2?", "3"), Problem(1, "What is 4 - 9?", "-5")]
PARAMS = SamplingParams(n=4, max_new_tokens=14, temperature=0.9, stop_strings=())
CHECK_TOKENS, BOUNDARY = 3, 6  # newer weights are found at the second check: after the 6th token


class SwitchOnce:
    """A WeightFeed whose next version (`new` model's weights) is published at its `publish_at`-th
    check; `load` copies them into the sampling model and keeps the RNG state there, so the test can
    replay the resumed part."""

    def __init__(self, model, new, publish_at: int):
        self.model, self.new, self.publish_at = model, new, publish_at
        self.version, self.checks, self.rng_at_load = 0, 0, None

    def newer(self) -> bool:
        self.checks += 1
        return self.version == 0 and self.checks >= self.publish_at

    def load(self) -> None:
        self.model.load_state_dict(self.new.state_dict())
        self.version, self.rng_at_load = 1, torch.get_rng_state()


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    old = load_model(tiny_model_dir).eval()
    new = copy.deepcopy(old)
    with torch.no_grad():
        torch.manual_seed(7)
        for p in new.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return old, new, load_tokenizer(tiny_model_dir)


def test_a_resumed_generation_loses_and_repeats_no_token(models):
    old, new, tok = models
    sampler_model = copy.deepcopy(old)
    feed = SwitchOnce(sampler_model, new, publish_at=BOUNDARY // CHECK_TOKENS)
    torch.manual_seed(0)
    groups = generate_groups(sampler_model, tok, PROBLEMS, PARAMS, 0, weights=feed, check_tokens=CHECK_TOKENS)
    assert feed.version == 1 and all(g.policy_version == 0 and g.is_partial() for g in groups)
    rows = [(ids, lp, v, cut) for g in groups for ids, lp, v, cut in
            zip(g.completion_ids, g.logprobs, g.token_versions, g.truncated)]
    for ids, lp, versions, cut in rows:  # the version switches exactly at the boundary
        assert len(ids) == len(lp) == len(versions) <= PARAMS.max_new_tokens
        assert versions.tolist() == [0] * min(len(ids), BOUNDARY) + [1] * (len(ids) - BOUNDARY)
        assert cut == (len(ids) == PARAMS.max_new_tokens)

    # The first chunk: what the old weights sample uninterrupted from the same seed, cut at the boundary.
    torch.manual_seed(0)
    before = generate_groups(old, tok, PROBLEMS, SamplingParams(**{**PARAMS.__dict__, "max_new_tokens": BOUNDARY}), 0)
    first = [ids for g in before for ids in g.completion_ids]
    assert all(np.array_equal(ids[:BOUNDARY], f) for (ids, *_), f in zip(rows, first))
    # The second chunk: the new weights continuing prompt + first chunk from the RNG state at the load.
    enc = encode_prompts(tok, PROBLEMS, "", ["<think>"] * len(PROBLEMS))
    going = [i for i, (ids, *_) in enumerate(rows) if len(ids) > BOUNDARY]
    assert going, "every row stopped before the boundary: nothing was resumed"
    prompt = enc["input_ids"].repeat_interleave(PARAMS.n, 0)[going]
    mask = enc["attention_mask"].repeat_interleave(PARAMS.n, 0)[going]
    prefix = torch.tensor(np.stack([first[i] for i in going]), dtype=torch.long)
    torch.set_rng_state(feed.rng_at_load)
    rest = sample_with_logprobs(new, tok, {"input_ids": torch.cat([prompt, prefix], 1),
                                           "attention_mask": torch.cat([mask, torch.ones_like(prefix)], 1)},
                                prompt.shape[1] + BOUNDARY, len(going),
                                SamplingParams(**{**PARAMS.__dict__, "max_new_tokens": PARAMS.max_new_tokens - BOUNDARY}),
                                (), carried=BOUNDARY)
    for i, (ids, _, _) in zip(going, rest):
        assert np.array_equal(rows[i][0], np.concatenate([first[i], ids]))

    # Behaviour log-probs: the old weights' before the boundary, the new weights' after (a direct forward of each).
    for g in groups:
        g.total_rewards = [0.0, 1.0, 0.0, 1.0]
    batch = collate(flatten_groups(groups, std_norm=True), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        by_old, by_new = (completion_logprobs(m, batch, PARAMS.temperature) for m in (old, new))
    real = batch["mask"].bool()
    for version, forward in ((0, by_old), (1, by_new)):
        sampled_by = real & (batch["token_versions"] == version)
        assert sampled_by.any()
        assert torch.allclose(forward[sampled_by], batch["behaviour_logprobs"][sampled_by], atol=2e-3)
        assert not torch.allclose((by_new if version == 0 else by_old)[sampled_by],
                                  batch["behaviour_logprobs"][sampled_by], atol=2e-3)


def test_the_learner_takes_on_policy_tokens_per_token(models):
    """learner_version=1: a resumed completion's version-1 tokens are on-policy (the ratio's denominator
    is the detached current log-prob, whatever was recorded), its version-0 tokens take their behaviour
    log-probs; token staleness counts the version-0 tokens."""
    old, new, tok = models
    sampler_model = copy.deepcopy(old)
    torch.manual_seed(1)
    groups = generate_groups(sampler_model, tok, PROBLEMS, PARAMS, 0,
                             weights=SwitchOnce(sampler_model, new, publish_at=BOUNDARY // CHECK_TOKENS),
                             check_tokens=CHECK_TOKENS)
    for g in groups:
        g.total_rewards = [0.0, 1.0, 0.5, 1.0]
    batch = collate(flatten_groups(groups, std_norm=True), tok.pad_token_id, torch.device("cpu"))
    cfg = LearnerConfig()

    def loss(behaviour):
        return grpo_loss(new, {**batch, "behaviour_logprobs": behaviour}, cfg, 100.0, 1, PARAMS.temperature, None)

    base, stats = loss(batch["behaviour_logprobs"])
    stale = (batch["token_versions"] == 0) & batch["mask"].bool()
    assert stats["token_staleness"] == stale.sum().item() and stats["token_staleness_max"] == 1
    on_policy_changed = torch.where(batch["token_versions"] == 1, batch["behaviour_logprobs"] - 1.0,
                                    batch["behaviour_logprobs"])
    assert torch.equal(loss(on_policy_changed)[0], base)
    stale_changed = torch.where(stale, batch["behaviour_logprobs"] - 1.0, batch["behaviour_logprobs"])
    assert not torch.allclose(loss(stale_changed)[0], base)


@pytest.mark.parametrize("override, message", [
    ("mode=sync", "false with mode=sync"),
    ("rollout.backend=vllm", "partial rollouts need rollout.backend=hf for now"),
])
def test_partial_rollouts_need_async_mode_and_the_hf_backend(override, message):
    overrides = ["rollout.partial_rollout=true", "mode=async", "max_staleness=1", override]
    with pytest.raises(ConfigError, match=f"config key 'rollout.partial_rollout': expected .*{message}"):
        load_config("configs/r1_zero.yaml", overrides)
