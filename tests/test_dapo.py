"""DAPO (arXiv 2503.14476): soft overlong punishment against hand-computed values, as the reward scorer
adds it; dynamic sampling through the real driver loop in one process (LocalWorkers, tiny model)."""
import json

import pytest

from rl_system.algorithms.dapo import is_informative
from rl_system.config import RewardConfig, RewardFunctionConfig
from rl_system.data import Problem, PromptSampler, load_splits
from rl_system.local import LocalWorkers
from rl_system.pipeline import r1_zero
from rl_system.rewards.shaping import overlong_penalty
from rl_system.rewards.scoring import GroupScorer
from rl_system.types import PromptGroup
from tests.test_local_workers import local_config, logged


def test_overlong_penalty_by_hand():
    # L = 20, B = 5: free up to 15 tokens, then (15 - |y|) / 5 * penalty, -penalty past 20
    assert overlong_penalty([0, 10, 15], 20, 5) == [0.0, 0.0, 0.0]
    assert overlong_penalty([16, 18, 20], 20, 5) == pytest.approx([-0.2, -0.6, -1.0])
    assert overlong_penalty([21, 100], 20, 5) == [-1.0, -1.0]
    assert overlong_penalty([16, 18, 20, 25], 20, 5, penalty=0.5) == pytest.approx([-0.1, -0.3, -0.5, -0.5])
    assert overlong_penalty([17], 20, 20) == pytest.approx([-17 / 20])  # the ramp from the first token
    # buffer 0: no ramp, only a completion past L would pay (generation never writes one)
    assert overlong_penalty([0, 19, 20, 21], 20, 0) == [0.0, 0.0, 0.0, -1.0]
    assert overlong_penalty([], 20, 5) == []


def test_informative_means_rewards_that_differ():
    assert is_informative({"reward_std": 0.5, "total_reward": 0.5})
    assert not is_informative({"reward_std": 0.0, "total_reward": 1.0})
    # the std of three 0.1s comes out 1.4e-17, not 0: still no spread
    assert not is_informative({"reward_std": 1.3877787807814457e-17, "total_reward": 0.1})


def group_of(lengths: list[int]) -> PromptGroup:
    n = len(lengths)
    return PromptGroup(problem=Problem(0, "What is 1 + 2?", "3"), prompt_ids=[1, 2],
                       completion_ids=[[7] * k for k in lengths], completions=["<answer>3</answer>"] * n,
                       logprobs=[[0.0] * k for k in lengths], truncated=[k >= 10 for k in lengths], policy_version=0)


def test_group_scorer_adds_the_overlong_penalty_to_the_total():
    rc = RewardConfig(functions=(RewardFunctionConfig("tests.reward_fixtures:accept_all", 0.5),),
                      overlong_buffer=4, overlong_penalty=0.5)
    scorer = GroupScorer(rc, max_new_tokens=10)
    try:
        scored, summary = scorer.score(group_of([3, 6, 8, 10]))
    finally:
        scorer.close()
    # L - B = 6 tokens free; 8 tokens: (6 - 8) / 4 * 0.5 = -0.25; 10 (= L): -0.5
    assert scored.rewards["overlong"] == pytest.approx([0.0, 0.0, -0.25, -0.5])
    assert scored.total_rewards == pytest.approx([0.5, 0.5, 0.25, 0.0])  # 0.5 x accept_all + overlong (weight 1)
    assert summary["rewards"]["overlong"] == pytest.approx(-0.1875) and summary["reward_std"] > 0
    metrics = r1_zero.step_metrics([summary], None, {"generate": 1.0, "step": 1.0}, [], {})
    assert metrics["reward/overlong"] == pytest.approx(-0.1875) and metrics["reward/total"] == pytest.approx(0.3125)


def test_group_scorer_without_overlong_buffer_adds_nothing():
    scorer = GroupScorer(RewardConfig(functions=(RewardFunctionConfig("tests.reward_fixtures:accept_all"),)), 10)
    try:
        scored, _ = scorer.score(group_of([3, 10]))
    finally:
        scorer.close()
    assert "overlong" not in scored.rewards and scored.total_rewards == [1.0, 1.0]
    with pytest.raises(ValueError, match="overlong_buffer=4 needs max_new_tokens above it, got 0"):
        GroupScorer(RewardConfig(overlong_buffer=4))  # a caller that forgot rollout.max_new_tokens


