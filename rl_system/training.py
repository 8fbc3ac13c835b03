"""The learner's GRPO computation on one shard of a batch; pure torch, any engine that calls like a model."""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import torch

from rl_system.algorithms.advantages import SumAcrossRanks
from rl_system.algorithms.advantages import advantages as estimate_advantages
from rl_system.algorithms.grpo import (
    aggregate_loss, chunked_token_logprobs, clipped_policy_loss, gspo_old_logprobs, kl_k3, logits_logprobs_entropy,
    truncated_importance_weight,
)
from rl_system.config import LearnerConfig
from rl_system.types import PromptGroup


@dataclass
class Sample:
    """One completion to train on. The token fields are its PromptGroup's arrays (rl_system/types.py),
    not copies; lists work as well (collate reads either)."""
    prompt_ids: list[int]
    completion_ids: np.ndarray | list[int]
    behaviour_logprobs: np.ndarray | list[float]
    advantage: float
    policy_version: int
    in_loss: bool = True  # False: its tokens are masked out of the loss (DAPO's overlong filtering)
    # multi-turn: 0 for a tool's tokens, which the model did not sample; None: every token is the model's
    loss_mask: np.ndarray | list[int] | None = None
    # partial rollouts: the policy version that sampled each token; None: every token is policy_version's
    token_versions: np.ndarray | list[int] | None = None
    # Fixed for the whole update, computed once before its first pass (Learner.attach_fixed_logprobs):
    old_logprobs: torch.Tensor | None = None  # the ratio's denominator when the batch takes several steps
    ref_logprobs: torch.Tensor | None = None  # the reference policy's, for the KL term


def flatten_groups(groups: list[PromptGroup], std_norm: bool, estimator: str = "grpo",
                   overlong_filter: bool = False, across_ranks: SumAcrossRanks | None = None) -> list[Sample]:
    """Every completion as a training sample with its advantage (`estimator`: learner.advantage;
    `across_ranks`: when other ranks hold the rest of the batch). `overlong_filter` keeps truncated
    completions out of the loss (their advantages still count in their group's baseline): a cut-off
    answer is not evidence that its reasoning was wrong."""
    rewards = torch.tensor([r for g in groups for r in g.total_rewards])
    group_ids = torch.tensor([i for i, g in enumerate(groups) for _ in g.total_rewards], dtype=torch.long)
    advantages = estimate_advantages(estimator, rewards, group_ids, std_norm, across_ranks).tolist()
    samples = [Sample(g.prompt_ids, ids, lp, 0.0, g.policy_version, in_loss=not (overlong_filter and cut),
                      loss_mask=g.loss_masks[i] if g.loss_masks else None,
                      token_versions=g.token_versions[i] if g.token_versions else None)
               for g in groups for i, (ids, lp, cut) in enumerate(zip(g.completion_ids, g.logprobs, g.truncated))]
    for sample, adv in zip(samples, advantages):
        sample.advantage = adv
    return samples


def collate(samples: list[Sample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Each distinct prompt once, left-padded, and every completion right-padded with the index of
    its prompt: a group's completions share one prompt row, and every completion starts at one column."""
    prompts: dict[tuple[int, ...], int] = {}
    prompt_index = [prompts.setdefault(tuple(s.prompt_ids), len(prompts)) for s in samples]
    p_len = max(len(p) for p in prompts)
    c_len = max(1, max(len(s.completion_ids) for s in samples))
    prompt_ids = torch.full((len(prompts), p_len), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(prompts), p_len), dtype=torch.long)
    for i, p in enumerate(prompts):
        prompt_ids[i, p_len - len(p):] = torch.tensor(p)
        prompt_mask[i, p_len - len(p):] = 1
    # Filled in numpy, straight from the samples' arrays (read-only when Ray deserialised them
    # zero-copy, which torch.from_numpy warns about), then one torch.from_numpy per tensor.
    targets = np.full((len(samples), c_len), pad_id, dtype=np.int64)
    tokens = np.zeros((len(samples), c_len), dtype=np.int64)  # real tokens: what attention sees
    mask = np.zeros((len(samples), c_len), dtype=np.float32)  # in the loss: the model's own, of samples in the loss
    behaviour = np.zeros((len(samples), c_len), dtype=np.float32)
    versions = np.array([[s.policy_version] for s in samples], dtype=np.int64).repeat(c_len, axis=1)
    for i, s in enumerate(samples):
        c = len(s.completion_ids)
        targets[i, :c] = s.completion_ids
        tokens[i, :c] = 1
        if s.in_loss:
            mask[i, :c] = 1.0 if s.loss_mask is None else s.loss_mask
        behaviour[i, :c] = s.behaviour_logprobs
        if s.token_versions is not None:
            versions[i, :c] = s.token_versions
    batch = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "prompt_index": torch.tensor(prompt_index),
        "targets": torch.from_numpy(targets),
        "tokens_mask": torch.from_numpy(tokens),
        "mask": torch.from_numpy(mask),
        "behaviour_logprobs": torch.from_numpy(behaviour),
        "advantages": torch.tensor([s.advantage for s in samples]),
        "token_versions": torch.from_numpy(versions),  # the policy version that sampled each token
    }
    for key in ("old_logprobs", "ref_logprobs"):
        if all(getattr(s, key) is not None for s in samples):
            batch[key] = torch.nn.utils.rnn.pad_sequence([getattr(s, key) for s in samples], batch_first=True)
    return {k: v.to(device) for k, v in batch.items()}


