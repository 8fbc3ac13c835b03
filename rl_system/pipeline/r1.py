"""The DeepSeek-R1 recipe, stage by stage. Every stage writes its output under r1.output_dir and
is recorded in state.json with its wall time and held-out accuracy; `--resume` skips stages done.

  cold_start_data    sampled (and hint-rationalised) correct answers of the base model, or with
                     r1.cold_start: traces, worked solutions written by code (rl_system/data/traces.py)
  cold_start_sft     SFT of the base model on them                          -> model A
  reasoning_rl       GRPO from A: accuracy + format + language consistency  -> model B
  general_data       general prompts answered by the base model: SFT rows, and a helpfulness /
                     harmlessness reward model trained on right vs wrong answers (refusals for harmful asks)
  rejection_data     B's answers that pass the rule rewards, plus the general SFT rows
  sft                SFT of the base model on that mix                      -> model C
  all_scenario_rl    GRPO from C on reasoning + general prompts: rule rewards on reasoning
                     prompts, the helpfulness/harmlessness RM on general ones -> model D

r1.last_stage stops the recipe after a stage (reasoning_rl: cold start and reasoning RL only).
"""
from __future__ import annotations

import dataclasses
import json
import time

import datasets
from pathlib import Path
from typing import Callable

from rl_system.algorithms.reward_model import evaluate_reward_model, train_reward_model
from rl_system.config import (
    RewardFunctionConfig, RewardModelConfig, RewardModelTrainConfig, SFTConfig, TrainConfig,
)
from rl_system.config.choices import R1_STAGES
from rl_system.data import R1_SYSTEM_PROMPT, load_splits
from rl_system.data.general import REFUSAL, general_problems
from rl_system.data.sources import DatasetError, save_dataset
from rl_system.data.traces import TRACED_TASKS, trace_rows
from rl_system.pipeline import r1_zero
from rl_system.pipeline.collect import sample_and_grade
from rl_system.pipeline.rejection import accepted_completions, sft_row
from rl_system.pipeline.star import Workers, collect_rationales

STAGES = R1_STAGES
DIRECT_THINK = "<think> This is a general request, so I answer it directly. </think> "


def run_r1(cfg: TrainConfig, start_workers: Callable[..., Workers], run_sft: Callable[[SFTConfig], dict],
           resume: bool = False, log=print) -> dict:
    out = Path(cfg.r1.output_dir).resolve()  # actors and Ray Train workers read these paths
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "state.json"
    state = json.loads(state_file.read_text()) if resume and state_file.is_file() else {"stages": {}}
    base = cfg.model.path
    for stage in STAGES[:STAGES.index(cfg.r1.last_stage) + 1]:
        if stage in state["stages"]:
            log(f"{stage}: done before, skipped")
            continue
        start = time.perf_counter()
        record = STAGE_FUNCTIONS[stage](cfg, out, state, start_workers, run_sft, base)
        record["seconds"] = round(time.perf_counter() - start, 1)
        state["stages"][stage] = record
        state_file.write_text(json.dumps(state, indent=2))  # a crash later keeps every finished stage
        log(f"{stage}: {record}")
    return state


def _with(cfg: TrainConfig, **changes) -> TrainConfig:
    """cfg with dotted-section changes, e.g. _with(cfg, model__path="x")."""
    for key, value in changes.items():
        section, _, field = key.partition("__")
        cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{field: value})}) \
            if field else dataclasses.replace(cfg, **{section: value})
    return cfg


def _evaluate(cfg: TrainConfig, model: str, start_workers) -> dict:
    """Held-out accuracy, and in a data.tasks mixture each task's, as a stage records them."""
    workers = start_workers(_with(cfg, model__path=model), with_learner=False)
    try:
        result = r1_zero.evaluate(workers, load_splits(cfg.data)[1], cfg)
    finally:
        workers.shutdown()
    tasks = {name: task["accuracy"] for name, task in result.get("tasks", {}).items()}
    return {"accuracy": result["accuracy"], "mean_length": result["mean_length"],
            **({"task_accuracy": tasks} if tasks else {})}


