from __future__ import annotations

import json
import math
import os
import random
import shutil
import stat
import tempfile
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path

from rl_system.config import DataConfig, TaskConfig, one_line, preview
from rl_system.data.general import general_problems
from rl_system.data.problem import Problem
from rl_system.rundir import swap_in


class DatasetError(ValueError):
    """A dataset file that does not match the configured columns; one line naming the row."""


def load_splits(cfg: DataConfig) -> tuple[list[Problem], list[Problem]]:
    """Deterministic, disjoint train / held-out splits (no held-out question appears in training).

    Each task of data.tasks gets its own: held-out problems from its last curriculum level, training
    problems from every level, none of them held out by any task. Problems carry their task's name.
    """
    pools = [_Pool(cfg, i, level) for i, spec in enumerate(cfg.task_specs()) for level in range(len(spec.levels) or 1)]
    held_out_questions = {q for pool in pools for q in pool.held_out}
    per_pool = []
    for pool in pools:
        if pool.spec.weight > 0:
            questions = [q for q in pool.rest if q not in held_out_questions][:pool.spec.num_train]
            if not questions:
                raise DatasetError(f"{pool.where}: every question is held out by some task; nothing left to train on")
            per_pool.append(pool.problems(questions))
    train = _interleaved(per_pool)
    held_out = _interleaved([pool.problems(pool.held_out) for pool in pools])
    if cfg.general_prompts:
        general = general_problems(cfg.general_prompts, cfg.seed, start_id=len(train))
        train += [replace(p, task="general") for p in general] if cfg.tasks else general
    return train, held_out


def _interleaved(lists: list[list[Problem]]) -> list[Problem]:
    """One from each list in turn, numbered in that order: the first n problems of a split (what
    collect-samples, rejection sampling, STaR and search.num_problems take) come from every task alike."""
    merged = (p for row in zip_longest(*lists) for p in row if p is not None)
    return [replace(p, problem_id=i) for i, p in enumerate(merged)]


class _Pool:
    """The distinct questions of one task at one curriculum level, in a seeded order: the held-out
    ones (its task's num_eval, at the last level only) first, the rest after them."""

    def __init__(self, cfg: DataConfig, index: int, level: int):
        spec = cfg.task_specs()[index]
        self.spec, self.level = spec, level
        self.key = cfg.task_key(index)
        num_levels = len(spec.levels) or 1
        self.args = {**spec.task_args, **spec.levels[level]} if spec.levels else spec.task_args
        # The one task of a plain run uses data.seed itself, so its splits are what they always were.
        seed = cfg.seed + 1000 * index + level
        if spec.source == "reasoning_gym":
            args_key = f"{self.key}.levels[{level}]" if spec.levels else f"{self.key}.task_args"
            self.where = f"{self.key}.task '{spec.task}' with {args_key} {self.args}"
            items = list(_reasoning_gym_items(spec, self.args, seed, self.where))
        else:
            self.where = f"{self.key}.path '{spec.path}'"
            items = list(_file_items(spec, self.key))
        # Distinct prompts: a text question, or a chat row's whole conversation (its system message included).
        unique: dict[str, Problem] = {}
        for problem in items:
            unique.setdefault(prompt_key(problem), problem)
        self.unique = unique
        questions = sorted(unique)
        random.Random(seed).shuffle(questions)
        num_eval = eval_count(spec.num_eval, len(questions)) if level == num_levels - 1 else 0
        trained = spec.weight > 0  # a task of weight 0 is held out only: it needs no training questions
        if len(questions) < num_eval + trained:
            dropped = len(items) - len(questions)
            duplicates = f" ({dropped} duplicate{'s' * (dropped != 1)} dropped)" if dropped else ""
            given = f"{self.key}.num_eval={spec.num_eval}" + (f" ({num_eval})" if num_eval != spec.num_eval else "")
            need = f"more than {given} to leave any for training" if trained else f"at least {given}"
            raise DatasetError(f"{self.where}: {len(items)} rows, {len(questions)} distinct question"
                               f"{'s' * (len(questions) != 1)}{duplicates}; need {need}")
        self.held_out, self.rest = questions[:num_eval], questions[num_eval:]

    def problems(self, questions: list[str]) -> list[Problem]:
        """Problems numbered 0.. here; load_splits numbers them in their split."""
        return [replace(self.unique[q], problem_id=i, task=self.spec.name, level=self.level)
                for i, q in enumerate(questions)]


