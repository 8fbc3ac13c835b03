import pytest

from rl_system.rewards import UnknownRewardError, accuracy_reward, extract_answer, format_reward, resolve_reward
from rl_system.rewards.runner import RewardRunner, weighted_total


def test_strict_format():
    good = "<think> 2 plus 3 is 5 </think> <answer>5</answer>"
    bad = [
        "<think> no answer tag </think>",
        "<answer>5</answer>",
        "<think> a </think> <answer>5</answer> trailing text",
        "<think> a <think> b </think> <answer>5</answer>",
        "<think> a </think> <answer>5</answer><answer>6</answer>",
    ]
    assert format_reward(None, [good] + bad) == [1.0] + [0.0] * len(bad)


def test_extract_answer_takes_last_block():
    assert extract_answer("<answer> 4 </answer> then <answer>-7</answer>") == "-7"
    assert extract_answer("the answer is 4") is None


def test_accuracy_with_reasoning_gym_grader():
    completions = ["<think>x</think><answer>-4</answer>", "<think>x</think><answer>4</answer>", "-4"]
    scores = accuracy_reward(None, completions, answer=["-4"] * 3, task=["chain_sum"] * 3,
                             metadata=['{"expression": "5 - 9"}'] * 3)
    assert scores == [1.0, 0.0, 0.0]  # the bare "-4" is outside <answer>: strict, no credit


def test_accuracy_with_math_verify_for_free_form_answers():
    completions = ["<answer>\\frac{1}{2}</answer>", "<answer>0.5</answer>", "<answer>1/3</answer>"]
    assert accuracy_reward(None, completions, answer=["1/2"] * 3) == [1.0, 1.0, 0.0]


def test_resolve_registered_and_user_rewards():
    assert resolve_reward("format") is format_reward
    assert resolve_reward("tests.reward_fixtures:length_bonus").__name__ == "length_bonus"
    with pytest.raises(UnknownRewardError, match="reward.functions name 'nope'"):
        resolve_reward("nope")


def test_runner_weights_and_logs_each_function():
    runner = RewardRunner([("format", 0.5), ("tests.reward_fixtures:length_bonus", 0.1)], timeout_s=30)
    try:
        result = runner.score(["q", "q"], ["<think>a</think><answer>1</answer>", "xy"], {"answer": ["1", "1"]})
    finally:
        runner.close()
    assert result.scores["format"] == [1.0, 0.0]
    assert result.scores["tests.reward_fixtures:length_bonus"] == [34.0, 2.0]
    weights = {"format": 0.5, "tests.reward_fixtures:length_bonus": 0.1}
    assert weighted_total(result.scores, weights) == pytest.approx([0.5 + 3.4, 0.2])
    assert result.failures == {}


def test_runner_contains_hang_crash_and_bad_shape():
    runner = RewardRunner([("tests.reward_fixtures:hangs", 1.0), ("tests.reward_fixtures:raises", 1.0),
                           ("tests.reward_fixtures:wrong_length", 1.0), ("format", 1.0),
                           ("tests.reward_fixtures:not_applicable", 1.0)],
                          timeout_s=3, failure_score=-1.0)
    try:
        result = runner.score(["q"] * 2, ["<think>a</think><answer>1</answer>"] * 2, {"answer": ["1", "1"]})
        again = runner.score(["q"], ["<think>a</think><answer>1</answer>"], {"answer": ["1"]})
    finally:
        runner.close()
    assert result.failures == {"tests.reward_fixtures:hangs": 1, "tests.reward_fixtures:raises": 1,
                               "tests.reward_fixtures:wrong_length": 1}
    assert result.scores["tests.reward_fixtures:hangs"] == [-1.0, -1.0]
    assert result.scores["format"] == [1.0, 1.0]  # the healthy reward still scored after the hang
    assert result.scores["tests.reward_fixtures:not_applicable"] == [0.0, 0.0]
    assert weighted_total(result.scores, dict(runner.functions)) == [-2.0, -2.0]
    assert runner.failure_counts["tests.reward_fixtures:hangs"] == 2  # counted across calls
    assert again.scores["format"] == [1.0]


def test_runner_rejects_unknown_reward_up_front():
    with pytest.raises(UnknownRewardError):
        RewardRunner([("accuracy", 1.0), ("does_not_exist", 1.0)], timeout_s=1)
