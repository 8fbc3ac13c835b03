"""`EnvConfig`: the `env:` section of a run's config (multi-turn rollouts with a tool).

Kept beside the environments; TrainConfig.env holds it, and its messages name the keys as
`env.<field>`, the way rl_system.config reports every other key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from rl_system.envs.base import TAG_NAME

ISOLATION_MODES = ("jail", "limits_only")  # env.python_isolation


@dataclass(frozen=True)
class EnvConfig:
    # "" = no environment: single-turn rollouts as before. "calculator", "python", or a user's
    # environment as 'package.module:ClassName' (called with this EnvConfig, one instance per trajectory).
    name: str = ""
    max_turns: int = 4  # model turns per trajectory, the final answer included
    tool_tag: str = "tool"  # the model calls the tool with <tool>...</tool>
    result_tag: str = "result"  # the tool's reply is appended as <result>...</result>
    max_observation_chars: int = 1000  # a longer tool reply is cut, with a marker saying so
    timeout_s: float = 5.0  # wall-clock limit of one tool call
    # On Ray, each rollout worker runs its trajectories' environments on this many environment workers
    # (restartable actors beside it; actors/env_worker.py); 0 runs them in the rollout worker's process.
    num_workers: int = 1
    num_cpus: float = 0.0  # reserved per environment worker (tool calls are short; the python tool's child is capped)
    threads: int = 8  # tool calls that run at once in one environment worker
    # The python tool runs model-written code (rl_system/envs/python_tool.py): off unless enabled here.
    python_enabled: bool = False
    # "jail": each call in a bubblewrap jail (refused where it cannot start); "limits_only": a child
    # process with resource limits alone, the machine's files and network within its reach.
    python_isolation: str = "jail"
    python_memory_mb: int = 256  # address-space limit of the child
    python_cpu_s: int = 2  # CPU-time limit of the child (the wall-clock limit is timeout_s)

    def __post_init__(self) -> None:
        # Imported here so that rl_system.config can import EnvConfig at its top without a cycle.
        from rl_system.config import ConfigError, _check

        _check(isinstance(self.name, str), "env.name", "a string ('', 'calculator', 'python' or "
               "'package.module:ClassName')", self.name)
        for key in ("max_turns", "max_observation_chars", "python_memory_mb", "python_cpu_s", "num_workers", "threads"):
            value = getattr(self, key)
            _check(isinstance(value, int) and not isinstance(value, bool), f"env.{key}", "an integer", value)
        _check(self.max_turns >= 1, "env.max_turns", "an integer >= 1", self.max_turns)
        _check(self.num_workers >= 0, "env.num_workers", "an integer >= 0 (0: in the rollout worker's process)",
               self.num_workers)
        _check(self.threads >= 1, "env.threads", "an integer >= 1", self.threads)
        _check(isinstance(self.num_cpus, (int, float)) and not isinstance(self.num_cpus, bool) and self.num_cpus >= 0,
               "env.num_cpus", "a number >= 0", self.num_cpus)
        for key in ("tool_tag", "result_tag"):
            value = getattr(self, key)
            _check(isinstance(value, str) and bool(TAG_NAME.match(value)), f"env.{key}",
                   "a tag name like 'tool' (letters, digits, _ or -)", value)
        _check(self.tool_tag != self.result_tag, "env.result_tag", f"a tag other than env.tool_tag "
               f"'{self.tool_tag}'", self.result_tag)
        _check(self.max_observation_chars >= 16, "env.max_observation_chars", "an integer >= 16",
               self.max_observation_chars)
        _check(isinstance(self.timeout_s, (int, float)) and not isinstance(self.timeout_s, bool)
               and math.isfinite(self.timeout_s) and 0 < self.timeout_s <= 600, "env.timeout_s",
               "a number of seconds in (0, 600]", self.timeout_s)
        _check(isinstance(self.python_enabled, bool), "env.python_enabled", "true or false", self.python_enabled)
        _check(self.python_isolation in ISOLATION_MODES, "env.python_isolation",
               f"one of {', '.join(ISOLATION_MODES)}", self.python_isolation)
        _check(self.python_memory_mb >= 64, "env.python_memory_mb", "an integer >= 64 (the interpreter "
               "itself needs some)", self.python_memory_mb)
        _check(self.python_cpu_s >= 1, "env.python_cpu_s", "an integer >= 1", self.python_cpu_s)
        if self.name == "python" and not self.python_enabled:
            raise ConfigError("config key 'env.name': 'python' runs model-written code and is off unless "
                              "env.python_enabled=true")