AUTO_NUM_EVAL = 64  # num_eval 'auto': this many held-out problems, or half the distinct ones where that is fewer


def eval_count(num_eval: int | float | str, distinct: int) -> int:
    """Held-out problems of a pool of `distinct` questions: a count as given, a fraction of them
    (rounded, at least 1), or 'auto': min(64, half of them), at least 1."""
    if num_eval == "auto":
        return max(1, min(AUTO_NUM_EVAL, distinct // 2))
    if isinstance(num_eval, float):
        return max(1, round(num_eval * distinct))
    return num_eval


def prompt_key(problem: Problem) -> str:
    """What makes two problems the same: the question text, or the whole chat of a chat-format row."""
    return json.dumps(problem.messages, sort_keys=True) if problem.messages else problem.question


def _reasoning_gym_items(spec: TaskConfig, task_args: dict, seed: int, where: str):
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    import reasoning_gym

    # Over-generate: easy tasks repeat questions, and the split keeps distinct ones only.
    num_eval = spec.num_eval if isinstance(spec.num_eval, int) else (
        AUTO_NUM_EVAL if spec.num_eval == "auto" else math.ceil(spec.num_train * spec.num_eval / (1 - spec.num_eval)))
    size = 4 * (spec.num_train + num_eval)
    try:
        dataset = reasoning_gym.create_dataset(spec.task, size=size, seed=seed, **task_args)
    except Exception as e:
        raise DatasetError(f"{where}: {one_line(e)}") from None
    for entry in dataset:
        yield Problem(0, entry["question"], str(entry["answer"]), {
            "task": spec.task, "metadata": json.dumps(entry["metadata"], default=str)})


def _file_items(cfg: TaskConfig, key: str):
    """A file's rows as problems. A column may be a dotted path into nested columns
    (`reward_model.ground_truth`); every column but the prompt's goes to the rewards under its own name."""
    table = read_table(cfg.path, f"{key}.path", cfg.split, f"{key}.split")
    for column in (cfg.prompt_column, cfg.answer_column):
        if column_path(column, table.columns) is None:
            raise DatasetError(f"{key}.path '{table.path}': missing column '{column}' "
                               f"(columns: {', '.join(table.columns) or 'none'}); set {key}.prompt_column / "
                               f"{key}.answer_column")
    prompt_path = column_path(cfg.prompt_column, table.columns)
    answer_path = column_path(cfg.answer_column, table.columns)
    for row, entry in enumerate(table.rows):
        prompt = column_value(entry, prompt_path, cfg.prompt_column, table.where(row))
        question, messages = _prompt(prompt, cfg.prompt_column, table.where(row))
        answer = column_value(entry, answer_path, cfg.answer_column, table.where(row))
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise DatasetError(f"{table.where(row)}: column '{cfg.answer_column}' is empty")
        if isinstance(answer, (dict, list)):
            raise DatasetError(f"{table.where(row)}: column '{cfg.answer_column}' must be text or a number, "
                               f"got {brief(answer)}")
        columns = {k: v for k, v in entry.items() if k != prompt_path[0] or len(prompt_path) > 1}
        yield Problem(0, question, str(answer), columns, messages=messages)


def column_path(name: str, columns: list[str]) -> list[str] | None:
    """The keys that reach a column: [name] for a column of that name, else its dotted parts where
    the first is a column (`reward_model.ground_truth`); None where neither."""
    if name in columns:
        return [name]
    parts = name.split(".")
    return parts if len(parts) > 1 and parts[0] in columns else None


def column_value(entry: dict, path: list[str], name: str, where: str):
    value = entry
    for depth, part in enumerate(path):
        if depth and not isinstance(value, dict):
            raise DatasetError(f"{where}: column '{name}': '{'.'.join(path[:depth])}' is {brief(value)}, expected "
                               f"a mapping with '{part}'")
        if depth and part not in value:
            raise DatasetError(f"{where}: column '{name}': '{'.'.join(path[:depth])}' has no '{part}' (keys: "
                               f"{', '.join(map(str, value)) or 'none'})")
        value = value[part]
    return value


CHAT_ROLES = ("system", "user", "assistant", "tool")


def _prompt(value, column: str, where: str) -> tuple[str, tuple[dict, ...]]:
    """(question text, chat messages) of a prompt cell: non-empty text, or chat messages ({role, content},
    as TRL and veRL datasets hold them) ending with the user's turn, whose text is the question."""
    if isinstance(value, str) and value.strip():
        return value, ()
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) for m in value):
        raise DatasetError(f"{where}: column '{column}' must be non-empty text or a list of chat messages "
                           f"({{role, content}}), got {brief(value)}")
    for i, message in enumerate(value):
        if message.get("role") not in CHAT_ROLES or not isinstance(message.get("content"), str):
            raise DatasetError(f"{where}: column '{column}' message {i}: expected {{role: "
                               f"{' / '.join(CHAT_ROLES)}, content: text}}, got {brief(message)}")
    if value[-1]["role"] != "user" or not value[-1]["content"].strip():
        raise DatasetError(f"{where}: column '{column}': the last message must be the user's, with text; got "
                           f"{brief(value[-1])}")
    return value[-1]["content"], tuple({"role": m["role"], "content": m["content"]} for m in value)


