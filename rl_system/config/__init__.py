"""Typed run configuration: frozen dataclasses loaded from YAML plus `a.b=c` overrides.

Every problem is reported as one line naming the key: an unknown key, a wrong type, or a
value outside its range all raise ConfigError before any worker starts. Each key is declared
once, with its default, its one-line description and its rules (checks.setting); docs/config.md
is written from those declarations (`python -m rl_system config-docs`). The ground floor of
rl_system: it imports nothing else of it, and no torch.

checks.py    ConfigError; setting / section / Rule: how a key is declared and checked
choices.py   the choices shared with the modules that act on them (dtype names, loss modes, ...)
sections.py  one dataclass per section of a run's config
train.py     TrainConfig: the sections, the top-level keys, and the rules that read several keys
jobs.py      the configs of `sft` / `distill` and `train-orm` / `train-prm`
loader.py    load_config: YAML, overrides, coercion; to_yaml, its inverse (--print-config)
reference.py the text of docs/config.md, from the declarations
"""
from rl_system.config.checks import ConfigError, one_line, preview
from rl_system.config.choices import (
    ADVANTAGE_ESTIMATORS, ATTN_IMPLEMENTATIONS, AUTO, DTYPES, LOSS_AGG_MODES, PLACEMENT_STRATEGIES, POLICY_LOSSES,
    LANGUAGES, PRM_AGGREGATES, PROMPT_KINDS, REFERENCE_PLACEMENTS, SEARCH_METHODS, STEP_SPLITS,
)
from rl_system.config.jobs import RewardModelTrainConfig, SFTConfig
from rl_system.config.loader import build, load_config, to_dict, to_yaml
from rl_system.config.sections import (
    ClusterConfig, CollectConfig, CurriculumConfig, DataConfig, DifficultyFilterConfig, DynamicSamplingConfig, EnvConfig, LearnerConfig,
    LoggingConfig, LoraConfig, ModelConfig, R1Config, RejectionConfig, RewardConfig, RewardFunctionConfig,
    RewardModelConfig, RolloutConfig, SearchConfig, StarConfig, TaskConfig,
)
from rl_system.config.train import TrainConfig, sampling_for

__all__ = ["ADVANTAGE_ESTIMATORS", "ATTN_IMPLEMENTATIONS", "AUTO", "ClusterConfig", "CollectConfig", "ConfigError",
           "CurriculumConfig", "DTYPES", "DataConfig", "DifficultyFilterConfig", "DynamicSamplingConfig", "EnvConfig", "LANGUAGES",
           "LOSS_AGG_MODES", "LearnerConfig", "LoggingConfig", "LoraConfig", "ModelConfig", "PLACEMENT_STRATEGIES",
           "POLICY_LOSSES", "PRM_AGGREGATES", "PROMPT_KINDS", "R1Config", "REFERENCE_PLACEMENTS", "RejectionConfig",
           "RewardConfig", "RewardFunctionConfig", "RewardModelConfig", "RewardModelTrainConfig", "RolloutConfig",
           "SEARCH_METHODS", "SFTConfig", "STEP_SPLITS", "SearchConfig", "StarConfig", "TaskConfig", "TrainConfig",
           "build", "load_config", "one_line", "preview", "sampling_for", "to_dict", "to_yaml"]