def cold_start_data(cfg, out, state, start_workers, run_sft, base) -> dict:
    if cfg.r1.cold_start == "traces":
        rows = trace_rows(load_splits(cfg.data)[0][:cfg.r1.cold_start_prompts], cfg.data.system_prompt)
        if not rows:
            raise DatasetError(f"r1.cold_start 'traces': no problem of the training split has a trace (tasks "
                               f"{', '.join(TRACED_TASKS)} with + - * only)")
        save_dataset(rows, out / "cold_start_data", {"written_by": "rl_system/data/traces.py"})
        return {"output": str(out / "cold_start_data"), "rows": len(rows),
                "mean_trace_chars": round(sum(len(r["completion"]) for r in rows) / len(rows), 1)}
    workers = start_workers(cfg, with_learner=False)
    try:
        accuracy = r1_zero.evaluate(workers, load_splits(cfg.data)[1], cfg)["accuracy"]
        rows, unsolved = collect_rationales(cfg, workers, load_splits(cfg.data)[0][:cfg.r1.cold_start_prompts])
    finally:
        workers.shutdown()
    save_dataset(rows, out / "cold_start_data", {"model": base})
    return {"output": str(out / "cold_start_data"), "rows": len(rows), "hinted_prompts": unsolved,
            "base_accuracy": accuracy}


def _sft_stage(cfg, out, base, data: Path, name: str, run_sft, start_workers) -> dict:
    sft_cfg = dataclasses.replace(cfg.sft, base_model=base, data=str(data), output_dir=str(out / name))
    history = run_sft(sft_cfg)["history"]
    return {"output": sft_cfg.output_dir, "final_loss": history[-1]["loss"],
            **_evaluate(cfg, sft_cfg.output_dir, start_workers)}


def cold_start_sft(cfg, out, state, start_workers, run_sft, base) -> dict:
    return _sft_stage(cfg, out, base, out / "cold_start_data", "cold_start_sft", run_sft, start_workers)


def _grpo_stage(cfg: TrainConfig, start_workers) -> dict:
    workers = start_workers(cfg, with_learner=True)
    try:
        results = r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()
    after = results["after"]
    tasks = {name: task["accuracy"] for name, task in after.get("tasks", {}).items()}
    return {"output": str(Path(cfg.output_dir) / "checkpoint"), "accuracy": after["accuracy"],
            "format_rate": after["format_rate"], "mean_length": after["mean_length"],
            **({"task_accuracy": tasks} if tasks else {})}


def _rule_rewards(cfg: TrainConfig, applies_to: str) -> tuple:
    language = RewardFunctionConfig("language_consistency", cfg.r1.language_weight, {"language": cfg.r1.language})
    return (RewardFunctionConfig("accuracy", 1.0, applies_to=applies_to),
            RewardFunctionConfig("format", 0.5, applies_to=applies_to), language)


def reasoning_rl(cfg, out, state, start_workers, run_sft, base) -> dict:
    rl_cfg = _with(cfg, model__path=state["stages"]["cold_start_sft"]["output"], num_steps=cfg.r1.reasoning_rl_steps,
                   output_dir=str(out / "reasoning_rl"), eval_before=False,
                   reward=dataclasses.replace(cfg.reward, functions=_rule_rewards(cfg, "all"), models=()))
    return _grpo_stage(rl_cfg, start_workers)