# With 'spread_if_odd_answer' the only reward, a group is informative exactly when its answer is odd. The
# train problems in draw order (sampler positions = group keys) are odd, even, even, even, odd, even, odd, odd.
PARITY = [1, 0, 0, 0, 1, 0, 1, 1]
# Per mode, with 2 prompts a step and max_rounds = 2: per step, the keys added to the buffer and
# (rounds, filtered, extra, kept, surplus), and the data cursor each step's checkpoint saves.
# sync, step 1: keys 0,1 -> 0 kept; 2,3 -> none; out of rounds, trains on one group. Step 2: 4,5 -> 4; 6,7 -> both,
#   one more than needed (surplus). async (1 batch ahead), step 1: batches 0,1 and 2,3 submitted; 0,1 -> 0;
#   refill 4,5 -> 4. Step 2: batch 2,3 -> none; refill 6,7 -> both. Its checkpoint after step 1 starts at the
#   untrained batch ahead (key 2), not at the sampler (6).
EXPECTED = {
    "sync": ([[0], [4, 6]], [(2, 3, 2, 1, 0), (2, 1, 2, 2, 1)], [4, 8]),
    "async": ([[0, 4], [6, 7]], [(2, 2, 2, 2, 0), (2, 2, 2, 2, 0)], [2, 8]),
}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_dynamic_sampling_trains_only_informative_groups(tiny_model_dir, tmp_path, monkeypatch, mode):
    cfg = local_config(tiny_model_dir, tmp_path, "eval_after=false", "dynamic_sampling.enabled=true",
                       "dynamic_sampling.max_rounds=2", "checkpoint_every=1",
                       "reward.functions=[{name: 'tests.reward_fixtures:spread_if_odd_answer'}]",
                       *(["mode=async", "max_staleness=1"] if mode == "async" else []))
    drawn = PromptSampler(load_splits(cfg.data)[0], cfg.seed).next_batch(len(PARITY))
    assert [int(p.answer) % 2 for p in drawn] == PARITY  # the premise of EXPECTED
    workers = LocalWorkers(cfg)
    added, trained, cursors = [], [], []
    buffer_add, train_batch, save = workers.buffer_add, workers.train, r1_zero.save_checkpoint

    def record_add(keys, scored, summaries):
        added.append(list(keys))
        buffer_add(keys, scored, summaries)

    def record_train(batch):
        trained.append([group for _, group in batch])
        return train_batch(batch)

    def record_save(cfg, workers, path, **state):
        cursors.append(state["data_cursor"])
        save(cfg, workers, path, **state)

    workers.buffer_add, workers.train = record_add, record_train
    monkeypatch.setattr(r1_zero, "save_checkpoint", record_save)
    try:
        r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()

    keys, per_step, saved_cursors = EXPECTED[mode]
    assert added == keys and cursors == saved_cursors
    assert all(PARITY[k] for step in added for k in step)
    assert [len(batch) for batch in trained] == [len(step) for step in keys]
    assert all(max(g.total_rewards) > min(g.total_rewards) for batch in trained for g in batch)  # spread only
    lines = logged(tmp_path)
    names = ("rounds", "filtered_groups", "extra_groups", "kept_groups", "surplus_groups")
    assert [tuple(m[f"dapo/{name}"] for name in names) for m in lines] == per_step
    for m in lines:  # every generated group ends kept, filtered (no spread) or surplus (beyond prompts_per_step)
        generated = cfg.prompts_per_step * m["dapo/rounds"]
        assert m["dapo/kept_groups"] + m["dapo/filtered_groups"] + m["dapo/surplus_groups"] == generated
        assert m["dapo/extra_groups"] == generated - cfg.prompts_per_step
    assert [m["groups/generated"] for m in lines] == [4, 8] and [m["buffer/added"] for m in lines] == [
        len(keys[0]), len(keys[0]) + len(keys[1])]
    # The step's reward metrics describe every group generated: odd answers average 0.5, even ones 0.
    reward = "reward/tests.reward_fixtures:spread_if_odd_answer"
    assert [m[reward] for m in lines] == pytest.approx([0.125, 0.375] if mode == "sync" else [0.25, 0.25])
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    assert state["data_cursor"] == 8 and state["config"]["dynamic_sampling"]["enabled"]