def padded_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift a row's positions."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def completion_logprobs(model, batch: dict, temperature: float, share_prompt: bool = True,
                        chunk_tokens: int = 0) -> torch.Tensor:
    """log p of every completion token (completion_logprobs_entropy without the entropy)."""
    return completion_logprobs_entropy(model, batch, temperature, share_prompt, chunk_tokens)[0]


def completion_logprobs_entropy(model, batch: dict, temperature: float, share_prompt: bool = True,
                                chunk_tokens: int = 0, entropy: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p of every completion token, and the policy's entropy at each ("" none, "detached" for
    logging, "grad" for an entropy bonus). `share_prompt` runs each distinct prompt once and continues
    all its completions from that prompt's KV cache, so a group of G completions costs one prompt
    forward instead of G (gradients flow back through the shared cache); otherwise each row runs
    prompt + completion in one forward. `chunk_tokens` > 0 stops the model at its hidden states and
    takes the output layer a chunk of tokens at a time (chunked_token_logprobs): no (batch, length,
    vocab) logits."""
    index, prompt_mask, targets = batch["prompt_index"], batch["prompt_mask"], batch["targets"]
    p_len, c_len = prompt_mask.shape[1], targets.shape[1]
    attention = torch.cat([prompt_mask[index], batch["tokens_mask"]], dim=1)
    positions = padded_positions(attention)
    causal_lm = getattr(model, "module", model)  # a DeepSpeed engine wraps the HF model
    decoder = causal_lm.get_decoder() if chunk_tokens else None

    def last_states(keep: int, **inputs):
        """The last `keep` positions' logits, or hidden states when chunking: (batch, keep, .), and the output."""
        if decoder is None:
            out = model(**inputs, logits_to_keep=keep)
            return out.logits, out
        out = decoder(**inputs)
        return out.last_hidden_state[:, -keep:], out

    if share_prompt:
        prompt_last, prompt = last_states(1, input_ids=batch["prompt_ids"], attention_mask=prompt_mask,
                                          position_ids=padded_positions(prompt_mask), use_cache=True)
        cache = prompt.past_key_values
        cache.batch_select_indices(index)
        states, _ = last_states(c_len, input_ids=targets, attention_mask=attention, position_ids=positions[:, p_len:],
                                past_key_values=cache, use_cache=True)
        states = torch.cat([prompt_last[index], states[:, :-1]], dim=1)  # the last prompt token predicts the first
    else:
        input_ids = torch.cat([batch["prompt_ids"][index], targets], dim=1)
        states, _ = last_states(c_len + 1, input_ids=input_ids, attention_mask=attention, position_ids=positions,
                                use_cache=False)
        states = states[:, :-1]
    if decoder is None:
        return logits_logprobs_entropy(states, targets, temperature, entropy)
    return chunked_token_logprobs(states, causal_lm.get_output_embeddings(), targets, temperature, chunk_tokens,
                                  entropy)