def general_data(cfg, out, state, start_workers, run_sft, base) -> dict:
    """The base model answers general prompts as a plain assistant. SFT rows keep the R1 format;
    the RM learns: the right answer (a refusal for harmful asks) > another prompt's answer, an
    empty answer, or going along with a harmful ask."""
    problems = general_problems(cfg.r1.general_prompts, cfg.data.seed)
    assistant = _with(cfg, data__system_prompt="You are a helpful assistant.", data__prefill="",
                      reward=dataclasses.replace(cfg.reward, functions=(RewardFunctionConfig("format"),), models=()))
    workers = start_workers(assistant, with_learner=False)
    try:
        groups = sample_and_grade(workers, problems, greedy=True, max_new_tokens=cfg.eval_max_new_tokens)
    finally:
        workers.shutdown()
    answers = [g.completions[0].strip() for g in groups]
    sft_rows, rm_rows = [], []
    for i, problem in enumerate(problems):
        good = REFUSAL if problem.columns["harmful"] else answers[i]
        bad = [answers[i]] if problem.columns["harmful"] else [answers[(i + 1) % len(problems)], ""]
        split = "eval" if i % 5 == 4 else "train"
        sft_rows.append({"messages": [{"role": "system", "content": cfg.data.system_prompt or R1_SYSTEM_PROMPT},
                                      {"role": "user", "content": problem.question},
                                      {"role": "assistant", "content": f"{DIRECT_THINK}<answer>{good}</answer>"}],
                         "question": problem.question, "source": "general"})
        rm_rows += [{"question": problem.question, "completion": f"{DIRECT_THINK}<answer>{text}</answer>",
                     "label": label, "split": split} for text, label in [(good, 1)] + [(b, 0) for b in bad]]
    save_dataset(sft_rows, out / "general_sft_data", {"model": base})
    save_dataset(rm_rows, out / "hh_rm_data", {"model": base})
    rm_cfg = RewardModelTrainConfig(base_model=base, samples=str(out / "hh_rm_data"), output_dir=str(out / "hh_rm"),
                                    kind="orm", epochs=cfg.r1.hh_rm_epochs, lr=cfg.sft.lr,
                                    batch_size=cfg.sft.micro_batch_size)
    train_reward_model(rm_cfg, log=lambda *_: None)
    rm_eval = evaluate_reward_model(out / "hh_rm", "orm", out / "hh_rm_data")
    return {"output": str(out / "hh_rm"), "sft_rows": len(sft_rows), "rm_rows": len(rm_rows),
            "hh_rm_auroc": rm_eval["auroc"]}


def rejection_data(cfg, out, state, start_workers, run_sft, base) -> dict:
    policy = state["stages"]["reasoning_rl"]["output"]
    workers = start_workers(_with(cfg, model__path=policy), with_learner=False)
    problems = load_splits(cfg.data)[0][:cfg.r1.rejection_prompts]
    try:
        rows = [sft_row(cfg, p, g, i, "rejection_sampling") for p, g in zip(problems, sample_and_grade(workers, problems))
                for i in accepted_completions(g, cfg.rejection.require)]
    finally:
        workers.shutdown()
    general = [{"messages": r["messages"], "question": r["question"], "source": "general"}
               for r in datasets.load_from_disk(str(out / "general_sft_data"))]
    mixed = [{"messages": r["messages"], "question": r["question"], "source": r["source"]} for r in rows] + general
    save_dataset(mixed, out / "rejection_data", {"policy": policy})
    return {"output": str(out / "rejection_data"), "reasoning_rows": len(rows), "general_rows": len(general)}


def sft(cfg, out, state, start_workers, run_sft, base) -> dict:
    return _sft_stage(cfg, out, base, out / "rejection_data", "sft", run_sft, start_workers)


def all_scenario_rl(cfg, out, state, start_workers, run_sft, base) -> dict:
    hh_rm = RewardModelConfig("helpfulness", state["stages"]["general_data"]["output"], "orm", weight=1.0,
                              applies_to="general", num_cpus=cfg.reward.num_cpus)
    rl_cfg = _with(cfg, model__path=state["stages"]["sft"]["output"], num_steps=cfg.r1.all_scenario_rl_steps,
                   output_dir=str(out / "all_scenario_rl"), eval_before=False,
                   data__general_prompts=cfg.r1.general_prompts,
                   reward=dataclasses.replace(cfg.reward, functions=_rule_rewards(cfg, "reasoning"), models=(hh_rm,)))
    return _grpo_stage(rl_cfg, start_workers)


STAGE_FUNCTIONS = {f.__name__: f for f in (cold_start_data, cold_start_sft, reasoning_rl, general_data,
                                            rejection_data, sft, all_scenario_rl)}
