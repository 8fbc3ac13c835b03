"""Learned rewards: outcome (ORM) and process (PRM) reward models as TRL-style reward callables.

An ORM is an HF `*ForSequenceClassification` with one label (a logit per completion); a PRM
is an HF `*ForTokenClassification` with one label, read at the last token of every reasoning
step. Scores are sigmoid probabilities, so they mix with 0/1 rule rewards on one scale.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rl_system.data import format_prompt
from rl_system.models import check_model_dir, detect, dtype_from_name, load_tokenizer, read_model_config, resolve
from rl_system.rewards.steps import step_ends

HEADS = {"orm": "ForSequenceClassification", "prm": "ForTokenClassification"}
METADATA_FILE = "reward_model.json"


class RewardModelError(ValueError):
    pass


def check_reward_model_dir(path: str | Path, kind: str, key: str = "") -> dict:
    """The directory's metadata; raises one clear line for a missing model or the wrong head.
    `key` names the config key (or flag) that gave the path in the message."""
    key = key or f"{kind.upper()} reward model"
    path = check_model_dir(path, key)
    architectures = read_model_config(path, key).get("architectures") or []
    if not any(str(a).endswith(HEADS[kind]) for a in architectures):
        raise RewardModelError(f"{key} '{path}': architecture {architectures} has no {kind.upper()} head "
                               f"(expected *{HEADS[kind]}; build one with `python -m rl_system train-{kind}`)")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        return {}
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as e:
        raise RewardModelError(f"{key} '{path}': {METADATA_FILE} is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise RewardModelError(f"{key} '{path}': {METADATA_FILE} holds a {type(meta).__name__}, expected an object")
    return meta


def load_reward_model(path: str | Path, kind: str, dtype: str, device: str | torch.device = "cpu"):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    meta = check_reward_model_dir(path, kind)
    cls = AutoModelForSequenceClassification if kind == "orm" else AutoModelForTokenClassification
    model = cls.from_pretrained(path, dtype=dtype_from_name(dtype)).to(device).eval()
    return model, load_tokenizer(path), meta


def encode(tokenizer, questions: list, completions: list[str], step_split: str | None, max_length: int,
           system_prompt: str = "") -> tuple[dict, list[list[int]]]:
    """Right-padded inputs (prompt + completion, cut from the left if too long) and, per row, the
    token index of each step's last character (empty without step_split). A question may be chat messages."""
    prompts = [format_prompt(tokenizer, q, system_prompt, prefill="") for q in questions]
    texts = [p + c for p, c in zip(prompts, completions)]
    tokenizer.truncation_side = "left"  # keep the completion's end, where the scores are read
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", truncation=True,
                    max_length=max_length, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")
    positions = []
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        if step_split is None:
            positions.append([])
            continue
        last_chars = [len(prompt) + end - 1 for end in step_ends(completion, step_split)]
        spans = offsets[row].tolist()
        row_pos = []
        for char in last_chars:
            hit = [t for t, (a, b) in enumerate(spans) if a <= char < b]
            if hit:  # a step cut off by truncation has no position and is not scored
                row_pos.append(hit[0])
        positions.append(row_pos)
    return dict(enc), positions


def aggregate_steps(scores: list[float], how: str) -> float:
    if not scores:
        return 0.0
    if how == "min":
        return min(scores)
    if how == "last":
        return scores[-1]
    if how == "product":
        return math.prod(scores)
    raise ValueError(f"PRM aggregate '{how}': expected min, last or product")


class LearnedReward:
    """f(prompts, completions, **columns) -> list[float]; `prompts` are the questions (text or chat messages). `dtype` ("auto" or
    a dtype name, from config key `dtype_key`) is resolved for `device` (rl_system/models/precision.py)."""

    def __init__(self, path: str | Path, kind: str, aggregate: str = "min", batch_size: int = 16,
                 dtype: str = "auto", device: str | torch.device = "cpu", max_length: int = 1024,
                 dtype_key: str = "dtype", role: str = "reward_model"):
        self.kind, self.aggregate, self.batch_size, self.max_length = kind, aggregate, batch_size, max_length
        self.precision = resolve(dtype, dtype_key, detect(device), role)
        self.model, self.tokenizer, self.meta = load_reward_model(path, kind, self.precision.dtype, device)
        self.step_split = self.meta.get("step_split", "sentences") if kind == "prm" else None

    @torch.no_grad()
    def step_scores(self, prompts: list[str], completions: list[str]) -> list[list[float]]:
        """ORM: one score per completion (a list of one); PRM: one per step."""
        out: list[list[float]] = []
        for i in range(0, len(completions), self.batch_size):
            enc, positions = encode(self.tokenizer, prompts[i:i + self.batch_size],
                                    completions[i:i + self.batch_size], self.step_split, self.max_length,
                                    self.meta.get("system_prompt", ""))
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            logits = self.model(**enc).logits.float()
            probs = torch.sigmoid(logits.squeeze(-1))  # ORM (B,), PRM (B, T)
            if self.kind == "orm":
                out.extend([[p] for p in probs.tolist()])
            else:
                out.extend([probs[row, pos].tolist() for row, pos in enumerate(positions)])
        return out

    def __call__(self, prompts, completions, **columns) -> list[float]:
        return [aggregate_steps(s, self.aggregate) for s in self.step_scores(list(prompts), list(completions))]
