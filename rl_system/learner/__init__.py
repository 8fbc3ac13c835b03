"""The learner: rank.py is one DeepSpeed data-parallel rank (the GRPO update, weight publishing,
checkpoints); deepspeed.py builds the engine config and holds the ZeRO-3 helpers every trainer uses."""
from rl_system.learner.deepspeed import (
    deepspeed_config, full_parameters, gathered_named_parameters, init_deepspeed, reference_deepspeed_config,
    reference_placement, zero3_construction,
)
from rl_system.learner.rank import Learner, peak_memory_gib

__all__ = ["Learner", "deepspeed_config", "full_parameters", "gathered_named_parameters", "init_deepspeed",
           "peak_memory_gib", "reference_deepspeed_config", "reference_placement", "zero3_construction"]
