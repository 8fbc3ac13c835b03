"""GRPO math in plain torch: group advantages, the clipped policy loss, k3 KL, loss aggregation.

Shapes: per-token tensors are (batch, completion_len) with a 0/1 `mask` for real tokens.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, std_norm: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """(r - mean of its group) [/ (std of its group + eps)], vectorised over group ids.

    The std is the unbiased one; a group of one sample gets advantage 0; no rewards, no advantages.
    """
    rewards = rewards.float()
    ids, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = len(ids)
    count = torch.zeros(num_groups).index_add_(0, inverse, torch.ones_like(rewards))
    mean = torch.zeros(num_groups).index_add_(0, inverse, rewards) / count
    centred = rewards - mean[inverse]
    if not std_norm:
        return centred
    sq = torch.zeros(num_groups).index_add_(0, inverse, centred ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))[inverse]
    return torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        epsilon_low: float, epsilon_high: float,
                        dual_clip: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO-style loss -min(r*A, clip(r, 1-eps_low, 1+eps_high)*A), where clipping bit, and
    where dual-clip bit.

    `advantages` is per sequence (batch,) and is broadcast over tokens. `dual_clip` = c > 1 bounds
    the loss of a negative-advantage token by -c*A (Ye et al. 2020): a token whose ratio has run far
    above 1 cannot dominate the batch with an unbounded push down; 0 is off.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = torch.maximum(unclipped, clipped)
    dual_clipped = torch.zeros_like(loss)
    if dual_clip > 0:
        bound = (-adv * dual_clip).expand_as(loss)
        dual_clipped = ((adv < 0) & (loss > bound)).float()
        loss = torch.where(dual_clipped.bool(), bound, loss)
    return loss, (clipped > unclipped).float(), dual_clipped


def gspo_old_logprobs(logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO (Zheng et al. 2025) through clipped_policy_loss: the 'old' log-probs that make every
    token's ratio equal its sequence's length-normalised ratio s = exp(mean_t(lp - old)), with the
    gradient of s*A spread over the tokens as s * grad(lp_t) / |y| (aggregated per sequence, as
    seq-mean-token-mean does). Clipping then acts on whole sequences."""
    seq_log_ratio = ((logprobs - old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    return logprobs.detach() - seq_log_ratio.detach().unsqueeze(-1)


def truncated_importance_weight(learner_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor,
                                cap: float) -> torch.Tensor:
    """Truncated importance sampling (TIS): min(pi_learner_old / pi_rollout, cap) per token, detached.

    The rollout engine (vLLM's kernels, bf16) does not sample from exactly the policy the learner
    computes; weighting the loss by this ratio corrects the gradient for that, and the cap bounds
    its variance where the two disagree most."""
    return torch.exp(learner_logprobs.detach() - rollout_logprobs).clamp(max=cap)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || ref): exp(ref - lp) - (ref - lp) - 1, >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str, normalizer: float) -> torch.Tensor:
    """Sums this batch's share of the loss and divides by a normaliser computed over the GLOBAL batch.

    - "seq-mean-token-mean" (GRPO paper): mean over each sequence's tokens, then over sequences;
      normalizer = number of sequences in the global batch.
    - "token-mean" (DAPO): every token weighs the same; normalizer = real tokens in the global batch.
    - "seq-mean-token-sum-norm" (Dr. GRPO): token sums over a constant;
      normalizer = sequences in the global batch x max completion length.
    Summing the per-shard results over ranks and micro-batches gives the global loss exactly,
    whatever the per-device batch size.
    """
    if mode == "seq-mean-token-mean":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_seq.sum() / normalizer
    if mode in ("token-mean", "seq-mean-token-sum-norm"):
        return (per_token * mask).sum() / normalizer
    raise ValueError(f"learner.loss_agg '{mode}': unknown aggregation")


def loss_normalizer(mode: str, sequences: int, tokens: int, max_completion_len: int) -> float:
    """The global-batch denominator `aggregate_loss` expects for `mode`, from the batch's
    sequences and completion tokens in the loss (each rank's counts summed); never 0."""
    if mode == "seq-mean-token-mean":
        return float(max(1, sequences))
    if mode == "token-mean":
        return float(max(1, tokens))
    if mode == "seq-mean-token-sum-norm":
        return float(max(1, sequences) * max_completion_len)
    raise ValueError(f"learner.loss_agg '{mode}': unknown aggregation")


def chunked_token_logprobs(hidden: torch.Tensor, lm_head, tokens: torch.Tensor, temperature: float = 1.0,
                           chunk_tokens: int = 512, entropy: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """token_logprobs(lm_head(hidden), tokens) without the (batch, length, vocab) logits: the tokens
    go through the output layer `chunk_tokens` at a time, each chunk under activation checkpointing,
    so forward and backward hold one chunk's logits at a time (recomputed in backward) instead of
    every position's, in the autocast dtype and again in fp32. hidden (B, T, H), tokens (B, T).
    Returns the log-probs and the entropy as logits_logprobs_entropy does."""
    from torch.utils.checkpoint import checkpoint

    def chunk_logprobs(h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        logprobs, entropies = logits_logprobs_entropy(lm_head(h), t, temperature, entropy)
        return logprobs if entropies is None else torch.stack([logprobs, entropies], dim=-1)

    flat_hidden, flat_tokens = hidden.reshape(-1, hidden.shape[-1]), tokens.reshape(-1)
    parts = [checkpoint(chunk_logprobs, flat_hidden[i:i + chunk_tokens], flat_tokens[i:i + chunk_tokens],
                        use_reentrant=False)
             for i in range(0, flat_tokens.numel(), chunk_tokens)]
    shape = (*tokens.shape, 2) if entropy else tokens.shape
    out = torch.cat(parts).reshape(shape) if parts else torch.zeros(shape)
    return (out[..., 0], out[..., 1]) if entropy else (out, None)


def logits_logprobs_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                            entropy: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """token_logprobs and, unless `entropy` is "", token_entropy of the same logits: "detached" for
    logging only (no graph kept for it), "grad" for an entropy bonus."""
    logprobs = token_logprobs(logits, tokens, temperature)
    if not entropy:
        return logprobs, None
    with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
        return logprobs, token_entropy(logits, temperature)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(token) under softmax(logits / temperature); logits (B, T, V), tokens (B, T)."""
    logits = logits.float() / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) at each position, in nats; logits (B, T, V)."""
    logits = logits.float() / temperature
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(-1)
