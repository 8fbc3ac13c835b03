"""`python -m rl_system evaluate`: every search method at every budget on the held-out split,
graded by the rule grader; accuracy, generated tokens and wall time per (method, budget).

Budgets: N sampled answers for maj / bon / wbon; N candidate steps per level for beam
(expansions per beam = min(search.beam_expansions, N), width = N // expansions); N simulations
for mcts (each one step plus one rollout). greedy runs once and is listed at budget 1. Wall time
covers the search only (generation and verifier calls), not the final grading.
"""
from __future__ import annotations

import time
from pathlib import Path

from rl_system.config import ConfigError, SearchConfig, TrainConfig
from rl_system.data import Problem, load_splits
from rl_system.metrics import mean
from rl_system.search.base import Policy, SearchResult, Verifier
from rl_system.search.beam import prm_beam_search
from rl_system.search.mcts import mcts
from rl_system.search.report import write_report
from rl_system.search.sampling import best_of_n, greedy, majority_vote, weighted_best_of_n


def beam_shape(budget: int, beam_expansions: int) -> tuple[int, int]:
    """(width, expansions per beam) whose product is at most the budget."""
    expansions = min(beam_expansions, budget)
    return budget // expansions, expansions


def run_method(method: str, budget: int, problems: list[Problem], policy: Policy, verifiers: dict[str, Verifier],
               cfg: SearchConfig) -> list[SearchResult]:
    verifier = verifiers.get(cfg.verifier_of(method))
    steps = dict(step_delimiter=cfg.step_delimiter, max_steps=cfg.max_steps, step_max_tokens=cfg.step_max_tokens,
                 max_new_tokens=cfg.max_new_tokens)
    if method == "greedy":
        return greedy(problems, policy, cfg.max_new_tokens)
    if method == "maj":
        return majority_vote(problems, policy, budget, cfg.max_new_tokens)
    if method == "bon":
        return best_of_n(problems, policy, verifier, budget, cfg.max_new_tokens)
    if method == "wbon":
        return weighted_best_of_n(problems, policy, verifier, budget, cfg.max_new_tokens)
    if method == "beam":
        width, expansions = beam_shape(budget, cfg.beam_expansions)
        return prm_beam_search(problems, policy, verifier, width, expansions, **steps)
    if method == "mcts":
        return mcts(problems, policy, verifier, budget, cfg.mcts_c, cfg.mcts_max_children, **steps)
    raise ValueError(f"unknown search method '{method}'")


def evaluate_methods(problems: list[Problem], policy: Policy, verifiers: dict[str, Verifier], grader: Verifier,
                     cfg: SearchConfig, log=print, clock=time.perf_counter) -> list[dict]:
    """One row per (method, budget). A method whose verifier is the rule grader is labelled an
    oracle: it sees the reference answer while searching, so its accuracy is not attainable."""
    rows = []
    for method in cfg.methods:
        for budget in (1,) if method == "greedy" else cfg.budgets:
            start = clock()
            results = run_method(method, budget, problems, policy, verifiers, cfg)
            wall_s = clock() - start
            right = [float(c >= 1.0) for c in grader.score(problems, [r.completion for r in results])]
            tokens = sum(r.tokens for r in results)
            verifier = cfg.verifier_of(method)
            rows.append({
                "method": method, "budget": budget,
                "verifier": f"{verifier} (oracle)" if verifier == "rule" else verifier or "-",
                "accuracy": mean(right), "generated_tokens": tokens,
                "tokens_per_problem": tokens / len(problems), "wall_s": wall_s, "num_problems": len(problems),
            })
            if any(p.task for p in problems):  # a data.tasks mixture
                rows[-1]["task_accuracy"] = {task: mean(r for r, p in zip(right, problems) if p.task == task)
                                             for task in dict.fromkeys(p.task for p in problems)}
            log(f"{method:6s} N={budget:<3d} accuracy {rows[-1]['accuracy']:6.1%}  "
                f"{rows[-1]['tokens_per_problem']:7.1f} tokens/problem  {wall_s:6.1f} s")
    return rows


def preflight(cfg: TrainConfig) -> None:
    """What evaluate needs beyond a run's usual checks, as one-line errors before any actor starts."""
    from rl_system.rewards.learned import check_reward_model_dir

    if "accuracy" not in [f.name for f in cfg.reward.functions]:
        raise ConfigError("config key 'reward.functions': evaluate grades answers with the 'accuracy' rule reward; "
                          "include {name: accuracy}")
    for kind, methods in cfg.search.reward_models().items():
        path = getattr(cfg.search, f"{kind}_path")
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"config key 'search.{kind}_path': no reward model at '{path}' ({', '.join(methods)} "
                              f"{'needs' if len(methods) == 1 else 'need'} one; train it with `python -m rl_system train-{kind}`)")
        check_reward_model_dir(path, kind, key=f"search.{kind}_path")


def search_problems(cfg: TrainConfig) -> list[Problem]:
    """search.split's problems, of search.tasks only when given, the first search.num_problems of them."""
    train, held_out = load_splits(cfg.data)
    problems = held_out if cfg.search.split == "held_out" else train
    if cfg.search.tasks:
        problems = [p for p in problems if p.task in cfg.search.tasks]
    return problems[:cfg.search.num_problems or None]


def run_evaluation(cfg: TrainConfig, policy: Policy, verifiers: dict[str, Verifier], grader: Verifier,
                   log=print) -> list[dict]:
    """The held-out problems (the first search.num_problems; with search.split=train, training problems
    instead), every method and budget, the report."""
    problems = search_problems(cfg)
    rows = evaluate_methods(problems, policy, verifiers, grader, cfg.search, log)
    split = "held-out" if cfg.search.split == "held_out" else "training"
    title = f"`{cfg.model.path}`, {len(problems)} {split} `{cfg.data.describe()}` problems"
    for path in write_report(rows, cfg.search.output_dir, title).values():
        log(f"wrote {path}")
    return rows
