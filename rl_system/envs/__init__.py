"""Environments for multi-turn rollouts: the model calls a tool, reads its result, goes on.

`make_env(config)` builds one environment per trajectory from an `EnvConfig`:
- `env.name: calculator`: arithmetic by a safe parser (rl_system/envs/calculator.py);
- `env.name: python`: model-written code in a bubblewrap jail, only with `env.python_enabled: true`
  (rl_system/envs/python_tool.py says what the jail does; docs/security.md how it is attacked);
- `env.name: package.module:ClassName`: a user's environment, called with the EnvConfig; it must
  have `reset(problem)` and `step(turn_text)` (the `Environment` protocol in base.py).
"""
from __future__ import annotations

from typing import Callable

from rl_system.envs.base import Environment, StepResult, ToolEnvironment, format_observation, parse_tool_call, truncate
from rl_system.envs.calculator import CalculatorEnv, calculate
from rl_system.config import EnvConfig
from rl_system.envs.python_tool import PythonEnv, run_python
from rl_system.imports import import_object

ENVIRONMENTS: dict[str, Callable[[EnvConfig], Environment]] = {
    "calculator": CalculatorEnv,
    "python": PythonEnv,
}


class UnknownEnvironmentError(ValueError):
    """An env.name that names no environment; the message is one line naming the key."""


def resolve_env(name: str) -> Callable[[EnvConfig], Environment]:
    """A built-in environment's name, or `package.module:ClassName` for a user's own."""
    if name in ENVIRONMENTS:
        return ENVIRONMENTS[name]
    if ":" not in name:
        raise UnknownEnvironmentError(f"env.name '{name}': unknown environment (built in: "
                                      f"{', '.join(sorted(ENVIRONMENTS))}; or give 'package.module:ClassName')")
    factory = import_object(name, f"env.name '{name}'", "package.module:ClassName", UnknownEnvironmentError)
    if not callable(factory):
        raise UnknownEnvironmentError(f"env.name '{name}': '{name.partition(':')[2]}' is a "
                                      f"{type(factory).__name__}, expected a class taking the EnvConfig")
    return factory


def make_env(config: EnvConfig) -> Environment | None:
    """A fresh environment for one trajectory, or None when `env.name` is '' (single-turn rollouts)."""
    if not config.name:
        return None
    env = resolve_env(config.name)(config)
    missing = [m for m in ("reset", "step") if not callable(getattr(env, m, None))]
    if missing:
        raise UnknownEnvironmentError(f"env.name '{config.name}': the environment has no {' or '.join(missing)}"
                                      f"(); expected reset(problem) -> str | None and step(turn_text) -> StepResult")
    return env


__all__ = ["ENVIRONMENTS", "CalculatorEnv", "EnvConfig", "Environment", "PythonEnv", "StepResult", "ToolEnvironment",
           "UnknownEnvironmentError", "calculate", "format_observation", "make_env", "parse_tool_call",
           "resolve_env", "run_python", "truncate"]
