"""learner.max_tokens_per_micro_batch: micro-batches cut by padded tokens and samples dealt to ranks
by tokens (the pure helpers, on long-tailed lengths), and the same update as the fixed-count path
on real DeepSpeed ranks (one, and two in processes of their own, no Ray)."""
import dataclasses
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from rl_system.config import load_config
from rl_system.data import Problem
from rl_system.learner import Learner
from rl_system.training import token_balanced_shards, token_budget_micro_batches
from rl_system.types import PromptGroup


def long_tailed(n: int, seed: int) -> list[int]:
    """Pareto lengths up to a cap, and a few ten times the median: what a reasoning batch's completions look like."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(400, 20 * (1 + rng.pareto(1.5, n))).astype(int).tolist()  # capped, as max_new_tokens does
    for i in rng.choice(n, size=max(1, n // 32), replace=False):
        lengths[i] = 10 * int(np.median(lengths))
    return lengths


@pytest.mark.parametrize("seed", range(5))
def test_budget_micro_batches_hold_every_sample_once_within_the_budget(seed):
    completions = long_tailed(200, seed)
    shapes = [(10 + i % 7, c) for i, c in enumerate(completions)]
    budget = 1024
    shapes[0] = (10, 1500)  # longer than the budget by itself
    batches = token_budget_micro_batches(shapes, budget)
    assert sorted(i for b in batches for i in b) == list(range(len(shapes)))
    for b in batches:
        padded = len(b) * (max(shapes[i][0] for i in b) + max(shapes[i][1] for i in b))
        assert padded <= budget or len(b) == 1  # a sample over the budget goes alone
    assert [0] in batches
    assert batches == token_budget_micro_batches(shapes, budget)  # deterministic
    # Packing like lengths pads far less than cutting the batch in order into as many micro-batches.
    per_micro = -(-len(shapes) // len(batches))
    in_order = [list(range(i, min(i + per_micro, len(shapes)))) for i in range(0, len(shapes), per_micro)]

    def padding(cut):
        real = sum(map(sum, shapes))
        return 1 - real / sum(len(b) * (max(shapes[i][0] for i in b) + max(shapes[i][1] for i in b)) for b in cut)
    assert padding(batches) < 0.5 * padding(in_order)


@pytest.mark.parametrize("world", [2, 4, 8])
@pytest.mark.parametrize("seed", range(5))
def test_ranks_get_tokens_within_ten_percent_of_the_mean(world, seed):
    tokens = long_tailed(256, seed)
    shards = token_balanced_shards(tokens, world)
    assert sorted(i for s in shards for i in s) == list(range(len(tokens)))
    assert all(s == sorted(s) for s in shards)  # each rank's samples in batch order
    loads = [sum(tokens[i] for i in s) for s in shards]
    mean = sum(loads) / world
    assert max(abs(load - mean) for load in loads) <= 0.1 * mean
    assert shards == token_balanced_shards(list(tokens), world)  # every rank computes the same split
    # Cutting by count, as without a budget, leaves the ranks further apart on the same batch.
    by_count = [sum(tokens[r * len(tokens) // world:(r + 1) * len(tokens) // world]) for r in range(world)]
    assert max(by_count) - min(by_count) > max(loads) - min(loads)


def test_fewer_samples_than_ranks_leave_a_rank_empty():
    assert token_balanced_shards([5, 9], 3) == [[1], [0], []]
    assert token_budget_micro_batches([], 100) == []


BUDGET = 48  # tokens: the long completions alone, the short ones several to a micro-batch


def config(tiny_model_dir, world: int, budget: int, **learner):
    overrides = [f"model.path={tiny_model_dir}", "prompts_per_step=4", "rollout.group_size=4",
                 f"learner.num_ranks={world}", "learner.micro_batch_size=2", "learner.lr=0.1",
                 # Adam's eps far above the gradients: each step moves the weights by lr x the (averaged)
                 # gradient, so the weights compare the gradients (at eps 1e-8, lr x their sign).
                 "learner.deepspeed={optimizer: {params: {eps: 1.0}}}",
                 "learner.autocast_dtype=float32", "learner.beta=0.1", "learner.num_threads=1",
                 f"learner.max_tokens_per_micro_batch={budget}", "rollout.max_new_tokens=80"]
    overrides += [f"learner.{k}={v}" for k, v in learner.items()]
    return load_config("configs/r1_zero.yaml", overrides)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def learner(cfg, world: int = 1, rank: int = 0, port: int | None = None) -> Learner:
    rank_ = Learner(cfg, world_size=world, rank=rank)
    rank_.setup("127.0.0.1", port or free_port(), publish_dtype="float32")
    return rank_


def long_tailed_batch(version: int = 0) -> list[PromptGroup]:
    """4 groups of 4; completions of 3 to 80 tokens, a few long ones among short ones."""
    rng = np.random.default_rng(0)
    lengths = [[3, 5, 80, 4], [6, 60, 3, 7], [2, 4, 5, 3], [70, 8, 9, 2]]
    groups = []
    for g, group_lengths in enumerate(lengths):
        prompt = rng.integers(10, 500, size=5 + 3 * g).tolist()
        completions = [rng.integers(10, 500, size=n) for n in group_lengths]
        groups.append(PromptGroup(Problem(g, "q", "a"), prompt, completions, [""] * 4,
                                  [np.full(n, -2.0, dtype=np.float32) for n in group_lengths], [False] * 4, version,
                                  total_rewards=rng.random(4).tolist()))
    return groups


def parameters(rank: Learner) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in rank.engine.module.parameters()])


def assert_same_update(a: dict, b: dict) -> None:
    for key in ("loss", "kl", "tokens", "clipped_tokens", "grad_norm", "sequences"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key


def test_token_budget_trains_like_the_fixed_count(tiny_model_dir):
    """Same loss, KL (the reference pass), clipping (the old log-probs' pass), gradient norm and
    weights after the steps, on one rank; only the micro-batches differ."""
    fixed, budget = learner(config(tiny_model_dir, 1, 0)), learner(config(tiny_model_dir, 1, BUDGET))
    batch = long_tailed_batch()
    samples = budget.shard(batch)
    assert len(budget.micro_batches(samples)) != len(fixed.micro_batches(samples))
    start = parameters(fixed)
    for options in ({}, {"ppo_epochs": 2, "mini_batches": 2, "epsilon_low": 1e-4, "epsilon_high": 1e-4}):
        stats = []
        for rank in (fixed, budget):
            rank.cfg = dataclasses.replace(rank.cfg, learner=dataclasses.replace(rank.cfg.learner, **options))
            stats.append(rank.train(long_tailed_batch(rank.version)))
        assert_same_update(*stats)
        assert torch.allclose(parameters(fixed), parameters(budget), atol=1e-5, rtol=0)
    assert stats[1]["clipped_tokens"] > 0 and stats[1]["kl"] > 0
    assert (parameters(budget) - start).abs().max() > 1e-4  # the weights did move


def train_on_two_ranks(rank: int, port: int, tiny_model_dir: str, results) -> None:
    """One rank's part, fixed count then token budget: its count share of the groups without a
    budget, the whole batch with one (as the controller hands them out)."""
    torch.set_num_threads(1)
    batch = long_tailed_batch()
    for budget, groups in ((0, batch[rank * 2:(rank + 1) * 2]), (BUDGET, batch)):
        cfg = config(tiny_model_dir, 2, budget, ppo_epochs=2)  # one mini-batch: the ranks' shares differ by path
        learner_rank = learner(cfg, world=2, rank=rank, port=port)
        stats = learner_rank.train(groups)
        plan = learner_rank.micro_batches(learner_rank.shard(groups))
        results.put((budget, rank, stats, parameters(learner_rank).numpy(), len(plan)))
    torch.distributed.destroy_process_group()


def test_two_ranks_with_different_micro_batch_counts_train_like_the_fixed_count(tiny_model_dir):
    """Each rank keeps its token-balanced share and they agree on the most micro-batches (zero-weight
    padding for the rank with fewer): the update is the fixed-count one's."""
    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    workers = [context.Process(target=train_on_two_ranks, args=(r, port, tiny_model_dir, results)) for r in range(2)]
    for w in workers:
        w.start()
    out = sorted((results.get(timeout=300) for _ in range(4)), key=lambda r: r[:2])
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    fixed, budget = out[:2], out[2:]
    assert budget[0][4] != budget[1][4]  # the ranks cut their shares into different numbers of micro-batches
    totals = []
    for ranks in (fixed, budget):
        summed = {k: sum(r[2][k] for r in ranks) for k in ("loss", "kl", "tokens", "clipped_tokens", "sequences")}
        totals.append({**summed, "grad_norm": ranks[0][2]["grad_norm"]})
        assert np.array_equal(ranks[0][3], ranks[1][3])  # the ranks' weights agree
    # The per-rank losses differ (other samples); their sum, the global loss, does not.
    assert_same_update(*totals)
    assert np.allclose(fixed[0][3], budget[0][3], atol=1e-5, rtol=0)
