import math
import pickle
import time

import numpy as np
import pytest
import torch

from rl_system.algorithms.grpo import (
    aggregate_loss, clipped_policy_loss, group_advantages, gspo_old_logprobs, kl_k3, loss_normalizer, token_entropy,
    token_logprobs, truncated_importance_weight,
)
from rl_system.training import collate, flatten_groups, loss_counts


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, 5.0])
    groups = torch.tensor([7, 7, 7, 3, 3, 9])
    adv = group_advantages(rewards, groups, std_norm=True, eps=0.0)
    # group 7: mean 0.5, unbiased std 0.5 -> (1, -1, 0); group 3: zero spread -> 0; group of one -> 0
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0, 0.0])
    centred = group_advantages(rewards, groups, std_norm=False)
    assert centred.tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0, 0.0])


def test_group_advantages_interleaved_ids_match_per_group_loop():
    torch.manual_seed(0)
    rewards = torch.rand(24)
    groups = torch.randint(0, 5, (24,))
    adv = group_advantages(rewards, groups, eps=1e-6)
    for g in groups.unique():
        sel = groups == g
        r = rewards[sel]
        expected = (r - r.mean()) / (r.std() + 1e-6) if sel.sum() > 1 else torch.zeros_like(r)
        assert torch.allclose(adv[sel], expected, atol=1e-5)


def test_no_rewards_give_no_advantages():
    for std_norm in (True, False):
        adv = group_advantages(torch.tensor([]), torch.tensor([], dtype=torch.long), std_norm=std_norm)
        assert adv.shape == (0,) and adv.dtype == torch.float32
    assert flatten_groups([], std_norm=True) == []  # a batch without groups


def test_clipped_loss_hand_computed():
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.0]]))  # ratios vs old=0: 1.5, 0.5, 1.0
    old = torch.zeros_like(logprobs)
    loss, clipped, _ = clipped_policy_loss(logprobs, old, torch.tensor([2.0]), epsilon_low=0.2, epsilon_high=0.3)
    # A>0: -A*min(r, clip(r)): r=1.5 -> clip 1.3 -> -2.6 ; r=0.5 -> min(0.5, 0.8)=0.5 -> -1.0 ; r=1 -> -2
    assert loss[0].tolist() == pytest.approx([-2.6, -1.0, -2.0], abs=1e-6)
    assert clipped.tolist() == [[1.0, 0.0, 0.0]]
    loss_neg, clipped_neg, _ = clipped_policy_loss(logprobs, old, torch.tensor([-1.0]), 0.2, 0.3)
    # A<0: -A*max(r, clip(r)): r=1.5 -> 1.5 ; r=0.5 -> clip 0.8 ; r=1 -> 1
    assert loss_neg[0].tolist() == pytest.approx([1.5, 0.8, 1.0], abs=1e-6)
    assert clipped_neg.tolist() == [[0.0, 1.0, 0.0]]


def test_dual_clip_bounds_negative_advantage_losses_only():
    logprobs = torch.log(torch.tensor([[5.0, 2.0, 0.5]]))  # ratios 5, 2, 0.5
    old = torch.zeros_like(logprobs)
    # A=-1, c=3: -A*max(r, clip(r)) = 5, 2, 0.8, then min(., -A*c = 3) -> 3, 2, 0.8
    loss, _, dual = clipped_policy_loss(logprobs, old, torch.tensor([-1.0]), 0.2, 0.2, dual_clip=3.0)
    assert loss[0].tolist() == pytest.approx([3.0, 2.0, 0.8], abs=1e-6) and dual.tolist() == [[1.0, 0.0, 0.0]]
    # the bound is a constant: no gradient flows through a dual-clipped token
    lp = logprobs.clone().requires_grad_()
    clipped_policy_loss(lp, old, torch.tensor([-1.0]), 0.2, 0.2, dual_clip=3.0)[0].sum().backward()
    assert lp.grad[0, 0] == 0 and lp.grad[0, 1] != 0
    # A>0 is untouched: -2*min(r, clip(r)) = -2.4, -2.4, -1.0
    pos, _, dual_pos = clipped_policy_loss(logprobs, old, torch.tensor([2.0]), 0.2, 0.2, dual_clip=3.0)
    assert pos[0].tolist() == pytest.approx([-2.4, -2.4, -1.0], abs=1e-6) and dual_pos.sum() == 0