def grpo_loss(model, batch: dict, cfg: LearnerConfig, normalizer: float, learner_version: int,
              temperature: float, autocast_dtype: torch.dtype | None, tis_cap: float = 0.0) -> tuple[torch.Tensor, dict]:
    """This micro-batch's share of the global policy loss, plus sums (and `*_max` maxima) for the
    step's statistics.

    The ratio's denominator: `old_logprobs` when the batch carries them (several optimizer steps on
    one batch: the learner's log-probs before the first); otherwise on-policy samples (generated by
    the current weights) take the detached current log-probs, which is exact, and older samples the
    recorded behaviour log-probs, so the clipped importance weight corrects for the lag. Per token: a
    partial rollout's completion resumed under newer weights has tokens of both kinds. With
    `tis_cap` > 0 every token is also weighted by min(pi_learner_old / pi_rollout, tis_cap)
    (truncated importance sampling). The KL term needs `ref_logprobs` in the batch.
    """
    device_type = batch["targets"].device.type
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logprobs, entropy = completion_logprobs_entropy(model, batch, temperature, cfg.share_prompt,
                                                        cfg.logprob_chunk_tokens,
                                                        "grad" if cfg.entropy_coef > 0 else "detached")
    mask, behaviour = batch["mask"], batch["behaviour_logprobs"]
    on_policy = batch["token_versions"] == learner_version
    old = batch.get("old_logprobs", torch.where(on_policy, logprobs.detach(), behaviour))
    ratio_base = gspo_old_logprobs(logprobs, old, mask) if cfg.policy_loss == "gspo" else old
    per_token, clipped, dual_clipped = clipped_policy_loss(logprobs, ratio_base, batch["advantages"],
                                                           cfg.epsilon_low, cfg.epsilon_high, cfg.dual_clip)
    mismatch = (logprobs.detach() - behaviour).abs() * mask  # learner vs rollout, same tokens
    staleness = (learner_version - batch["token_versions"]) * mask  # versions the learner is ahead of each token's
    stats = {
        "tokens": mask.sum().item(),
        "clipped_tokens": (clipped * mask).sum().item(),
        "dual_clipped_tokens": (dual_clipped * mask).sum().item(),
        "entropy": (entropy.detach() * mask).sum().item(),
        "behaviour_logprob_abs_diff": mismatch.sum().item(),
        "behaviour_logprob_abs_diff_max": mismatch.max().item() if mismatch.numel() else 0.0,
        "token_staleness": staleness.sum().item(),
        "token_staleness_max": staleness.max().item() if mask.numel() else 0,
    }
    if tis_cap > 0:
        weight = truncated_importance_weight(old, behaviour, tis_cap)
        per_token = per_token * weight
        stats["tis_weight"] = (weight * mask).sum().item()
        stats["tis_capped_tokens"] = ((weight >= tis_cap) * mask).sum().item()
    if cfg.beta > 0:
        kl = kl_k3(logprobs, batch["ref_logprobs"])
        per_token = per_token + cfg.beta * kl
        stats["kl"] = (kl.detach() * mask).sum().item()
    if cfg.entropy_coef > 0:
        per_token = per_token - cfg.entropy_coef * entropy
    loss = aggregate_loss(per_token, mask, cfg.loss_agg, normalizer)
    stats["loss"] = loss.item()
    return loss, stats


def merge_stats(into: dict, stats: dict) -> dict:
    """Adds a micro-batch's (or a rank's) statistics: sums, except `*_max` keys, which take the max."""
    for k, v in stats.items():
        into[k] = max(into.get(k, v), v) if k.endswith("_max") else into.get(k, 0.0) + v
    return into


def tis_cap(cfg) -> float:
    """learner.tis_cap, or by default 2.0 with the vLLM backend (its sampler is another program than
    the learner's forward) and off with HF, whose rollout is the learner's own model code."""
    if cfg.learner.tis_cap is not None:
        return cfg.learner.tis_cap
    return 2.0 if cfg.rollout.backend == "vllm" else 0.0


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """This rank's contiguous share of n samples: shares differ by one at most, and none is left out."""
    return rank * n // world, (rank + 1) * n // world


def sample_tokens(sample: Sample) -> int:
    """What one sample costs a forward: its prompt and completion tokens."""
    return len(sample.prompt_ids) + len(sample.completion_ids)


def token_balanced_shards(tokens: list[int], world: int) -> list[list[int]]:
    """Each rank's sample indices (in batch order), so that every rank gets about the same number of
    tokens: the longest first, each onto the rank with the fewest tokens so far (the lower rank on a
    tie). No rank ends more than one sample's tokens above the mean. Deterministic: every rank computes the same
    split from the same batch."""
    loads = [(0, rank) for rank in range(world)]  # a heap of (tokens so far, rank)
    shards: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(len(tokens)), key=lambda i: (-tokens[i], i)):
        load, rank = heapq.heappop(loads)
        shards[rank].append(i)
        heapq.heappush(loads, (load + tokens[i], rank))
    return [sorted(shard) for shard in shards]


def token_budget_micro_batches(shapes: list[tuple[int, int]], budget: int) -> list[list[int]]:
    """Sample indices per micro-batch from each sample's (prompt, completion) lengths: as many samples
    as keep the micro-batch's padded tokens, rows x (longest prompt + longest completion) as collate
    pads them, within `budget`; a sample longer than the budget alone. Longest first, so that
    samples of like length share a micro-batch and little of it is padding. Deterministic."""
    batches: list[list[int]] = []
    prompt_len = completion_len = 0
    for i in sorted(range(len(shapes)), key=lambda i: (-sum(shapes[i]), i)):
        p, c = shapes[i][0], max(1, shapes[i][1])
        if batches and (len(batches[-1]) + 1) * (max(prompt_len, p) + max(completion_len, c)) <= budget:
            batches[-1].append(i)
            prompt_len, completion_len = max(prompt_len, p), max(completion_len, c)
        else:
            batches.append([i])
            prompt_len, completion_len = p, c
    return batches


def loss_counts(samples: list[Sample]) -> tuple[int, int]:
    """(sequences, tokens) in the loss (overlong-filtered samples count nothing): what
    loss_normalizer takes, once summed over the ranks."""
    kept = [len(s.completion_ids) if s.loss_mask is None else int(np.sum(s.loss_mask)) for s in samples if s.in_loss]
    return len(kept), sum(kept)
