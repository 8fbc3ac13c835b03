"""STaR (Zelikman et al. 2022): sample rationales, keep the correct ones; for problems none solved,
sample again with the answer as a hint and keep the rationales that now reach it (stored with the
original question); fine-tune; evaluate; repeat."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Protocol

from rl_system.config import SFTConfig, TrainConfig
from rl_system.data import Problem, load_splits
from rl_system.data.sources import DatasetError, save_dataset
from rl_system.pipeline import collect
from rl_system.pipeline.collect import sample_and_grade
from rl_system.pipeline.r1_zero import evaluate
from rl_system.pipeline.rejection import accepted_completions, check_requirements, sft_row


class Workers(collect.Workers, Protocol):
    def evaluate(self, problems: list[Problem], max_new_tokens: int) -> list[dict]: ...
    def shutdown(self) -> None: ...


def collect_rationales(cfg: TrainConfig, workers: Workers, problems: list[Problem]) -> tuple[list[dict], int]:
    """SFT rows of sampled answers passing rejection.require; for problems with none, answers sampled
    with the answer as a hint that then pass, stored under the original question. Also returns how
    many problems needed the hint."""
    require, rows, solved = cfg.rejection.require, [], set()
    for problem, group in zip(problems, sample_and_grade(workers, problems)):
        kept = accepted_completions(group, require)
        solved.update([problem.question] if kept else [])
        rows += [sft_row(cfg, problem, group, i, "star_rationale") for i in kept]
    unsolved = [p for p in problems if p.question not in solved]
    template = cfg.star.hint_template
    hinted = [p.with_question(template.format(question=p.question, answer=p.answer)) for p in unsolved]
    for problem, group in zip(unsolved, sample_and_grade(workers, hinted)):
        rows += [sft_row(cfg, problem, group, i, "star_rationalization") for i in accepted_completions(group, require)]
    return rows, len(unsolved)


def star(cfg: TrainConfig, start_workers: Callable[[TrainConfig], Workers], run_sft: Callable[[SFTConfig], dict],
         log=print) -> list[dict]:
    check_requirements(cfg)
    sc = cfg.star
    train_set, eval_set = load_splits(cfg.data)
    problems = train_set[:sc.num_prompts]
    out = Path(sc.output_dir).resolve()  # actors and Ray Train workers read these paths
    current, results = cfg.model.path, []
    for iteration in range(sc.iterations + 1):
        workers = start_workers(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, path=current)))
        try:
            results.append({"iteration": iteration, "model": current, **evaluate(workers, eval_set, cfg)})
            log(f"STaR iteration {iteration}: held-out accuracy {results[-1]['accuracy']:.1%}")
            if iteration == sc.iterations:
                break
            rows, unsolved = collect_rationales(cfg, workers, problems)
        finally:
            workers.shutdown()
        rationalized = sum(r["source"] == "star_rationalization" for r in rows)
        results[-1].update(kept=len(rows) - rationalized, rationalized=rationalized, unsolved=unsolved)
        if not rows:
            raise DatasetError(f"STaR iteration {iteration + 1}: no rationale passed "
                               f"rejection.require={cfg.rejection.require}; "
                               "nothing to fine-tune on")
        data = save_dataset(rows, out / f"iter{iteration + 1}" / "data", {"iteration": iteration + 1, "model": current})
        sft_cfg = dataclasses.replace(cfg.sft, base_model=cfg.model.path if sc.from_base else current,
                                      data=str(data), output_dir=str(out / f"iter{iteration + 1}" / "model"))
        run_sft(sft_cfg)
        current = sft_cfg.output_dir
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results
