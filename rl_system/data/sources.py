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
    items = list(_reasoning_gym_items(cfg) if cfg.source == "reasoning_gym" else _file_items(cfg))
    unique: dict[str, tuple[str, dict]] = {}
    for question, answer, columns in items:
        unique.setdefault(question, (answer, columns))
    questions = sorted(unique)
    random.Random(cfg.seed).shuffle(questions)
    if len(questions) <= cfg.num_eval:
        where = f"data.task '{cfg.task}'" if cfg.source == "reasoning_gym" else f"data.path '{cfg.path}'"
        dropped = len(items) - len(questions)
        duplicates = f" ({dropped} duplicate{'s' * (dropped != 1)} dropped)" if dropped else ""
        raise DatasetError(f"{where}: {len(items)} rows, {len(questions)} distinct question"
                           f"{'s' * (len(questions) != 1)}{duplicates}; need more than data.num_eval={cfg.num_eval} "
                           "to leave any for training")
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
        raise DatasetError(f"data.task '{cfg.task}' with data.task_args {cfg.task_args}: {one_line(e)}") from None
    for entry in dataset:
        yield entry["question"], str(entry["answer"]), {
            "task": cfg.task, "metadata": json.dumps(entry["metadata"], default=str)}


def _file_items(cfg: DataConfig):
    table = read_table(cfg.path, "data.path")
    for column in (cfg.prompt_column, cfg.answer_column):
        if column not in table.columns:
            raise DatasetError(f"data.path '{table.path}': missing column '{column}' "
                               f"(columns: {', '.join(table.columns) or 'none'}); set data.prompt_column / "
                               "data.answer_column")
    for row, entry in enumerate(table.rows):
        question, answer = entry[cfg.prompt_column], entry[cfg.answer_column]
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{table.where(row)}: column '{cfg.prompt_column}' must be non-empty text, "
                               f"got {brief(question)}")
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise DatasetError(f"{table.where(row)}: column '{cfg.answer_column}' is empty")
        if isinstance(answer, (dict, list)):
            raise DatasetError(f"{table.where(row)}: column '{cfg.answer_column}' must be text or a number, "
                               f"got {brief(answer)}")
        extra = {k: v for k, v in entry.items() if k not in (cfg.prompt_column, cfg.answer_column)}
        yield question, str(answer), extra


# ----------------------------------------------------------------------------- reading files

SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}


@dataclass
class Table:
    """Rows of a dataset file (every row has every column, None where a row left one out) and, for
    JSON files, the line each row starts on, so an error can point into the file."""
    path: Path
    key: str  # the config key that named the file, for messages
    rows: list[dict]
    columns: list[str]
    lines: list[int] | None = None

    def where(self, row: int) -> str:
        line = f" (line {self.lines[row]})" if self.lines else ""
        return f"{self.key} '{self.path}' row {row}{line}"


def read_table(path: str | Path, key: str, directories: bool = False) -> Table:
    """A json / jsonl / parquet file (or, with `directories`, a `datasets` directory) as a Table.
    Every problem is one DatasetError line naming `key`, the file and the line or row."""
    path = Path(path)
    if directories and path.is_dir():
        return read_datasets_dir(path, key)
    if not path.exists():
        raise DatasetError(f"{key} '{path}': file not found")
    if path.is_dir():
        raise DatasetError(f"{key} '{path}': a directory, expected a .json, .jsonl or .parquet file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        also = " (or a datasets directory)" if directories else ""
        raise DatasetError(f"{key} '{path}': unsupported format '{path.suffix or path.name}', expected a .json, "
                           f".jsonl or .parquet file{also}")
    if kind == "parquet":
        rows, lines = _parquet_rows(path, key), None
    else:
        rows, lines = _json_rows(path, key)
    if not rows:
        raise DatasetError(f"{key} '{path}': no rows (the file is empty)")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    rows = [{c: row.get(c) for c in columns} for row in rows]
    return Table(path, key, rows, columns, lines)


def _json_rows(path: Path, key: str) -> tuple[list[dict], list[int]]:
    """A JSON array of objects, or JSON Lines (one object per line; blank lines are skipped)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{key} '{path}': not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); "
                           "expected JSON") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise DatasetError(f"{key} '{path}' line {line}: a NUL byte; expected JSON text")
    if not text.strip():
        return [], []
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{key} '{path}' line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from None
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DatasetError(f"{key} '{path}' row {i}: expected a JSON object, got {brief(item)}")
        return items, []
    rows, lines = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            if not rows:
                whole = _json_object(text)  # one object over several lines, not JSON Lines
                if whole is not None:
                    nested = [k for k, v in whole.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
                    if nested:
                        raise DatasetError(f"{key} '{path}': one JSON object with the rows under '{nested[0]}'; "
                                           "expected the rows themselves (a JSON array of objects, or one object "
                                           "per line)") from None
                    return [whole], [number]
            raise DatasetError(f"{key} '{path}' line {number}: invalid JSON ({e.msg} at column {e.colno}); "
                               "expected one JSON object per line") from None
        if not isinstance(item, dict):
            raise DatasetError(f"{key} '{path}' line {number}: expected a JSON object, got {brief(item)}")
        rows.append(item)
        lines.append(number)
    return rows, lines


def _json_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _parquet_rows(path: Path, key: str) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as e:
        raise DatasetError(f"{key} '{path}': cannot read it as parquet ({one_line(e)})") from None


def read_datasets_dir(path: Path, key: str) -> Table:
    import datasets

    try:
        table = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DatasetError(f"{key} '{path}': not a saved datasets directory ({one_line(e)})") from None
    if isinstance(table, datasets.DatasetDict):
        raise DatasetError(f"{key} '{path}': a DatasetDict with splits {', '.join(table)}; expected one dataset")
    if len(table) == 0:
        raise DatasetError(f"{key} '{path}': no rows")
    return Table(path, key, list(table), list(table.column_names))


def one_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def brief(value) -> str:
    """A value as a short phrase for a message: its type, and its text when short."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text}" if len(text) <= 40 else f"{type(value).__name__} {text[:37]}..."


class PromptSampler:
    """Epochs over the training problems in a seeded order; the cursor makes resume exact."""

    def __init__(self, problems: list[Problem], seed: int, cursor: int = 0):
        self.problems, self.seed, self.cursor = problems, seed, cursor
        self._epoch_order: tuple[int, list[int]] = (-1, [])  # the current epoch and its order

    def _order(self, epoch: int) -> list[int]:
        """The epoch's permutation, shuffled once per epoch (O(problems)), not once per prompt."""
        if self._epoch_order[0] != epoch:
            order = list(range(len(self.problems)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epoch_order = (epoch, order)
        return self._epoch_order[1]

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
