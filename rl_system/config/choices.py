"""Choices shared by the config's sections and the modules that act on them."""
from __future__ import annotations

import re

RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
LOSS_AGG_MODES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp")  # rl_system/algorithms/advantages.py
POLICY_LOSSES = ("grpo", "gspo")  # rl_system/training.grpo_loss
REFERENCE_PLACEMENTS = ("auto", "copy", "sharded", "offload")  # rl_system/learner.reference_placement
PRM_AGGREGATES = ("min", "last", "product")
PROMPT_KINDS = ("all", "reasoning", "general")
STEP_SPLITS = ("lines", "step", "sentences")
DTYPES = ("float32", "bfloat16", "float16")  # the one table of dtype names; torch's are getattr(torch, name)
AUTO = "auto"  # every dtype key's default: chosen for the hardware (rl_system/models/precision.py)
ATTN_IMPLEMENTATIONS = ("", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
SEARCH_METHODS = ("greedy", "maj", "bon", "wbon", "beam", "mcts")
TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
ISOLATION_MODES = ("jail", "limits_only")  # env.python_isolation
# A tag name as written between < and >: kept simple so it can be used in a regex and a stop string.
TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