def test_gspo_ratio_is_the_length_normalised_sequence_ratio():
    # sequence 0: token log-ratios 0.3, -0.1 (mean 0.1); sequence 1: 0.9 on its one real token
    old = torch.tensor([[-1.0, -2.0], [-1.0, 0.0]])
    logprobs = (old + torch.tensor([[0.3, -0.1], [0.9, 5.0]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    base = gspo_old_logprobs(logprobs, old, mask)
    ratio = torch.exp(logprobs - base)
    assert ratio[0].tolist() == pytest.approx([math.exp(0.1)] * 2, abs=1e-6)
    assert ratio[1, 0].item() == pytest.approx(math.exp(0.9), abs=1e-6)
    # clipping acts on whole sequences: with eps 0.2 the second (ratio 2.46, A > 0) is clipped everywhere
    loss, clipped, _ = clipped_policy_loss(logprobs, base, torch.tensor([1.0, 1.0]), 0.2, 0.2)
    assert (clipped * mask).tolist() == [[0.0, 0.0], [1.0, 0.0]]
    # gradient of the sequence's loss -s*A (seq-mean-token-mean) is -s * mean_t grad lp_t: -s/2 per token
    aggregate_loss(loss[:1], mask[:1], "seq-mean-token-mean", 1.0).backward()
    assert logprobs.grad[0].tolist() == pytest.approx([-math.exp(0.1) / 2] * 2, abs=1e-6)


def test_token_entropy_hand_computed():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-12, 1e-12]]]))
    expected = [-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), 0.0]
    assert token_entropy(logits).tolist()[0] == pytest.approx(expected, abs=1e-5)
    # temperature -> infinity: uniform over 3 tokens
    assert token_entropy(logits[:, :1], temperature=1e6).item() == pytest.approx(math.log(3), abs=1e-4)


def test_reinforce_pp_over_ranks_equals_the_whole_batch():
    """Each rank holds whole groups; REINFORCE++'s batch mean and std come from moments summed over
    the ranks (an all-reduce in the learner), and give the single-process advantages."""
    from rl_system.algorithms.advantages import advantages

    torch.manual_seed(0)
    rewards, groups = torch.rand(12), torch.arange(12) // 4
    whole = advantages("reinforce_pp", rewards, groups)
    halves = [(rewards[:4], groups[:4]), (rewards[4:], groups[4:])]
    moments = []
    for r, g in halves:  # what each rank contributes
        advantages("reinforce_pp", r, g, across_ranks=lambda m: moments.append(m) or m)
    summed = moments[0] + moments[1]
    per_rank = torch.cat([advantages("reinforce_pp", r, g, across_ranks=lambda m: summed) for r, g in halves])
    assert torch.allclose(per_rank, whole, atol=1e-5)


def test_overlong_filter_masks_truncated_completions_out_of_the_loss():
    from rl_system.data import Problem
    from rl_system.types import PromptGroup

    group = PromptGroup(Problem(0, "q", "1"), [1, 2], [[3, 4], [5], [6, 7, 8]], ["a", "b", "c"],
                        [[-1.0, -1.0], [-1.0], [-1.0] * 3], [False, False, True], 0, total_rewards=[1.0, 0.0, 0.0])
    kept = flatten_groups([group], True, overlong_filter=True)
    assert [s.in_loss for s in kept] == [True, True, False]
    # the truncated one still counts in its group's baseline
    assert [s.advantage for s in kept] == pytest.approx([s.advantage for s in flatten_groups([group], True)])
    batch = collate(kept, 0, torch.device("cpu"))
    assert batch["mask"].tolist() == [[1, 1, 0], [1, 0, 0], [0, 0, 0]]
    assert loss_counts(kept) == (2, 3)  # its sequence and tokens are not in the denominator
    assert loss_normalizer("token-mean", *loss_counts(kept), 8) == 3.0
    assert loss_normalizer("seq-mean-token-mean", *loss_counts(kept), 8) == 2.0
    assert loss_normalizer("seq-mean-token-mean", *loss_counts([]), 8) == 1.0  # never a division by 0


