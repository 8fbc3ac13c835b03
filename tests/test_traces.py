"""Cold-start traces (rl_system/data/traces.py): written by code from the problem, graded by the real
rewards, and short enough for the recipe's rollouts, counted with the real SmolLM2 tokenizer."""
import json

import pytest

from rl_system.config import load_config
from rl_system.data import Problem, load_splits
from rl_system.data.traces import trace, trace_rows
from rl_system.rewards.rules import accuracy_reward, format_reward


def arithmetic(expression: str, answer: str, task: str = "chain_sum") -> Problem:
    return Problem(0, f"{expression} =", answer, {"task": task, "metadata": json.dumps({"expression": expression})})


def test_a_trace_works_the_columns_with_carries_borrows_and_signs():
    assert trace(arithmetic("57 + 87 + 70", "214")) == (
        "<think> 57 + 87: 7+7=14 carry 1; 5+8+1=14; so 144. 144 + 70: 4+0=4; 4+7=11 carry 1; 1+0+1=2; so 214. "
        "</think> <answer>214</answer>")
    assert trace(arithmetic("42 - 25 - 73", "-56")) == (
        "<think> 42 - 25: 12-5=7 borrow 1; 4-1-2=1; so 17. 17 - 73 = -(73 - 17): 13-7=6 borrow 1; 7-1-1=5; "
        "so -56. </think> <answer>-56</answer>")
    assert "-36 - 31 = -(36 + 31)" in trace(arithmetic("20 - 56 - 31", "-67"))
    assert "-56 + 67 = 67 - 56" in trace(arithmetic("42 - 25 - 73 + 67", "11"))
    assert "3 * 4 = 12." in trace(arithmetic("2 + 3 * 4", "14", "basic_arithmetic"))  # products first


@pytest.mark.parametrize("problem", [
    arithmetic("8 / 2", "4", "basic_arithmetic"),        # no division
    arithmetic("(1 + 2) * 3", "9", "basic_arithmetic"),  # no parentheses
    arithmetic("6 + 10 * 0", "0", "basic_arithmetic"),   # a reference that disagrees: no trace rather than a wrong one
    arithmetic("1 + 2", "3", "word_problems"),           # a task without traces
])
def test_no_trace_where_the_code_cannot_write_a_right_one(problem):
    assert trace(problem) is None


def test_every_recipe_trace_is_right_well_formed_and_fits_the_rollout(tiny_model_dir):
    from transformers import AutoTokenizer

    cfg = load_config("configs/r1_cold_start.yaml", ["data.num_train=150"])
    train, held_out = load_splits(cfg.data)
    held_out_only = [p for p in held_out if p.task == "chain_sum_4x2"]  # never trained on: as long as traces get
    rows = trace_rows(train + held_out_only, cfg.data.system_prompt)
    assert len(rows) == len(train) + len(held_out_only)  # every problem of the recipe's tasks has one
    problems = {p.question: p for p in train + held_out_only}
    completions = [r["completion"] for r in rows]
    assert format_reward(None, completions) == [1.0] * len(rows)
    assert accuracy_reward(None, completions, [r["answer"] for r in rows],
                           task=[problems[r["question"]].columns["task"] for r in rows],
                           metadata=[problems[r["question"]].columns["metadata"] for r in rows]) == [1.0] * len(rows)
    assert all(r["messages"][0] == {"role": "system", "content": cfg.data.system_prompt} for r in rows)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # The rollout prefills <think>: the model writes the rest.
    longest = {}
    for r in rows:
        tokens = len(tokenizer(r["completion"].removeprefix("<think>"))["input_ids"])
        longest[r["task"]] = max(longest.get(r["task"], 0), tokens)
    assert longest["chain_sum_3x2"] <= cfg.rollout.max_new_tokens
    assert longest["basic_arithmetic"] <= cfg.rollout.max_new_tokens
    assert longest["chain_sum_4x2"] <= cfg.eval_max_new_tokens
