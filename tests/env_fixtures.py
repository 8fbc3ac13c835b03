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