def test_policy_update_options_are_checked():
    from rl_system.config import ConfigError, load_config

    cfg = load_config("configs/r1_zero.yaml", ["learner.ppo_epochs=2", "learner.mini_batches=2", "learner.dual_clip=3",
                                               "learner.policy_loss=gspo", "learner.entropy_coef=0.001"])
    assert (cfg.learner.ppo_epochs, cfg.learner.mini_batches, cfg.learner.policy_loss) == (2, 2, "gspo")
    for override, message in (("learner.ppo_epochs=0", "'learner.ppo_epochs': expected an integer >= 1"),
                              ("learner.mini_batches=17", "'learner.mini_batches': expected at most the sequences per rank (16)"),
                              ("learner.dual_clip=0.5", "'learner.dual_clip': expected 0 (off) or a number > 1"),
                              ("learner.policy_loss=dpo", "'learner.policy_loss': expected one of"),
                              ("learner.entropy_coef=-1", "'learner.entropy_coef': expected a number >= 0")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config("configs/r1_zero.yaml", [override])


def test_truncated_importance_weight_hand_computed():
    learner = torch.tensor([[-1.0, -2.0, -1.0]], requires_grad=True)
    rollout = torch.tensor([[-1.5, -1.0, -2.0]])
    w = truncated_importance_weight(learner, rollout, cap=2.0)
    # exp(0.5) = 1.6487, exp(-1) = 0.3679, exp(1) = 2.718 capped at 2
    assert w.tolist()[0] == pytest.approx([math.exp(0.5), math.exp(-1.0), 2.0])
    assert not w.requires_grad  # a weight on the loss, not a path for gradients


def test_step_statistics_add_up_but_maxima_take_the_max():
    from rl_system.training import merge_stats, tis_cap
    from rl_system.config import load_config

    totals = merge_stats({}, {"tokens": 3.0, "behaviour_logprob_abs_diff_max": 0.2})
    merge_stats(totals, {"tokens": 4.0, "behaviour_logprob_abs_diff_max": 0.1})
    assert totals == {"tokens": 7.0, "behaviour_logprob_abs_diff_max": 0.2}
    assert tis_cap(load_config("configs/r1_zero.yaml")) == 0.0  # HF: the rollout runs the learner's model code
    assert tis_cap(load_config("configs/r1_zero.yaml", ["rollout.backend=vllm", "rollout.num_gpus=1"])) == 2.0
    assert tis_cap(load_config("configs/r1_zero.yaml", ["learner.tis_cap=5"])) == 5.0


def test_kl_k3_hand_computed_and_nonnegative():
    lp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.2)])
    kl = kl_k3(lp, ref)
    assert kl.tolist() == pytest.approx([0.5 - math.log(0.5) - 1, 0.0], abs=1e-6)
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def test_aggregation_modes_hand_computed():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    lengths = [3, 1]
    seq = aggregate_loss(per_token, mask, "seq-mean-token-mean", loss_normalizer("seq-mean-token-mean", len(lengths), sum(lengths), 4))
    assert seq.item() == pytest.approx((2.0 + 4.0) / 2)
    tok = aggregate_loss(per_token, mask, "token-mean", loss_normalizer("token-mean", len(lengths), sum(lengths), 4))
    assert tok.item() == pytest.approx(10.0 / 4)
    dr = aggregate_loss(per_token, mask, "seq-mean-token-sum-norm", loss_normalizer("seq-mean-token-sum-norm", len(lengths), sum(lengths), 4))
    assert dr.item() == pytest.approx(10.0 / (2 * 4))


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_sharded_aggregation_sums_to_global_loss(mode):
    torch.manual_seed(1)
    per_token = torch.randn(8, 5)
    mask = (torch.rand(8, 5) > 0.3).float()
    mask[:, 0] = 1
    lengths = mask.sum(-1).int().tolist()
    norm = loss_normalizer(mode, len(lengths), sum(lengths), 5)
    whole = aggregate_loss(per_token, mask, mode, norm)
    shards = sum(aggregate_loss(per_token[i:i + 3], mask[i:i + 3], mode, norm) for i in range(0, 8, 3))
    assert shards.item() == pytest.approx(whole.item(), rel=1e-5)


def test_token_logprobs_matches_log_softmax():
    logits = torch.randn(2, 3, 11)
    tokens = torch.randint(0, 11, (2, 3))
    expected = torch.log_softmax(logits / 0.7, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, tokens, 0.7), expected, atol=1e-5)


def test_unknown_aggregation_is_rejected():
    with pytest.raises(ValueError, match="loss_agg"):
        aggregate_loss(torch.zeros(1, 1), torch.ones(1, 1), "sum", 1.0)


