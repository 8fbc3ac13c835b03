"""Supervised fine-tuning and distillation on chat data: loss on assistant tokens only.

A dataset row is {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}.
Distillation replaces (or mixes into) the cross-entropy the forward KL from the teacher's
token distribution to the student's, at a temperature, on the same assistant tokens.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from rl_system.data.sources import DatasetError, brief, read_table

ROLES = ("system", "user", "assistant")
IGNORE = -100


def load_chat_rows(path: str | Path, key: str = "data") -> list[dict]:
    """Rows of a `datasets` directory or a json/jsonl/parquet file, each checked for a valid
    `messages` column; a bad row is named in a one-line error (`key`: the config key of the path)."""
    table = read_table(path, key)
    if "messages" not in table.columns:
        raise DatasetError(f"{key} '{table.path}': missing column 'messages' (columns: {', '.join(table.columns)}); "
                           "expected chat rows {messages: [{role, content}, ...]}")
    for i, row in enumerate(table.rows):
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DatasetError(f"{table.where(i)}: 'messages' must be a non-empty list, got {brief(msgs)}")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DatasetError(f"{table.where(i)}: messages[{j}] must be {{role: system|user|assistant, "
                                   f"content: text}}, got {brief(m)}")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DatasetError(f"{table.where(i)}: no assistant message to learn from")
    return table.rows


def check_sft_inputs(cfg) -> list[dict]:
    """What `sft` / `distill` read (an SFTConfig: the models and the chat rows), checked before any
    worker starts; returns the rows. Raises one line naming the config key."""
    from rl_system.models import check_model_dir, read_model_config

    check_model_dir(cfg.base_model, "base_model")
    if cfg.teacher_model:
        check_model_dir(cfg.teacher_model, "teacher_model", chat_template=False)
        student = read_model_config(cfg.base_model, "base_model").get("vocab_size")
        teacher = read_model_config(cfg.teacher_model, "teacher_model").get("vocab_size")
        if student != teacher:
            raise ValueError(f"teacher_model '{cfg.teacher_model}': vocab_size {teacher}, base_model "
                             f"'{cfg.base_model}': {student}; distillation compares their token distributions, "
                             "so both need the same tokenizer")
    rows = load_chat_rows(cfg.data)
    if len(rows) < cfg.num_workers * cfg.micro_batch_size:
        raise DatasetError(f"data '{cfg.data}': {len(rows)} rows, need at least "
                           f"num_workers x micro_batch_size = {cfg.num_workers * cfg.micro_batch_size}")
    return rows


def encode_chat(tokenizer, messages: list[dict], max_length: int) -> dict[str, list[int]]:
    """Token ids of the chat-templated conversation, and labels that are -100 except on the
    assistant turns (their content and end-of-turn token); each template piece is tokenised
    on its own so the boundaries are exact."""
    def render(msgs: list[dict], generation_prompt: bool = False) -> str:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt) \
            if msgs or generation_prompt else ""

    pieces, seen = [], ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":  # the "<|im_start|>assistant\n" header is context, not target
            header = render(messages[:i], generation_prompt=True)
            pieces.append((header[len(seen):], False))
            seen = header
        full = render(messages[:i + 1])
        pieces.append((full[len(seen):], message["role"] == "assistant"))
        seen = full
    ids: list[int] = []
    labels: list[int] = []
    for text, learned in pieces:
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += tokens
        labels += tokens if learned else [IGNORE] * len(tokens)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def collate_sft(encoded: list[dict], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in encoded)
    batch = {"input_ids": torch.full((len(encoded), width), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(encoded), width), dtype=torch.long),
             "labels": torch.full((len(encoded), width), IGNORE, dtype=torch.long)}
    for i, e in enumerate(encoded):
        n = len(e["input_ids"])
        batch["input_ids"][i, :n] = torch.tensor(e["input_ids"])
        batch["attention_mask"][i, :n] = 1
        batch["labels"][i, :n] = torch.tensor(e["labels"])
    return {k: v.to(device) for k, v in batch.items()}


def sft_and_distill_loss(student, batch: dict, teacher=None, temperature: float = 1.0,
                         distill_weight: float = 0.0, autocast: torch.dtype | None = None) -> tuple[torch.Tensor, dict]:
    """(1 - w) * cross-entropy + w * T^2 * KL(teacher_T || student_T), token-mean over assistant tokens.

    w = distill_weight; w = 0 is plain SFT, w = 1 pure distillation.
    """
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE
    with torch.autocast(batch["input_ids"].device.type, dtype=autocast, enabled=autocast is not None):
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logits = logits[mask].float()  # (assistant tokens, vocab)
    ce = F.cross_entropy(logits, targets[mask])
    stats = {"ce": ce.item(), "tokens": int(mask.sum())}
    if teacher is None or distill_weight == 0:
        return ce, stats
    with torch.no_grad(), torch.autocast(batch["input_ids"].device.type, dtype=autocast, enabled=autocast is not None):
        teacher_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    teacher_logprobs = F.log_softmax(teacher_logits[mask].float() / temperature, dim=-1)
    student_logprobs = F.log_softmax(logits / temperature, dim=-1)
    kl = F.kl_div(student_logprobs, teacher_logprobs, log_target=True, reduction="batchmean") * temperature ** 2
    stats["kl"] = kl.item()
    return (1 - distill_weight) * ce + distill_weight * kl, stats
