"""Rollout backends behind one factory: make_sampler gives the Sampler rollout.backend names (hf.py:
transformers' generate; vllm.py: vLLM's engine), and Sampler.sample wraps either in the multi-turn
tool loop (multiturn.py) when env.name is set."""
from __future__ import annotations

import torch

from rl_system.config import TrainConfig
from rl_system.models import load_policy
from rl_system.rollout.base import Sampler
from rl_system.rollout.hf import HFSampler
from rl_system.rollout.params import SamplingParams, sampling_params
from rl_system.rollout.vllm import VLLMSampler

__all__ = ["HFSampler", "Sampler", "SamplingParams", "VLLMSampler", "make_sampler", "sampling_params"]


def make_sampler(cfg: TrainConfig, tokenizer, device: torch.device, dtype: str, seed: int) -> Sampler:
    """The backend rollout.backend names, generating on `device` in `dtype` (rollout.dtype resolved
    there); vLLM is imported only when chosen, by VLLMSampler itself."""
    if cfg.rollout.backend == "vllm":
        return VLLMSampler(cfg, tokenizer, seed, dtype)
    return HFSampler(cfg, tokenizer, load_policy(cfg.model, dtype, device).eval())