# ----------------------------------------------------------------------------- reading files

SUFFIXES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
FORMATS = "a .json, .jsonl, .parquet, .csv or .arrow file, or a datasets directory (save_to_disk)"


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


def read_table(path: str | Path, key: str, split: str = "train", split_key: str = "") -> Table:
    """A json / jsonl / parquet / csv / arrow file, or a `datasets` directory (a Dataset, or the `split`
    of a DatasetDict; `split_key` is the config key naming it), as a Table. Every problem is one
    DatasetError line naming `key`, the file and the line or row."""
    path = Path(path)
    if path.is_dir():
        return read_datasets_dir(path, key, split, split_key)
    if not path.exists():
        raise DatasetError(f"{key} '{path}': file not found")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(f"{key} '{path}': unsupported format '{path.suffix or path.name}', expected {FORMATS}")
    lines = None
    if kind == "parquet":
        rows = _parquet_rows(path, key)
    elif kind == "json":
        rows, lines = _json_rows(path, key)
    else:
        rows = _datasets_file_rows(path, key, kind)
    if not rows:
        raise DatasetError(f"{key} '{path}': no rows (the file is empty)")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    rows = [{c: row.get(c) for c in columns} for row in rows]
    return Table(path, key, rows, columns, lines)


def _datasets_file_rows(path: Path, key: str, kind: str) -> list[dict]:
    """A CSV file or an arrow file (as `datasets` writes them), read by `datasets`' own loaders."""
    import datasets

    _read_regular_file(path, key, limit=0)  # a FIFO or device is refused before a loader blocks on it
    try:
        table = (datasets.Dataset.from_csv(str(path), keep_in_memory=True) if kind == "csv"
                 else datasets.Dataset.from_file(str(path), in_memory=True))
    except Exception as e:
        raise DatasetError(f"{key} '{path}': cannot read it as {kind} ({one_line(e)})") from None
    return table.to_list()


MAX_JSON_FILE_BYTES = 1 << 30  # a JSON / JSON Lines file is read whole; larger data: parquet or a datasets directory


def _read_regular_file(path: Path, key: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file; a FIFO or device (which could be read forever) or one over `limit`
    bytes is refused in one line (limit 0: only checked, nothing read). Opened without blocking, then
    checked, so a FIFO never stalls the run."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DatasetError(f"{key} '{path}': not a regular file (a {_file_kind(info.st_mode)}); expected a "
                               "data file")
        if limit == 0:
            return b""
        if limit is not None and info.st_size > limit:
            raise DatasetError(f"{key} '{path}': {info.st_size / 2**30:.1f} GiB, over the {limit / 2**30:g} GiB a "
                               "JSON file may have; use parquet or a datasets directory for larger data")
        return f.read()


def _file_kind(mode: int) -> str:
    return ("FIFO" if stat.S_ISFIFO(mode) else "character device" if stat.S_ISCHR(mode)
            else "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file")


