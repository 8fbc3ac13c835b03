"""rollout.backend: the switch, its errors, and the vLLM backend's conversions. vLLM itself needs a
CUDA GPU and is not installed here, so its output objects are stood in for by SimpleNamespaces with
vLLM's field names (RequestOutput.outputs, CompletionOutput.token_ids / logprobs / finish_reason)."""
from types import SimpleNamespace

import pytest
import torch

from rl_system.config import ConfigError, load_config
from rl_system.data import Problem
from rl_system.models import load_model, load_tokenizer
from rl_system.rollout_vllm import VLLMSampler, groups_from_vllm, hf_parameter_shapes
from rl_system.weights import WeightSyncError, check_packed_weights, pack_weights


def test_backend_switch_is_checked():
    assert load_config("configs/r1_zero.yaml").rollout.backend == "hf"
    with pytest.raises(ConfigError, match="'rollout.backend': expected 'hf' or 'vllm', got 'tgi'"):
        load_config("configs/r1_zero.yaml", ["rollout.backend=tgi"])
    with pytest.raises(ConfigError, match="'rollout.num_gpus': expected a number > 0 with rollout.backend=vllm"):
        load_config("configs/r1_zero.yaml", ["rollout.backend=vllm"])
    assert load_config("configs/r1_zero.yaml", ["rollout.backend=vllm", "rollout.num_gpus=1"]).rollout.backend == "vllm"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_vllm_backend_without_a_gpu_says_so():
    cfg = load_config("configs/r1_zero.yaml", ["rollout.backend=vllm", "rollout.num_gpus=1"])
    with pytest.raises(RuntimeError, match="needs a CUDA GPU on the rollout worker"):
        VLLMSampler(cfg, tokenizer=None, seed=0)


def test_vllm_weight_check_uses_the_hf_parameter_shapes(tiny_model_dir):
    model = load_model(tiny_model_dir)
    shapes = hf_parameter_shapes(tiny_model_dir, trust_remote_code=False)
    assert shapes == {name: tuple(p.shape) for name, p in model.named_parameters()}
    packed = pack_weights(model.named_parameters(), version=3, dtype="bfloat16")
    check_packed_weights(packed, 3, shapes)
    with pytest.raises(WeightSyncError, match="has 1 tensors"):
        check_packed_weights(dict(packed, manifest=packed["manifest"][:1]), 3, shapes)


def test_vllm_outputs_become_prompt_groups(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    sample = lambda ids, reason: SimpleNamespace(  # noqa: E731
        token_ids=ids, finish_reason=reason,
        logprobs=[{t: SimpleNamespace(logprob=-0.5 * (i + 1))} for i, t in enumerate(ids)])
    outputs = [SimpleNamespace(outputs=[sample([5, 6, 7], "stop"), sample([8, 9], "length")])]
    (group,) = groups_from_vllm(outputs, [Problem(0, "1 + 1", "2")], [[1, 2, 3]], ["<think>"], tokenizer,
                                policy_version=4, elapsed=2.0)
    assert group.completion_ids == [[5, 6, 7], [8, 9]]
    assert group.logprobs == [[-0.5, -1.0, -1.5], [-0.5, -1.0]]
    assert group.truncated == [False, True]
    assert group.completions[0] == "<think>" + tokenizer.decode([5, 6, 7], skip_special_tokens=True)
    assert (group.prompt_ids, group.policy_version, group.generate_s) == ([1, 2, 3], 4, 2.0)