def test_rloo_and_reinforce_pp_advantages_hand_computed():
    from rl_system.algorithms.advantages import advantages

    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0, 2.0, 5.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    # RLOO: r_i - mean of the others. Group 0: 1 - 0 = 1, 0 - 0.5 = -0.5 (twice); group 1: 0, 0; group 2 alone: 0.
    assert advantages("rloo", rewards, groups).tolist() == pytest.approx([1.0, -0.5, -0.5, 0.0, 0.0, 0.0])
    # REINFORCE++: minus the group mean (2/3, -1/3, -1/3, 0, 0, 0), then the batch's mean (0) and std.
    centred = torch.tensor([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 0.0])
    expected = (centred - centred.mean()) / centred.std()
    assert advantages("reinforce_pp", rewards, groups).tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    # GRPO is group_advantages; an unknown name and the empty batch.
    assert advantages("grpo", rewards, groups).tolist() == pytest.approx(group_advantages(rewards, groups).tolist())
    assert advantages("rloo", torch.tensor([]), torch.tensor([], dtype=torch.long)).numel() == 0
    with pytest.raises(ValueError, match="learner.advantage 'ppo'"):
        advantages("ppo", rewards, groups)


def test_advantage_estimator_is_checked():
    from rl_system.config import ConfigError, load_config

    assert load_config("configs/r1_zero.yaml", ["learner.advantage=rloo"]).learner.advantage == "rloo"
    with pytest.raises(ConfigError, match="'learner.advantage': expected one of"):
        load_config("configs/r1_zero.yaml", ["learner.advantage=gae"])
    with pytest.raises(ConfigError, match="'learner.std_norm': expected true with learner.advantage=rloo"):
        load_config("configs/r1_zero.yaml", ["learner.advantage=rloo", "learner.std_norm=false"])


def test_the_learner_trains_on_the_chosen_estimators_advantages():
    from rl_system.data import Problem
    from rl_system.types import PromptGroup

    group = PromptGroup(Problem(0, "q", "1"), [1, 2], [[3], [4], [5]], ["a", "b", "c"], [[-1.0]] * 3, [False] * 3, 0,
                        total_rewards=[1.0, 0.0, 0.0])
    assert [s.advantage for s in flatten_groups([group], True, "rloo")] == pytest.approx([1.0, -0.5, -0.5])
    assert [s.advantage for s in flatten_groups([group], True, "grpo")] == pytest.approx(
        group_advantages(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0, 0, 0])).tolist())


def test_the_group_payload_is_numpy_and_pickles_far_faster_than_lists():
    """PromptGroup's token payload crosses the object store as numpy arrays (rl_system/types.py):
    lists given to the constructor become int32 / float32 / bool arrays, collate reads them, and a
    16 x 2048-token group pickles and unpickles several times faster than the same data as lists."""
    from rl_system.data import Problem
    from rl_system.types import PromptGroup

    group = PromptGroup(Problem(0, "q", "1"), [1, 2], [[3, 4], [5]], ["a", "b"], [[-1.0, -2.0], [-0.5]], [False] * 2,
                        0, total_rewards=[1.0, 0.0], loss_masks=[[1, 0], [1]])
    assert [a.dtype for a in (*group.completion_ids, *group.logprobs, *group.loss_masks)] == [np.int32] * 2 + [
        np.float32] * 2 + [np.bool_] * 2
    batch = collate(flatten_groups([group], True), 0, torch.device("cpu"))
    assert batch["targets"].tolist() == [[3, 4], [5, 0]] and batch["mask"].tolist() == [[1, 0], [1, 0]]
    assert batch["behaviour_logprobs"].tolist() == [[-1.0, -2.0], [-0.5, 0.0]]

    rng = np.random.default_rng(0)
    big = PromptGroup(Problem(0, "q", "1"), list(range(64)),
                      [rng.integers(100, 49000, 2048, dtype=np.int32) for _ in range(16)], ["x"] * 16,
                      [rng.random(2048, dtype=np.float32) for _ in range(16)], [False] * 16, 0)
    as_lists = pickle.loads(pickle.dumps(big))
    as_lists.completion_ids = [ids.tolist() for ids in big.completion_ids]
    as_lists.logprobs = [lp.tolist() for lp in big.logprobs]

    def round_trip(g) -> float:  # the fastest of a few: the least disturbed by other load
        best = math.inf
        for _ in range(5):
            start = time.perf_counter()
            pickle.loads(pickle.dumps(g, protocol=pickle.HIGHEST_PROTOCOL))
            best = min(best, time.perf_counter() - start)
        return best

    back = pickle.loads(pickle.dumps(big))
    assert all(np.array_equal(a, b) for a, b in zip(back.completion_ids, big.completion_ids))
    assert round_trip(as_lists) > 3 * round_trip(big)
