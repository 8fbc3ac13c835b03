"""The choices the config's keys allow that the modules acting on them share: their one table each."""
from __future__ import annotations

import re

DTYPES = ("float32", "bfloat16", "float16")  # the one table of dtype names; torch's are getattr(torch, name)
AUTO = "auto"  # every dtype key's default: chosen for the hardware (rl_system/models/precision.py)
ATTN_IMPLEMENTATIONS = ("", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
LOSS_AGG_MODES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp")  # rl_system/algorithms/advantages.py
POLICY_LOSSES = ("grpo", "gspo")  # rl_system/training.grpo_loss
REFERENCE_PLACEMENTS = ("auto", "copy", "sharded", "offload")  # rl_system/learner.reference_placement
# `make-tiny-model --arch`: the causal-LM families rl_system/models/loading.make_tiny_model writes.
TINY_MODEL_ARCHS = ("llama", "qwen2", "gpt2", "gpt_neox")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
PRM_AGGREGATES = ("min", "last", "product")
PROMPT_KINDS = ("all", "reasoning", "general")
STEP_SPLITS = ("lines", "step", "sentences")
SEARCH_METHODS = ("greedy", "maj", "bon", "wbon", "beam", "mcts")
ISOLATION_MODES = ("jail", "limits_only")  # env.python_isolation
TRACKERS = ("tensorboard", "wandb", "mlflow")  # logging.trackers: rl_system/trackers.py
WANDB_MODES = ("offline", "online")
# The targets of the language-consistency reward; rl_system/rewards/rules.py has each one's Unicode scripts.
LANGUAGES = ("ar", "de", "en", "es", "fr", "hi", "it", "ja", "ko", "pt", "ru", "zh")
# The stages of `pipeline` (rl_system/pipeline/r1.py), in order.
R1_STAGES = ("cold_start_data", "cold_start_sft", "reasoning_rl", "general_data", "rejection_data", "sft",
             "all_scenario_rl")
# A task's name is the middle of its metric keys (task/<name>/accuracy).
TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# A tag name as written between < and >: kept simple so it can be used in a regex and a stop string.
TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
