"""Data and reward functions in the formats of TRL, veRL and OpenRLHF, and HF datasets directories:
each fixture written here in the peer's own layout, loaded through load_splits, and scored the way
the peer calls its rewards."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rl_system.config import ConfigError, DataConfig, RewardConfig, RewardFunctionConfig, load_config
from rl_system.data import R1_SYSTEM_PROMPT, load_splits
from rl_system.data.sources import DatasetError, save_dataset
from rl_system.rewards import POSITIONAL, TRL, VERL, UnknownRewardError, resolve_reward, reward_convention
from rl_system.rewards.probe import RewardProbeError, probe_rewards
from rl_system.rewards.runner import RewardRunner
from rl_system.rewards.scoring import GroupScorer
from rl_system.rollout.params import chat_texts
from rl_system.types import PromptGroup
from tests.ray_guard import StartedRay

VERL_SYSTEM = "Let's think step by step and output the final answer after ####."


def verl_rows(n: int) -> list[dict]:
    """Rows as veRL's examples/data_preprocess/gsm8k.py writes them."""
    return [{"data_source": "openai/gsm8k",
             "prompt": [{"role": "system", "content": VERL_SYSTEM},
                        {"role": "user", "content": f"What is {i} + {i}?"}],
             "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
             "extra_info": {"split": "train", "index": i}} for i in range(n)]


def trl_rows(n: int) -> list[dict]:
    """A TRL conversational prompt-only dataset with a `solution` column (as in TRL's GRPO docs)."""
    return [{"prompt": [{"role": "user", "content": f"What is {i} times 3?"}], "solution": str(3 * i)}
            for i in range(n)]


@pytest.fixture
def verl_parquet(tmp_path):
    import datasets

    path = tmp_path / "gsm8k_train.parquet"
    datasets.Dataset.from_list(verl_rows(12)).to_parquet(str(path))
    return path


@pytest.fixture
def trl_dict_dir(tmp_path):
    import datasets

    path = tmp_path / "trl_math"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(trl_rows(12)),
                          "test": datasets.Dataset.from_list(trl_rows(20)[12:])}).save_to_disk(str(path))
    return path


def test_verl_parquet_keeps_its_system_message_and_nested_answer(verl_parquet, tiny_model_dir):
    from transformers import AutoTokenizer

    cfg = DataConfig(source="file", path=str(verl_parquet), prompt_column="prompt",
                     answer_column="reward_model.ground_truth", num_train=100, num_eval=2,
                     system_prompt="not used: the rows bring their own")
    train, held_out = load_splits(cfg)
    assert (len(train), len(held_out)) == (10, 2)
    problem = train[0]
    i = int(problem.question.split()[2])
    assert problem.question == f"What is {i} + {i}?" and problem.answer == str(2 * i)
    assert problem.messages[0] == {"role": "system", "content": VERL_SYSTEM}
    # every column but the prompt reaches the rewards under its own name
    assert problem.columns == {"data_source": "openai/gsm8k", "ability": "math",
                               "reward_model": {"style": "rule", "ground_truth": str(2 * i)},
                               "extra_info": {"split": "train", "index": i}}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = chat_texts(tokenizer, [problem], cfg.system_prompt, ["<think>"])[0]
    expected = tokenizer.apply_chat_template(list(problem.messages), tokenize=False, add_generation_prompt=True)
    assert text == expected + "<think>"  # the template applied once, to the row's own chat
    assert text.count(VERL_SYSTEM) == 1 and "not used" not in text and R1_SYSTEM_PROMPT not in text


