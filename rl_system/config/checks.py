"""The config's error type and the checks every section uses: one line naming the key."""
from __future__ import annotations

import dataclasses
import itertools
import math
import reprlib
from typing import Any

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


def check_precision(key: str, value: str) -> None:
    check(value == AUTO or value in DTYPES, key, f"auto or one of {', '.join(DTYPES)}", value)


def check_sampling(section: str, temperature: float, top_p: float, top_k: int) -> None:
    check(temperature > 0, f"{section}.temperature", "a positive number", temperature)
    check(0 < top_p <= 1, f"{section}.top_p", "a number in (0, 1]", top_p)
    check(top_k >= 0, f"{section}.top_k", "an integer >= 0 (0: off)", top_k)



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

