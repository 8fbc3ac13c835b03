"""The vLLM generation backend (rollout.backend=vllm): the same PromptGroups as the HF backend,
from vLLM's paged-attention engine on a GPU. vLLM is imported only when chosen and is not a
dependency: `pip install vllm==0.33.0` on a CUDA host.

Behaviour log-probs are vLLM's processed (temperature-scaled) log-probs of the sampled tokens,
the quantity rl_system.algorithms.grpo.token_logprobs computes on the HF backend.
"""
from __future__ import annotations

import time

import torch

from rl_system.config import TrainConfig
from rl_system.data import Problem, format_prompt
from rl_system.rollout import SamplingParams
from rl_system.types import PromptGroup
from rl_system.weights import check_packed_weights, unpacked_tensors


class WeightLoaderExtension:
    """Mixed into vLLM's GPU worker (worker_extension_cls), so LLM.collective_rpc("load_packed")
    runs in each worker process; vLLM maps the HF names onto its fused layers itself."""

    def load_packed(self, packed: dict) -> None:
        self.model_runner.model.load_weights(weights=unpacked_tensors(packed))


def hf_parameter_shapes(path: str, trust_remote_code: bool) -> dict[str, tuple]:
    """name -> shape of the HF model at `path`, built on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def groups_from_vllm(outputs, problems: list[Problem], prompt_ids: list[list[int]], prefills: list[str],
                     tokenizer, policy_version: int, elapsed: float) -> list[PromptGroup]:
    """vLLM RequestOutputs (one per problem, n CompletionOutputs each) as PromptGroups."""
    groups = []
    for problem, ids, prefill, request in zip(problems, prompt_ids, prefills, outputs):
        samples = request.outputs
        groups.append(PromptGroup(
            problem=problem, prompt_ids=ids,
            completion_ids=[list(s.token_ids) for s in samples],
            completions=[prefill + tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples],
            logprobs=[[step[token].logprob for token, step in zip(s.token_ids, s.logprobs)] for s in samples],
            truncated=[s.finish_reason == "length" for s in samples],
            policy_version=policy_version, generate_s=elapsed / len(problems),
        ))
    return groups


class VLLMSampler:
    """One vLLM engine on this worker's GPU, sampling and loading published weights."""

    def __init__(self, cfg: TrainConfig, tokenizer, seed: int):
        if not torch.cuda.is_available():
            raise RuntimeError("rollout.backend=vllm needs a CUDA GPU on the rollout worker (none found); "
                               "use rollout.backend=hf")
        try:
            import vllm
        except ImportError:
            raise RuntimeError("rollout.backend=vllm needs vLLM on the rollout workers: pip install vllm==0.33.0") from None
        self.vllm, self.cfg, self.tokenizer = vllm, cfg, tokenizer
        self.shapes = hf_parameter_shapes(cfg.model.path, cfg.model.trust_remote_code)
        self.llm = vllm.LLM(model=cfg.model.path, dtype=cfg.rollout.dtype, seed=seed,
                            gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                            enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                            worker_extension_cls=f"{__name__}.WeightLoaderExtension",
                            trust_remote_code=cfg.model.trust_remote_code)

    def generate_groups(self, problems: list[Problem], params: SamplingParams, policy_version: int,
                        prefills: list[str] | None = None) -> list[PromptGroup]:
        start = time.perf_counter()
        prefills = prefills or [self.cfg.data.prefill] * len(problems)
        texts = [format_prompt(self.tokenizer, p.question, self.cfg.data.system_prompt, pre)
                 for p, pre in zip(problems, prefills)]
        prompt_ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        sampling = self.vllm.SamplingParams(
            n=params.n, max_tokens=params.max_new_tokens, temperature=0.0 if params.greedy else params.temperature,
            top_p=params.top_p, stop=list(params.stop_strings), include_stop_str_in_output=True, logprobs=0)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling, use_tqdm=False)
        return groups_from_vllm(outputs, problems, prompt_ids, prefills, self.tokenizer, policy_version,
                                time.perf_counter() - start)

    def load_weights(self, packed: dict, expected_version: int) -> int:
        check_packed_weights(packed, expected_version, self.shapes)
        self.llm.collective_rpc("load_packed", args=(packed,))
        self.llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values
        return packed["version"]