def test_chat_rows_without_a_system_message_get_the_configured_one(trl_dict_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    train, _ = load_splits(DataConfig(source="file", path=str(trl_dict_dir), prompt_column="prompt",
                                      answer_column="solution", num_eval=2, system_prompt="Answer in tags."))
    problem = train[0]
    assert problem.messages == ({"role": "user", "content": problem.question},)
    assert problem.columns == {"solution": problem.answer}
    text = chat_texts(tokenizer, [problem], "Answer in tags.", [""])[0]
    assert text == tokenizer.apply_chat_template([{"role": "system", "content": "Answer in tags."},
                                                  {"role": "user", "content": problem.question}],
                                                 tokenize=False, add_generation_prompt=True)


def test_hf_directories_dataset_dict_split_and_plain_dataset(trl_dict_dir, tmp_path):
    args = dict(source="file", prompt_column="prompt", answer_column="solution", num_eval=2)
    train, _ = load_splits(DataConfig(path=str(trl_dict_dir), **args))
    assert len(train) == 10
    test_split, _ = load_splits(DataConfig(path=str(trl_dict_dir), split="test", **args))
    assert {p.answer for p in test_split} <= {str(3 * i) for i in range(12, 20)} and len(test_split) == 6
    same, _ = load_splits(DataConfig(path=str(trl_dict_dir / "train"), **args))  # <dict>/train: a Dataset dir
    assert [p.question for p in same] == [p.question for p in train]
    with pytest.raises(DatasetError, match=r"a DatasetDict with splits train, test; no split 'dev' \(set data.split\)"):
        load_splits(DataConfig(path=str(trl_dict_dir), split="dev", **args))
    # the project's own outputs (collect-samples, rejection-sample) are datasets directories too
    own = save_dataset([{"question": f"{i} + 1 =", "answer": str(i + 1), "completion": "..."} for i in range(8)],
                       tmp_path / "samples", {"made_by": "test"})
    train, held_out = load_splits(DataConfig(source="file", path=str(own), num_eval=3))
    assert (len(train), len(held_out)) == (5, 3) and "completion" in train[0].columns


def test_csv_and_arrow_files_through_datasets_loaders(tmp_path):
    import datasets

    rows = [{"question": f"{i} + 2 =", "answer": i + 2} for i in range(6)]
    datasets.Dataset.from_list(rows).to_csv(str(tmp_path / "qa.csv"), index=False)
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(saved))
    arrow = next(saved.glob("*.arrow"))
    for path in (tmp_path / "qa.csv", arrow):
        train, held_out = load_splits(DataConfig(source="file", path=str(path), num_eval=1))
        assert len(train) + len(held_out) == 6 and {p.answer for p in train + held_out} == {str(i + 2) for i in range(6)}


def test_openrlhf_jsonl_of_ten_rows_runs_with_the_default_num_eval(tmp_path):
    path = tmp_path / "openrlhf.jsonl"
    path.write_text("".join(json.dumps({"input": f"Compute {i} * 7.", "label": str(7 * i)}) + "\n" for i in range(10)))
    # OpenRLHF's --input_key / --label_key are data.prompt_column / data.answer_column here
    cfg = load_config(None, ["data.source=file", f"data.path={path}", "data.prompt_column=input",
                             "data.answer_column=label"])
    assert cfg.data.num_eval == "auto"
    train, held_out = load_splits(cfg.data)
    assert (len(train), len(held_out)) == (5, 5)  # auto: min(64, half the distinct questions)
    train, held_out = load_splits(DataConfig(source="file", path=str(path), prompt_column="input",
                                             answer_column="label", num_eval=0.2))
    assert (len(train), len(held_out)) == (8, 2)
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"input": "Compute 1 * 7.", "label": "7"}) + "\n")
    with pytest.raises(DatasetError, match=r"1 rows, 1 distinct question; need more than data.num_eval=auto \(1\) "
                                           "to leave any for training"):
        load_splits(DataConfig(source="file", path=str(one), prompt_column="input", answer_column="label"))


@pytest.mark.parametrize("value, message", [
    ("1.5", "a positive integer, a fraction in (0, 1) or 'auto', got 1.5"),
    ("automatic", "a positive integer, a fraction in (0, 1) or 'auto', got 'automatic'"),
])
def test_num_eval_rejects_what_it_cannot_mean(value, message):
    with pytest.raises(ConfigError, match=f"config key 'data.num_eval': expected {message}".replace("(", r"\(")
                       .replace(")", r"\)")):
        load_config(None, [f"data.num_eval={value}"])


