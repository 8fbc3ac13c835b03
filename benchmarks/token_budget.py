"""Fixed-count micro-batches vs learner.max_tokens_per_micro_batch, side by side in one run: learner
step time and the share of padded tokens, on one long-tailed batch.

The batch: --prompts prompts x --group-size completions whose lengths are Pareto-distributed up to
--max-new-tokens, a few at the cap (what reasoning batches look like). Each path gets a real learner
rank of its own (DeepSpeed, one rank, fp32, the same weights) and trains the same batch: the fixed
path --micro-batch-size sequences at a time, each micro-batch padded to its longest row; the budget
path packs like lengths within --micro-batch-size x the longest row, the fixed path's worst
micro-batch, so neither needs more memory than the other. Medians of --repeats steps after a warm-up.

    python benchmarks/token_budget.py [--model models/smollm2-135m-instruct] [--prompts 4] [--group-size 8]
"""
from __future__ import annotations

import argparse
from functools import partial

import numpy as np
from _common import DEMO_CONFIG, machine, median_seconds

from rl_system.config import load_config
from rl_system.data import Problem
from rl_system.learner import Learner
from rl_system.training import sample_tokens
from rl_system.types import PromptGroup


def long_tailed_batch(prompts: int, group_size: int, max_new_tokens: int, seed: int = 0) -> list[PromptGroup]:
    rng = np.random.default_rng(seed)
    groups = []
    for p in range(prompts):
        lengths = np.minimum(max_new_tokens, max_new_tokens / 16 * (1 + rng.pareto(1.2, group_size))).astype(int)
        lengths[rng.random(group_size) < 0.1] = max_new_tokens  # a few run to the cap
        completions = [rng.integers(100, 49000, n) for n in lengths]
        groups.append(PromptGroup(Problem(p, "q", "a"), rng.integers(100, 49000, rng.integers(40, 80)).tolist(),
                                  completions, [""] * group_size, [np.full(n, -2.0, np.float32) for n in lengths],
                                  [False] * group_size, 0, total_rewards=rng.random(group_size).tolist()))
    return groups


def learner(args, budget: int) -> Learner:
    cfg = load_config(DEMO_CONFIG, [
        f"model.path={args.model}", f"prompts_per_step={args.prompts}", f"rollout.group_size={args.group_size}",
        f"rollout.max_new_tokens={args.max_new_tokens}", "learner.num_ranks=1",
        f"learner.micro_batch_size={args.micro_batch_size}", f"learner.max_tokens_per_micro_batch={budget}",
        "learner.autocast_dtype=float32", "learner.beta=0", f"learner.num_threads={args.threads}",
        "cluster.include_dashboard=false"])
    rank = Learner(cfg, world_size=1, rank=0)
    rank.setup_alone("float32")
    return rank


def padded_fraction(plan) -> float:
    """Padding among the tokens the micro-batches hold, as collate pads them."""
    real = sum(sample_tokens(s) for micro in plan for s in micro)
    held = sum(len(micro) * (max(len(s.prompt_ids) for s in micro) + max(len(s.completion_ids) for s in micro))
               for micro in plan)
    return 1 - real / held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    batch = long_tailed_batch(args.prompts, args.group_size, args.max_new_tokens)
    longest_row = max(len(g.prompt_ids) for g in batch) + args.max_new_tokens
    budget = args.micro_batch_size * longest_row
    lengths = sorted(len(c) for g in batch for c in g.completion_ids)
    print(f"host: {machine()}; {args.threads} threads")
    print(f"batch: {len(lengths)} completions ({args.prompts} prompts x {args.group_size}) from {args.model}, "
          f"lengths min {lengths[0]} median {lengths[len(lengths) // 2]} max {lengths[-1]}; "
          f"fixed: {args.micro_batch_size} sequences a micro-batch; budget: {budget} tokens")
    print("| micro-batches | count | padded tokens | learner step (s) |")
    print("|---|---:|---:|---:|")
    for name, tokens in (("fixed count", 0), ("token budget", budget)):
        rank = learner(args, tokens)
        plan = rank.micro_batches(rank.shard(batch))
        seconds = median_seconds(partial(rank.train, batch), args.repeats, warmup=1)
        print(f"| {name} | {len(plan)} | {padded_fraction(plan):.0%} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
