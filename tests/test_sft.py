"""SFT / distillation math, chat encoding, rejection filtering and the language reward, without Ray."""

import pytest
import torch

from rl_system.algorithms.sft import IGNORE, collate_sft, encode_chat, sft_and_distill_loss
from rl_system.data import Problem
from rl_system.models import load_model, load_tokenizer, make_layer_cut
from rl_system.config import ConfigError, load_config
from rl_system.pipeline.rejection import accepted_completions, check_requirements
from rl_system.rewards import language_consistency_reward
from rl_system.types import PromptGroup

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1 + 2?"},
        {"role": "assistant", "content": "<think> 1 plus 2 is 3. </think> <answer>3</answer>"},
        {"role": "user", "content": "And 2 + 2?"}, {"role": "assistant", "content": "<answer>4</answer>"}]


def test_encode_chat_learns_only_assistant_turns(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    enc = encode_chat(tok, CHAT, max_length=512)
    assert tok.decode(enc["input_ids"]) == tok.apply_chat_template(CHAT, tokenize=False)
    learned = tok.decode([t for t, label in zip(enc["input_ids"], enc["labels"]) if label != IGNORE])
    assert learned == ("<think> 1 plus 2 is 3. </think> <answer>3</answer><|im_end|>\n"
                       "<answer>4</answer><|im_end|>\n")
    assert len(encode_chat(tok, CHAT, max_length=10)["input_ids"]) == 10


def test_distillation_loss_is_zero_against_itself_and_positive_against_another(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    student = load_model(tiny_model_dir)
    batch = collate_sft([encode_chat(tok, CHAT, 512)] * 2, tok.pad_token_id, torch.device("cpu"))
    ce_only, stats = sft_and_distill_loss(student, batch)
    assert "kl" not in stats and stats["tokens"] > 0 and ce_only.item() == pytest.approx(stats["ce"])
    _, same = sft_and_distill_loss(student, batch, teacher=student, temperature=2.0, distill_weight=1.0)
    assert same["kl"] == pytest.approx(0.0, abs=1e-6)
    other = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    loss, stats = sft_and_distill_loss(student, batch, teacher=other, temperature=2.0, distill_weight=0.5)
    assert stats["kl"] > 0
    assert loss.item() == pytest.approx(0.5 * stats["ce"] + 0.5 * stats["kl"], rel=1e-5)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in other.parameters())  # the teacher is frozen


def test_layer_cut_student(tiny_model_dir, tmp_path):
    make_layer_cut(tiny_model_dir, tmp_path / "student", 1)
    student = load_model(tmp_path / "student")
    assert student.config.num_hidden_layers == 1 and len(student.model.layers) == 1
    with pytest.raises(ValueError, match="layers: expected 1..1"):
        make_layer_cut(tiny_model_dir, tmp_path / "bad", 2)


def test_rejection_keeps_distinct_answers_that_pass_every_requirement():
    group = PromptGroup(Problem(0, "q", "3"), [1], [[1]] * 4, ["a", "a", "b", "c"], [[0.0]] * 4, [False] * 4, 0,
                        rewards={"accuracy": [1.0, 1.0, 1.0, 0.0], "format": [1.0, 1.0, 0.0, 1.0]})
    assert accepted_completions(group, {"accuracy": 1.0, "format": 1.0}) == [0]  # the duplicate "a" is dropped
    assert accepted_completions(group, {"accuracy": 1.0}) == [0, 2]
    assert accepted_completions(group, {"format": 0.5}, max_per_prompt=1) == [0]


def test_language_consistency_reward():
    completions = ["<think> 4 plus 1 is 5. </think><answer>5</answer>", "<think> 4 加 1 等于 5, so 5 </think>",
                   "<think> 4 + 1 = 5 </think>"]
    assert language_consistency_reward(None, completions) == pytest.approx([1.0, 1 / 3, 0.0])
    assert language_consistency_reward(None, ["<think> 4 加 1 等于 5 </think>"], language="zh") == [1.0]
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        language_consistency_reward(None, ["x"], language="xx")


def test_rejection_requirements_must_name_configured_rewards():
    check_requirements(load_config("configs/r1_zero.yaml"))
    with pytest.raises(ConfigError, match="'rejection.require.orm': expected the name of a configured reward"):
        check_requirements(load_config("configs/r1_zero.yaml", ["rejection.require={orm: 0.5}"]))