@pytest.mark.parametrize("prompt, message", [
    ([{"role": "user", "content": 3}], "column 'prompt' message 0: expected {role: system / user / assistant / "
                                       "tool, content: text}, got dict {'role': 'user', 'content': 3}"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>"}],
     "column 'prompt': the last message must be the user's, with text; got dict"),
    ([], "column 'prompt' must be non-empty text or a list of chat messages ({role, content}), got list []"),
])
def test_bad_chat_prompts_are_one_line_row_errors(tmp_path, prompt, message):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "1+1?"}], "solution": "2"}) + "\n"
                    + json.dumps({"prompt": prompt, "solution": "3"}) + "\n")
    with pytest.raises(DatasetError) as e:
        load_splits(DataConfig(source="file", path=str(path), prompt_column="prompt", answer_column="solution"))
    assert str(e.value).startswith(f"data.path '{path}' row 1 (line 2): {message}")


def test_a_missing_nested_answer_names_the_row(tmp_path):
    import datasets

    rows = verl_rows(3)
    rows[2]["reward_model"] = {"style": "rule", "ground_truth": None}
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "v.parquet"))
    with pytest.raises(DatasetError, match=r"row 2: column 'reward_model.ground_truth' is empty"):
        load_splits(DataConfig(source="file", path=str(tmp_path / "v.parquet"), prompt_column="prompt",
                               answer_column="reward_model.ground_truth"))
    with pytest.raises(DatasetError, match=r"row 0: column 'reward_model.answer': 'reward_model' has no 'answer' "
                                           r"\(keys: style, ground_truth\)"):
        load_splits(DataConfig(source="file", path=str(tmp_path / "v.parquet"), prompt_column="prompt",
                               answer_column="reward_model.answer"))


def test_conventions_told_apart_by_parameters():
    assert reward_convention("format", resolve_reward("format")) == POSITIONAL
    assert reward_convention("x:f", lambda p, c, **kw: []) == POSITIONAL
    for name in ("trl_format_reward", "trl_accuracy_reward", "trl_sees", "length_bonus"):
        assert reward_convention(name, resolve_reward(f"tests.reward_fixtures:{name}")) == TRL
    for name in ("compute_score", "verl_float_score"):
        assert reward_convention(name, resolve_reward(f"tests.reward_fixtures:{name}")) == VERL
    with pytest.raises(UnknownRewardError, match=r"expected a function .* TRL's f\(completions, \*\*kwargs\) or "
                                                 r"veRL's compute_score"):
        reward_convention("x:f", lambda text, **kw: [])


def trl_group(problem, completions: list[str]) -> PromptGroup:
    return PromptGroup(problem, [1, 2], [np.arange(len(c) % 5 + 1) for c in completions], completions,
                       [np.zeros(len(c) % 5 + 1) for c in completions], [False] * len(completions), 0)


def test_trl_rewards_score_chat_data_as_trl_calls_them(trl_dict_dir):
    train, _ = load_splits(DataConfig(source="file", path=str(trl_dict_dir), prompt_column="prompt",
                                      answer_column="solution", num_eval=2))
    problem = train[0]
    right, wrong = f"<think>3 times</think><answer>{problem.answer}</answer>", "<answer>-1</answer>"
    names = ["tests.reward_fixtures:trl_accuracy_reward", "tests.reward_fixtures:trl_format_reward",
             "tests.reward_fixtures:trl_sees", "accuracy"]
    scorer = GroupScorer(RewardConfig(functions=tuple(RewardFunctionConfig(n, 1.0) for n in names)))
    try:
        scored, _ = scorer.score(trl_group(problem, [right, wrong]))
    finally:
        scorer.close()
    assert scored.reward_errors == {}
    assert scored.rewards == {names[0]: [1.0, 0.0], names[1]: [1.0, 0.0], names[2]: [1.0, 1.0],
                              "accuracy": [1.0, 0.0]}  # the built-in still reads text
    probe_rewards(tuple(RewardFunctionConfig(n) for n in names), train, timeout_s=30)


def test_trl_none_means_not_applicable():
    runner = RewardRunner([("tests.reward_fixtures:trl_accuracy_reward", 1.0)], timeout_s=30)
    try:
        chat = [[{"role": "user", "content": "q"}]] * 2
        result = runner.score(["q", "q"], ["<answer>2</answer>", "<answer>2</answer>"],
                              {"answer": ["2", ""], "solution": ["2", ""]}, messages=chat)
    finally:
        runner.close()
    assert result.scores == {"tests.reward_fixtures:trl_accuracy_reward": [1.0, 0.0]} and result.failures == {}


