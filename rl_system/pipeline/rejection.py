"""Rejection sampling into SFT data: sample, grade, keep what passes every required reward, dedupe."""
from __future__ import annotations

import json
from pathlib import Path

from rl_system.config import ConfigError, TrainConfig
from rl_system.data import Problem, chat_messages, load_splits
from rl_system.data.sources import save_dataset
from rl_system.pipeline.collect import Workers, sample_and_grade
from rl_system.types import PromptGroup


def accepted_completions(group: PromptGroup, require: dict[str, float], max_per_prompt: int = 0) -> list[int]:
    """Indices of the distinct completions whose every required reward reaches its minimum."""
    seen, keep = set(), []
    for i, completion in enumerate(group.completions):
        if completion in seen or any(group.rewards[name][i] < low for name, low in require.items()):
            continue
        seen.add(completion)
        keep.append(i)
    return keep[:max_per_prompt] if max_per_prompt else keep


def sft_row(cfg: TrainConfig, problem: Problem, group: PromptGroup, index: int, source: str) -> dict:
    """A chat example (the prompt's chat as the model saw it, assistant = the kept answer) with provenance."""
    return {
        "messages": [*chat_messages(problem.prompt, cfg.data.system_prompt),
                     {"role": "assistant", "content": group.completions[index]}],
        "question": problem.question, "answer": problem.answer, "completion": group.completions[index],
        "source": source, "policy_model": cfg.model.path, "policy_version": group.policy_version,
        "scores": json.dumps({name: values[index] for name, values in group.rewards.items()}),
    }


def check_requirements(cfg: TrainConfig) -> None:
    names = [f.name for f in cfg.reward.functions] + [m.name for m in cfg.reward.models]
    for name in cfg.rejection.require:
        if name not in names:
            raise ConfigError(f"config key 'rejection.require.{name}': expected the name of a configured reward "
                              f"(configured: {', '.join(names)})")


def rejection_sample(cfg: TrainConfig, workers: Workers, log=print) -> Path:
    check_requirements(cfg)
    rc = cfg.rejection
    problems = load_splits(cfg.data)[0][:rc.num_prompts]
    rows = []
    for problem, group in zip(problems, sample_and_grade(workers, problems)):
        rows += [sft_row(cfg, problem, group, i, "rejection_sampling")
                 for i in accepted_completions(group, rc.require, rc.max_per_prompt)]
    log(f"rejection sampling: kept {len(rows)} of {len(problems) * cfg.rollout.group_size} samples "
        f"from {len(problems)} prompts")
    return save_dataset(rows, rc.output_dir, {"policy_model": cfg.model.path, "require": rc.require,
                                              "prompts": len(problems), "samples_per_prompt": cfg.rollout.group_size})
