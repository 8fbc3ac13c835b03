from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rl_system.config import DataConfig


@dataclass(frozen=True)
class Problem:
    """One question with its reference answer and the columns reward functions receive."""
    problem_id: int
    question: str
    answer: str
    columns: dict = field(default_factory=dict)  # passed as **columns to reward functions


class DatasetError(ValueError):
    """A dataset file that does not match the configured columns; one line naming the row."""


def load_splits(cfg: DataConfig) -> tuple[list[Problem], list[Problem]]:
    """Deterministic, disjoint train / held-out splits (no question appears in both)."""
    items = _reasoning_gym_items(cfg) if cfg.source == "reasoning_gym" else _file_items(cfg)
    unique: dict[str, tuple[str, dict]] = {}
    for question, answer, columns in items:
        unique.setdefault(question, (answer, columns))
    questions = sorted(unique)
    random.Random(cfg.seed).shuffle(questions)
    if len(questions) <= cfg.num_eval:
        raise DatasetError(f"data: only {len(questions)} distinct questions, need more than "
                           f"data.num_eval={cfg.num_eval} to leave any for training")
    eval_q = questions[:cfg.num_eval]
    train_q = questions[cfg.num_eval:cfg.num_eval + cfg.num_train]

    def build(qs: list[str]) -> list[Problem]:
        return [Problem(i, q, unique[q][0], unique[q][1]) for i, q in enumerate(qs)]

    train = build(train_q)
    if cfg.general_prompts:
        from rl_system.data.general import general_problems

        train += general_problems(cfg.general_prompts, cfg.seed, start_id=len(train))
    return train, build(eval_q)


def _reasoning_gym_items(cfg: DataConfig):
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    import reasoning_gym

    # Over-generate: easy tasks repeat questions, and the split keeps distinct ones only.
    size = 4 * (cfg.num_train + cfg.num_eval)
    try:
        dataset = reasoning_gym.create_dataset(cfg.task, size=size, seed=cfg.seed, **cfg.task_args)
    except Exception as e:
        raise DatasetError(f"data.task '{cfg.task}' with data.task_args {cfg.task_args}: {e}") from None
    for entry in dataset:
        yield entry["question"], str(entry["answer"]), {
            "task": cfg.task, "metadata": json.dumps(entry["metadata"], default=str)}


def _file_items(cfg: DataConfig):
    import datasets

    path = Path(cfg.path)
    if not path.is_file():
        raise DatasetError(f"data.path '{path}': file not found")
    kind = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise DatasetError(f"data.path '{path}': expected a .json, .jsonl or .parquet file")
    table = datasets.load_dataset(kind, data_files=str(path), split="train")
    for column in (cfg.prompt_column, cfg.answer_column):
        if column not in table.column_names:
            raise DatasetError(f"data.path '{path}': missing column '{column}' "
                               f"(columns: {', '.join(table.column_names)}); set data.prompt_column / "
                               "data.answer_column")
    for row, entry in enumerate(table):
        question, answer = entry[cfg.prompt_column], entry[cfg.answer_column]
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"data.path '{path}' row {row}: column '{cfg.prompt_column}' must be non-empty text")
        if answer is None:
            raise DatasetError(f"data.path '{path}' row {row}: column '{cfg.answer_column}' is empty")
        extra = {k: v for k, v in entry.items() if k not in (cfg.prompt_column, cfg.answer_column)}
        yield question, str(answer), extra


class PromptSampler:
    """Epochs over the training problems in a seeded order; the cursor makes resume exact."""

    def __init__(self, problems: list[Problem], seed: int, cursor: int = 0):
        self.problems, self.seed, self.cursor = problems, seed, cursor

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def next_batch(self, n: int) -> list[Problem]:
        batch = []
        for _ in range(n):
            epoch, pos = divmod(self.cursor, len(self.problems))
            batch.append(self.problems[self._order(epoch)[pos]])
            self.cursor += 1
        return batch


def save_dataset(rows: list[dict], out_dir: str | Path, info: dict) -> Path:
    """Saves rows as a `datasets` directory plus info.json, swapped in whole (never half-written)."""
    import datasets

    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(partial))
    (partial / "info.json").write_text(json.dumps({**info, "num_rows": len(rows)}, indent=2, default=str))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out
