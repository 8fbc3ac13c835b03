"""Loading a config: YAML (a file and `a.b=c` overrides), each value coerced to its field's type."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from rl_system.config.checks import ConfigError, check, preview
from rl_system.config.train import TrainConfig


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                cls: type = TrainConfig):
    """Builds `cls` from a YAML file (optional) and `a.b=c` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}': not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file '{path}': not UTF-8 text (byte {e.start}); expected YAML") from None
        raw = _parse_yaml(text, f"config file '{path}'") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file '{path}': expected a mapping at the top level")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {preview(item)}: expected key=value, e.g. learner.lr=1e-5")
        _set_dotted(raw, key.strip().split("."), _parse_yaml(value, f"override {preview(item)}"))
    return build(cls, raw, prefix="")


MAX_YAML_VALUES = 100_000  # values in a config with its aliases expanded: a config is small, an alias bomb is not


class _ConfigLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, also refusing a key given twice in one mapping (YAML's last one would win
    silently) with both lines."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys written beside it override
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {preview(key)} (first at line {lines[key] + 1})", key_node.start_mark)
                lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any, where: str) -> None:
    """Raises unless `value`, each alias counted as often as it is used, holds at most MAX_YAML_VALUES values
    (or if it holds itself). Counted once per distinct object, so an alias bomb is measured, not expanded."""
    sizes: dict[int, int] = {}
    pending: list[tuple[Any, bool]] = [(value, False)]
    while pending:
        item, children_done = pending.pop()
        if not isinstance(item, (dict, list)) or (id(item) in sizes and not children_done):
            continue
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        if children_done:
            sizes[id(item)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(item)] > MAX_YAML_VALUES:
                raise ConfigError(f"{where}: more than {MAX_YAML_VALUES} values once its aliases are expanded; "
                                  "expected a config (is it an alias bomb?)")
            continue
        sizes[id(item)] = -1  # in progress: met again below it, it holds itself
        pending.append((item, True))
        for child in children:
            if sizes.get(id(child)) == -1:
                raise ConfigError(f"{where}: an alias refers to a value that holds it; expected a config without cycles")
            pending.append((child, False))


def _parse_yaml(text: str, where: str) -> Any:
    try:
        value = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply; expected a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None:  # e.g. an unclosed quote: where it was opened
            problem += f" ({context} at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{where}{at}: invalid YAML, {problem}") from None
    _expanded_size(value, where)
    return value


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"override '{'.'.join(keys)}': '{k}' is not a section")
    tree[keys[-1]] = value


def build(cls: type, raw: Any, prefix: str):
    where = prefix.rstrip(".") or "<top>"
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{where}': expected a mapping, got {preview(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown config key {preview(f'{prefix}{key}')} (known here: {', '.join(sorted(names))})")
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field left out
        raise ConfigError(f"config section '{where}': {e}") from None


KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", tuple: "a list",
              dict: "a mapping"}  # how a union's message names its kinds


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if value is None and type(None) in typing.get_args(hint):
            return None
        if len(options) == 1:
            return _coerce(options[0], value, key)
        for kind in options:  # several kinds (int | float | str, str | tuple): the first that takes the value
            try:
                return _coerce(kind, value, key)
            except ConfigError:
                pass
        check(False, key, " or ".join(KIND_WORDS.get(typing.get_origin(k) or k, str(k)) for k in options), value)
    if origin is tuple:
        args = typing.get_args(hint)
        check(isinstance(value, (list, tuple)), key, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        check(len(value) == len(args), key, f"a list of {len(args)} items", value)
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is dict:
        check(isinstance(value, dict), key, "a mapping", value)
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-6" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number", value)
        return float(value)
    if hint is int:
        check(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
        return value
    if hint is bool:
        check(isinstance(value, bool), key, "true or false", value)
        return value
    if hint is str:
        check(isinstance(value, str), key, "a string", value)
        return value
    raise ConfigError(f"config key '{key}': unsupported type {hint}")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def to_yaml(config: Any, comments: dict[str, str] | None = None) -> str:
    """Every key of `config` as YAML that load_config reads back to an equal config: sections as
    blocks, each value on one line; `comments`: dotted key -> a comment written after its value."""
    comments = comments or {}

    def lines(tree: dict, prefix: str, indent: str) -> list[str]:
        out = []
        for key, value in tree.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value and dataclasses.is_dataclass(_field_type(config, dotted)):
                out += [f"{indent}{key}:", *lines(value, dotted + ".", indent + "  ")]
                continue
            comment = f"  # {comments[dotted]}" if dotted in comments else ""
            out.append(f"{indent}{key}: {_one_line(value)}{comment}")
        return out

    return "\n".join(lines(to_dict(config), "", "")) + "\n"


def _field_type(config: Any, dotted: str) -> Any:
    """The declared type of a dotted key (a section is a dataclass; a dict-typed key is a value)."""
    cls = type(config)
    for part in dotted.split("."):
        cls = typing.get_type_hints(cls)[part]
    return cls


class _OneLineDumper(yaml.SafeDumper):
    """Flow style on one line: a tuple as a list, a string holding a line break double-quoted (escaped)."""


_OneLineDumper.add_representer(tuple, lambda dumper, value: dumper.represent_list(list(value)))
_OneLineDumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style='"' if "\n" in value or "\r" in value else None))


def _one_line(value: Any) -> str:
    text = yaml.dump(value, Dumper=_OneLineDumper, default_flow_style=True, width=math.inf, allow_unicode=True,
                     sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...")
