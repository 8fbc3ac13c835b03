"""`collect-samples`: policy samples graded by the rule rewards, saved as a `datasets` dataset for
reward-model training; optionally with Math-Shepherd step labels from Monte-Carlo continuations."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from rl_system.config import TrainConfig
from rl_system.data import Problem, load_splits
from rl_system.data.sources import save_dataset
from rl_system.rewards.steps import mc_step_labels, split_steps, step_ends


class Workers(Protocol):
    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None,
                 n: int | None = None, prefills: list[str] | None = None, score: bool = False) -> list[Any]: ...
    def score(self, rollouts: list[Any]) -> tuple[list[Any], list[dict]]: ...
    def fetch(self, handles: list[Any]) -> list[Any]: ...


def collect_samples(cfg: TrainConfig, workers: Workers, log=print) -> Path:
    cc = cfg.collect
    train_set, eval_set = load_splits(cfg.data)
    rows = []
    for split, problems in (("train", train_set[:cc.num_train_prompts]), ("eval", eval_set[:cc.num_eval_prompts])):
        groups = sample_and_grade(workers, problems)
        for g in groups:
            for completion, correct, formatted in zip(g.completions, g.rewards["accuracy"], g.rewards["format"]):
                rows.append({
                    "question": g.problem.question, "answer": g.problem.answer, "completion": completion,
                    "label": int(correct >= 1.0), "format": int(formatted >= 1.0), "split": split,
                    "prompt_id": g.problem.problem_id,
                    "task": g.problem.task,  # its data.tasks entry ("" in a one-task run): per-task AUROC
                    "columns": json.dumps(g.problem.columns),  # what the graders need to re-grade
                    "policy_model": cfg.model.path, "policy_version": g.policy_version,
                })
        log(f"{split}: {len(groups)} prompts, {sum(r['split'] == split for r in rows)} samples, "
            f"{sum(r['label'] for r in rows if r['split'] == split)} correct")
    if cc.mc_rollouts:
        add_step_labels(cfg, workers, rows, log)

    return save_dataset(rows, cc.output_dir, {
        "policy_model": cfg.model.path, "task": cfg.data.describe(), "samples_per_prompt": cfg.rollout.group_size,
        "sampling": {"temperature": cc.temperature, "top_p": cc.top_p, "top_k": cc.top_k},
        "step_split": cc.step_split, "mc_rollouts": cc.mc_rollouts,
        "positive_rate": sum(r["label"] for r in rows) / max(1, len(rows)),
    })


def sample_and_grade(workers: Workers, problems: list[Problem], **generate_kwargs) -> list:
    """Scored PromptGroups, fetched: sampled on the rollout workers, graded on the reward workers."""
    return workers.fetch(workers.score(workers.generate(problems, score=True, **generate_kwargs))[0]) if problems else []


def add_step_labels(cfg: TrainConfig, workers: Workers, rows: list[dict], log=print) -> None:
    """Math-Shepherd: from every step prefix but the last, K continuations on the rollout workers;
    a step's soft label is the fraction of them that the rule grader marks correct."""
    cc = cfg.collect
    prefixes, owners = [], []
    for r_idx, row in enumerate(rows):
        for end in step_ends(row["completion"], cc.step_split)[:-1]:
            prefixes.append(row["completion"][:end])
            owners.append(r_idx)
    problems = [Problem(rows[i]["prompt_id"], rows[i]["question"], rows[i]["answer"], json.loads(rows[i]["columns"]))
                for i in owners]
    groups = sample_and_grade(workers, problems, n=cc.mc_rollouts, max_new_tokens=cc.mc_max_new_tokens,
                              prefills=prefixes)
    continuations: dict[int, list[list[float]]] = {}
    for owner, g in zip(owners, groups):
        continuations.setdefault(owner, []).append([float(v >= 1.0) for v in g.rewards["accuracy"]])
    for r_idx, row in enumerate(rows):
        row["steps"] = split_steps(row["completion"], cc.step_split)
        row["step_labels"] = mc_step_labels(step_ends(row["completion"], cc.step_split),
                                            continuations.get(r_idx, []), row["label"])
    log(f"step labels: {len(prefixes)} prefixes x {cc.mc_rollouts} continuations")