def _json_value(text: str, where: str):
    """json.loads for data files, strict where JSON is: NaN and Infinity (not JSON, though Python writes
    them) and lone surrogates (not Unicode text; a tokenizer fails on them mid-run) are refused, and a
    too-deep or too-long value is one line, not a traceback. JSONDecodeError is left to the caller."""
    try:
        value = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise DatasetError(f"{where}: nested too deeply to read; expected rows of columns") from None
    except ValueError as e:  # NaN / Infinity, an integer of more digits than Python converts
        raise DatasetError(f"{where}: {' '.join(str(e).split('; use sys.')[0].split())}") from None  # not Python's advice
    pending = [value]
    while pending:  # iterative: json parsed it, so its depth is bounded, but maybe not by Python's stack
        item = pending.pop()
        if isinstance(item, dict):
            pending += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                raise DatasetError(f"{where}: a lone surrogate (\\u{ord(item[e.start]):04x}) in {brief(item)}; "
                                   "expected Unicode text") from None
    return value


def _not_json(name: str):
    raise ValueError(f"{name} is not a JSON value (JSON has no NaN or Infinity); expected a number or text")


def _json_rows(path: Path, key: str) -> tuple[list[dict], list[int]]:
    """A JSON array of objects, or JSON Lines (one object per line, lines split at \\n only, as JSON Lines
    says: U+2028 and the like are text inside strings; blank lines are skipped)."""
    data = _read_regular_file(path, key, MAX_JSON_FILE_BYTES)
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
            items = _json_value(text, f"{key} '{path}'")
        except json.JSONDecodeError as e:
            raise DatasetError(f"{key} '{path}' line {e.lineno}, column {e.colno}: invalid JSON ({e.msg})") from None
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DatasetError(f"{key} '{path}' row {i}: expected a JSON object, got {brief(item)}")
        return items, []
    rows, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            item = _json_value(line, f"{key} '{path}' line {number}")
        except json.JSONDecodeError as e:
            if not rows:
                whole = _json_object(text, f"{key} '{path}'")  # one object over several lines, not JSON Lines
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


def _json_object(text: str, where: str) -> dict | None:
    try:
        value = _json_value(text, where)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _parquet_rows(path: Path, key: str) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = _read_regular_file(path, key)
    try:
        return pq.read_table(pa.py_buffer(data)).to_pylist()
    except Exception as e:
        raise DatasetError(f"{key} '{path}': cannot read it as parquet ({one_line(e)})") from None


def read_datasets_dir(path: Path, key: str, split: str | None = None, split_key: str = "") -> Table:
    """A directory written by `datasets`' save_to_disk: a Dataset, or with `split` that split of a DatasetDict."""
    import datasets

    try:
        table = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DatasetError(f"{key} '{path}': not a saved datasets directory ({one_line(e)})") from None
    if isinstance(table, datasets.DatasetDict):
        if split not in table:
            wanted = f"no split '{split}' (set {split_key})" if split and split_key else "expected one dataset"
            raise DatasetError(f"{key} '{path}': a DatasetDict with splits {', '.join(table)}; {wanted}")
        table = table[split]
    if len(table) == 0:
        raise DatasetError(f"{key} '{path}': no rows")
    return Table(path, key, table.to_list(), list(table.column_names))


def brief(value) -> str:
    """A value as a short phrase for a message: its type, and its text when short."""
    return "null" if value is None else f"{type(value).__name__} {preview(value, 40)}"


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

    def problem_at(self, position: int) -> Problem:
        epoch, pos = divmod(position, len(self.problems))
        return self.problems[self._order(epoch)[pos]]

    def next_batch(self, n: int) -> list[Problem]:
        batch = [self.problem_at(position) for position in range(self.cursor, self.cursor + n)]
        self.cursor += n
        return batch


def save_dataset(rows: list[dict], out_dir: str | Path, info: dict) -> Path:
    """Saves rows as a `datasets` directory plus info.json, swapped in whole (never half-written)."""
    import datasets

    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(partial))
    (partial / "info.json").write_text(json.dumps({**info, "num_rows": len(rows)}, indent=2, default=str))
    swap_in(partial, out)
    return out
