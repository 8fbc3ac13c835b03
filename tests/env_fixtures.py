"""Environments for tests/test_multiturn.py, loaded by import path as a user's would be."""
from rl_system.envs import StepResult


class RaisingEnv:
    """A user's environment whose step raises: the rollout must contain it."""

    def __init__(self, config):
        self.config = config

    def reset(self, problem):
        return None

    def step(self, turn_text):
        if turn_text.rstrip().endswith(f"</{self.config.tool_tag}>"):
            raise RuntimeError("tool backend down")
        return StepResult("", done=True)


class MisbehavingEnv:
    """A user's environment whose tool misbehaves on request: `<tool>hang</tool>` never returns,
    `<tool>crash</tool>` kills its process, `<tool>flood</tool>` answers 1 MB; anything else is echoed."""

    def __init__(self, config):
        self.config = config

    def reset(self, problem):
        return None

    def step(self, turn_text):
        import os
        import time

        call = turn_text.removeprefix("<tool>").removesuffix("</tool>")
        if call == "hang":
            time.sleep(3600)
        if call == "crash":
            os._exit(1)
        from rl_system.envs import format_observation

        output = "x" * 1_000_000 if call == "flood" else call
        return StepResult(format_observation(output, max_chars=self.config.max_observation_chars),
                          info={"tool_call": True})
