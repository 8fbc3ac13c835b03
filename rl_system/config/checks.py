"""The config's error type, and how a config field is declared and checked.

A field is declared with `setting(default, description, *rules)`: its one-line description and its
rules live beside it, once. A `Rule` carries both its test and the words for what it allows, so the
error ("config key 'k': expected <words>, got <value>") and the allowed column of docs/config.md
come from the same place. Rules that read more than one field are code in the sections' checks.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import reprlib
from dataclasses import dataclass
from typing import Any, Callable

from rl_system.config.choices import AUTO, DTYPES


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key."""


def check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': expected {expected}, got {preview(value)}")


class _Preview(reprlib.Repr):
    """reprlib's cut repr, with a mapping's keys in the order they were written (reprlib sorts them)."""

    def repr_dict(self, x, level):
        if not x or level <= 0:
            return "{}" if not x else "{" + self.fillvalue + "}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(x[k], level - 1)}" for k in itertools.islice(x, self.maxdict)]
        return "{" + ", ".join(pieces + [self.fillvalue] * (len(x) > self.maxdict)) + "}"


# Values in messages: nested containers and long strings cut, without walking (or expanding) all of them.
_PREVIEW = _Preview()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxlong, _PREVIEW.maxother = 3, 60, 40, 60
_PREVIEW.maxtuple = _PREVIEW.maxlist = _PREVIEW.maxdict = _PREVIEW.maxset = 4
PREVIEW_CHARS = 100


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A value as a short repr for a one-line message: at most `limit` characters."""
    text = " ".join(_PREVIEW.repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(e: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


@dataclass(frozen=True)
class Rule:
    """What a key allows: `ok` decides, `expected` says it. `shown` is how a bad value appears in the
    message (the list the YAML had, say, rather than the tuple it was loaded as)."""
    ok: Callable[[Any], bool]
    expected: str
    shown: Callable[[Any], Any] = lambda value: value

    def check(self, key: str, value: Any) -> None:
        check(self.ok(value), key, self.expected, self.shown(value))


def one_of(choices: tuple, expected: str | None = None) -> Rule:
    return Rule(lambda value: value in choices, expected or f"one of {choices}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


POSITIVE_INT = Rule(lambda v: v > 0, "a positive integer")
POSITIVE = Rule(lambda v: v > 0, "a positive number")
NON_NEGATIVE_INT = Rule(lambda v: v >= 0, "an integer >= 0")
NON_NEGATIVE = Rule(lambda v: v >= 0, "a number >= 0")
UNIT_INTERVAL = Rule(lambda v: 0 < v <= 1, "a number in (0, 1]")
NON_EMPTY = Rule(bool, "a non-empty string")
TOP_K = Rule(lambda v: v >= 0, "an integer >= 0 (0: off)")
ZERO_STAGE = one_of((0, 1, 2, 3), "0, 1, 2 or 3")
PRECISION = Rule(lambda v: v == AUTO or v in DTYPES, f"auto or one of {', '.join(DTYPES)}")

HELP, RULES = "help", "rules"  # the metadata keys of a field declared by setting()


def setting(default: Any, help: str, *rules: Rule) -> Any:
    """A config field: its default (dataclasses.MISSING: required), its one-line description, its rules.
    A mapping default is copied for each config, as a default_factory would."""
    metadata = {HELP: help, RULES: rules}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type, help: str = "") -> Any:
    """A field holding a config section; the section's docstring describes it, `help` only what this place adds."""
    return dataclasses.field(default_factory=cls, metadata={HELP: help, RULES: ()})


def check_rules(config: Any, prefix: str) -> None:
    """Each field's declared rules, in the order the fields are declared; keys are named `prefix` + field."""
    for f in dataclasses.fields(config):
        for rule in f.metadata.get(RULES, ()):
            rule.check(prefix + f.name, getattr(config, f.name))


def check_tree(config: Any, prefix: str) -> None:
    """check_rules on a config and on every section below it, a list's sections named `key[i].`."""
    check_rules(config, prefix)
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_tree(value, key + ".")
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_tree(item, f"{key}[{i}].")


def check_finite(config: Any, prefix: str) -> None:
    """Every number in the config is finite: a NaN or inf weight, rate or timeout is a typo, never a setting."""
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            where = key if i is None else f"{key}[{i}]"
            if dataclasses.is_dataclass(item):
                check_finite(item, where + ".")
            elif isinstance(item, float):
                check(math.isfinite(item), where, "a finite number", item)


def check_section(config: Any, prefix: str) -> None:
    """What every section checks first: its numbers are finite, then its fields' declared rules."""
    check_finite(config, prefix)
    check_rules(config, prefix)
