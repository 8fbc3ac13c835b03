"""Prompt sources (reasoning-gym tasks, local dataset files), splits and chat templates."""
from rl_system.data.prompts import R1_SYSTEM_PROMPT, format_prompt
from rl_system.data.sources import Problem, PromptSampler, load_splits

__all__ = ["R1_SYSTEM_PROMPT", "Problem", "PromptSampler", "format_prompt", "load_splits"]
