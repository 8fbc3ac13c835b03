"""Prompt sources (reasoning-gym tasks, local dataset files), splits, task mixtures and chat templates."""
from rl_system.data.mixture import TaskMixtureSampler, group_by_task
from rl_system.data.prompts import R1_SYSTEM_PROMPT, chat_messages, format_prompt
from rl_system.data.problem import Problem
from rl_system.data.sources import PromptSampler, load_splits

__all__ = ["R1_SYSTEM_PROMPT", "Problem", "PromptSampler", "TaskMixtureSampler", "chat_messages", "format_prompt",
           "group_by_task", "load_splits"]
