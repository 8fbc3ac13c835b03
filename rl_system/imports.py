"""Load a user's plug-in (a reward function, an environment) from a `package.module:name` string.

One helper so every plug-in reports a bad path the same way: one line that names the config key,
the module and the attribute, raised as the caller's own error class.
"""
from __future__ import annotations

import importlib
from typing import Any

from rl_system.config import one_line



def import_object(spec: str, where: str, form: str, error: type[Exception] = ValueError) -> Any:
    """The object `spec` = 'package.module:attr' names; `where` prefixes every message
    (e.g. "reward.functions name 'x'"), `form` says what was expected ('package.module:function')."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise error(f"{where}: expected '{form}'")
    try:
        loaded = importlib.import_module(module)
    except ImportError as e:
        raise error(f"{where}: cannot import module '{module}' ({e})") from None
    except BaseException as e:  # the module itself raised while being imported (SyntaxError, sys.exit, ...)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise error(f"{where}: importing module '{module}' raised {one_line(e)}") from None
    if not hasattr(loaded, attr):
        raise error(f"{where}: module '{module}' has no '{attr}'")
    return getattr(loaded, attr)