def test_verl_compute_score_gets_its_four_arguments(verl_parquet):
    train, _ = load_splits(DataConfig(source="file", path=str(verl_parquet), prompt_column="prompt",
                                      answer_column="reward_model.ground_truth", num_eval=2))
    problem = train[0]
    runner = RewardRunner([("tests.reward_fixtures:compute_score", 1.0),
                           ("tests.reward_fixtures:verl_float_score", 1.0)], timeout_s=30,
                          kwargs={"tests.reward_fixtures:verl_float_score": {"scale": 2.0}})
    n = 2
    try:
        result = runner.score([problem.question] * n, [f"<answer>{problem.answer}</answer>", "no answer"],
                              {"answer": [problem.answer] * n, **{k: [v] * n for k, v in problem.columns.items()}},
                              messages=[list(problem.messages)] * n)
    finally:
        runner.close()
    assert result.failures == {}
    assert result.scores["tests.reward_fixtures:compute_score"] == [1.5, 0.5]  # data_source and extra_info arrived
    assert result.scores["tests.reward_fixtures:verl_float_score"] == [2.0, 0.0]
    probe_rewards((RewardFunctionConfig("tests.reward_fixtures:compute_score"),), train, timeout_s=30)


def test_probe_names_a_verl_dict_without_score():
    from rl_system.data import Problem

    with pytest.raises(RewardProbeError, match=r"reward.functions\[0\] 'tests.bad_inputs.plugins:verl_no_score': "
                                               r"raised ValueError: returned a dict without 'score'"):
        probe_rewards((RewardFunctionConfig("tests.bad_inputs.plugins:verl_no_score"),), [Problem(0, "1+1?", "2")],
                      timeout_s=30)


@pytest.mark.parametrize("peer", ["verl", "trl", "openrlhf"])
def test_train_with_a_peers_data_and_rewards_gets_as_far_as_ray(peer, tmp_path, tiny_model_dir, no_ray):
    """What a user of each peer types: `python -m rl_system train` with their data and reward function
    passes every check made before the run (the reward probe included) and reaches ray.init."""
    import datasets

    from rl_system import cli

    if peer == "verl":
        path = tmp_path / "train.parquet"
        datasets.Dataset.from_list(verl_rows(12)).to_parquet(str(path))
        args = ["data.prompt_column=prompt", "data.answer_column=reward_model.ground_truth",
                "reward.functions=[{name: 'tests.reward_fixtures:compute_score'}]"]
    elif peer == "trl":
        path = tmp_path / "trl_dict"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(trl_rows(12))}).save_to_disk(str(path))
        args = ["data.prompt_column=prompt", "data.answer_column=solution",
                "reward.functions=[{name: 'tests.reward_fixtures:trl_accuracy_reward'}, "
                "{name: 'tests.reward_fixtures:trl_format_reward', weight: 0.5}]"]
    else:
        path = tmp_path / "prompts.jsonl"
        path.write_text("".join(json.dumps({"input": f"Compute {i} * 7.", "label": str(7 * i)}) + "\n"
                                for i in range(10)))
        args = ["data.prompt_column=input", "data.answer_column=label"]
    with pytest.raises(StartedRay):
        cli.main(["train", f"model.path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "data.source=file",
                  f"data.path={path}", "data.num_train=8", *args])


def test_a_hinted_chat_problem_asks_the_hint_in_its_last_user_turn():
    """STaR's rationalisation rewrites the question; for chat data that is the last user message."""
    from rl_system.data import Problem, chat_messages

    chat = ({"role": "system", "content": VERL_SYSTEM}, {"role": "user", "content": "1+1?"},
            {"role": "assistant", "content": "2"}, {"role": "user", "content": "And 2+2?"})
    hinted = Problem(0, "And 2+2?", "4", messages=chat).with_question("And 2+2? Hint: 4")
    assert hinted.question == "And 2+2? Hint: 4"
    assert [m["content"] for m in chat_messages(hinted.prompt, "unused")] == [VERL_SYSTEM, "1+1?", "2",
                                                                              "And 2+2? Hint: 4"]
    assert Problem(0, "1+1?", "2").with_question("1+1? Hint: 2").prompt == "1+1? Hint: 2"
