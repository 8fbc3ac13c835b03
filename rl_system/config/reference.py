"""docs/config.md, written from the config classes: every key with its type, default, what it allows and
its description, one table per section. Pure code over the dataclasses' fields: `python -m rl_system
config-docs` writes the file, tests/test_config_reference.py keeps the committed one current."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from rl_system.config.checks import HELP, RULES
from rl_system.config.jobs import RewardModelTrainConfig, SFTConfig
from rl_system.config.train import TrainConfig

DOCS_PATH = "docs/config.md"  # relative to the repository root
COMMAND = "python -m rl_system config-docs"
# The configs the commands load, each documented once: its class, the commands that load it, what it is.
CONFIGS = (
    (TrainConfig, "train, pipeline, star, collect-samples, rejection-sample, evaluate",
     "A run's config: the top-level keys below, and sections, each a mapping in the YAML file."),
    (SFTConfig, "sft, distill", "A config of its own: its keys have no prefix (`lr=1e-5`). Inside a run's config "
                                "(STaR's and the R1 recipe's SFT stages) the same keys sit under `sft.`."),
    (RewardModelTrainConfig, "train-orm, train-prm", "A config of its own: its keys have no prefix."),
)
JOB_CLASSES = tuple(cls for cls, _, _ in CONFIGS)


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    allowed: str
    description: str


@dataclass(frozen=True)
class Group:
    """One table: the keys of one config class at one prefix ("" for a config's top level)."""
    prefix: str
    cls: type
    intro: str
    rows: tuple[Row, ...]
    notes: tuple[str, ...]


def section_of(hint: Any) -> type | None:
    """The section class a field's type holds (itself, or as a list's items), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def description(f: dataclasses.Field, hint: Any) -> str:
    """A field's one-line description: its help; a section's is its docstring's first sentence, then its help."""
    own = f.metadata.get(HELP, "")
    if not dataclasses.is_dataclass(hint):
        return own
    return _join(_first_sentence(hint.__doc__ or ""), _sentence(own))


def allowed(f: dataclasses.Field) -> str:
    """What the field's declared rules allow, in their words."""
    return "; ".join(rule.expected for rule in f.metadata.get(RULES, ()))


def config_classes() -> list[type]:
    """Every config dataclass the commands load, the sections included, each once."""
    seen: list[type] = []
    pending = list(JOB_CLASSES)
    while pending:
        cls = pending.pop(0)
        if cls not in seen:
            seen.append(cls)
            pending += [s for s in map(section_of, typing.get_type_hints(cls).values()) if s is not None]
    return seen


def groups(cls: type, prefix: str = "", intro: str = "") -> list[Group]:
    """The tables of one config: its own keys, then each section's, depth first, in declaration order."""
    hints = typing.get_type_hints(cls)
    rows, sections, notes, below = [], [], [], []
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], prefix + f.name
        section = section_of(hint)
        if section in JOB_CLASSES:
            notes.append(f"`{key}.`: {f.metadata.get(HELP, '')}: the keys of the `{_commands(section)}` config, "
                         f"under `{key}.`.")
            continue
        if section is not None and section is hint:
            sections.append(f"`{key}.`")
            below += groups(section, key + ".", _join(_paragraph(section.__doc__ or ""),
                                                      _sentence(f.metadata.get(HELP, ""))))
            continue
        rows.append(Row(f"`{key}`", _type_name(hint), _default(f), allowed(f), description(f, hint)))
        if section is not None:  # a list of sections: one table for its items
            below += groups(section, key + "[i].", _join(_paragraph(section.__doc__ or ""), f"Each item of `{key}`."))
    if sections:
        notes.insert(0, "Sections, each in a table below: " + ", ".join(sections) + ".")
    return [Group(prefix, cls, intro, tuple(rows), tuple(notes)), *below]


def reference() -> str:
    """The text of docs/config.md."""
    lines = [
        "# Configuration reference",
        "",
        f"Written by `{COMMAND}` from the config classes in rl_system/config/: do not edit it by hand.",
        "",
        "A key is set in a YAML file (`--config FILE`, each section a mapping) or on the command line as",
        "`key=value`, the value in YAML syntax (`learner.lr=1e-5`, `rollout.stop_strings=[]`). A bad value stops",
        "the command before it starts, with one line naming the key. *allowed* is what a key's own rules accept;",
        "the rules that read several keys (`learner.micro_batch_size` dividing the batch, say) are checked too.",
        "",
    ]
    for cls, commands, intro in CONFIGS:
        lines += [f"## `{commands}`", ""]
        for group in groups(cls, "", intro):
            lines += _table(group)
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(group: Group) -> list[str]:
    lines = [f"### `{group.prefix}`" if group.prefix else "### Top-level keys", ""]
    if group.intro:
        lines += [_cell(group.intro), ""]
    lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(text) for text in dataclasses.astuple(row)) + " |" for row in group.rows]
    if group.notes:
        lines += [""] + [f"- {_cell(note)}" for note in group.notes]
    return lines + [""]


def _commands(cls: type) -> str:
    return next(commands for c, commands, _ in CONFIGS if c is cls)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _sentence(text: str) -> str:
    """A help fragment as a sentence of an intro: capitalised, with a full stop."""
    text = text.strip()
    return text and text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _paragraph(doc: str) -> str:
    return " ".join(doc.split())


def _first_sentence(doc: str) -> str:
    text = _paragraph(doc)
    end = text.find(". ")
    return text if end < 0 else text[:end + 1]


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "list of sections" if dataclasses.is_dataclass(args[0]) else f"list of {_type_name(args[0])}s"
        return f"list of {len(args)} {_type_name(args[0])}s" if len(set(args)) == 1 else "list"
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "mapping"}.get(hint, str(hint))


def _default(f: dataclasses.Field) -> str:
    value = _field_default(f)
    return "required" if value is dataclasses.MISSING else f"`{_yaml(value)}`"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _yaml(value: Any) -> str:
    """A default as a config would write it (YAML flow style); a section's item with only its own settings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if dataclasses.is_dataclass(value):
        return "{" + ", ".join(f"{f.name}: {_yaml(getattr(value, f.name))}" for f in dataclasses.fields(value)
                               if getattr(value, f.name) != _field_default(f)) + "}"
    return str(value)
