"""Training on a weighted mixture of tasks (data.tasks): which task each draw of the run comes from,
a curriculum that moves a task to harder settings as its accuracy rises, and the grouping of
per-group results by task that per-task metrics are made of."""
from __future__ import annotations

import random

from rl_system.config import CurriculumConfig, DataConfig
from rl_system.data.difficulty import DifficultyFilter
from rl_system.data.problem import Problem
from rl_system.data.sources import PromptSampler
from rl_system.metrics import mean

BLOCK_DRAWS = 1000  # draws per block of the task schedule: each task's share is its weight's to within 1/2000


def task_quotas(weights: list[float], block: int = BLOCK_DRAWS) -> list[int]:
    """Draws of each task in one block: its share of the block, rounded, at least one for a positive weight."""
    total = sum(weights)
    return [max(1, round(block * w / total)) if w > 0 else 0 for w in weights]


class TaskSchedule:
    """Which task each position of the run draws from, and how many draws that task had before it.

    Positions come in blocks of sum(quotas), each holding every task its quota of times in a seeded
    order: the weights hold in every block, not only on average, and position -> task is a pure
    function of the position (one O(block) shuffle per block), so resuming from a cursor is exact.
    """

    def __init__(self, quotas: list[int], seed: int):
        self.quotas, self.seed, self.length = quotas, seed, sum(quotas)
        self._block: tuple[int, list[int], list[int]] = (-1, [], [])  # block, task of each slot, its draws before

    def at(self, position: int) -> tuple[int, int]:
        """(task index, that task's own draw number) of a position of the run."""
        block, slot = divmod(position, self.length)
        if self._block[0] != block:
            tasks = [t for t, quota in enumerate(self.quotas) for _ in range(quota)]
            random.Random(f"task-schedule/{self.seed}/{block}").shuffle(tasks)
            seen, before = [0] * len(self.quotas), []
            for t in tasks:
                before.append(seen[t])
                seen[t] += 1
            self._block = (block, tasks, before)
        _, tasks, before = self._block
        return tasks[slot], block * self.quotas[tasks[slot]] + before[slot]


class Curriculum:
    """The current level of each task that has levels, and its accuracy in recent steps at that level.

    A task moves up once its accuracy, averaged over the last `window` steps that trained on it at its
    current level, reaches `threshold`; its record then starts afresh. Groups drawn at an earlier level
    (async batches generated before the move) do not count for the new one.
    """

    def __init__(self, cfg: CurriculumConfig, num_levels: dict[str, int], state: dict | None = None):
        self.cfg = cfg
        self.num_levels = {name: n for name, n in num_levels.items() if n > 1}
        state = state or {"levels": {}, "recent": {}}
        self.levels = {name: min(state["levels"].get(name, 0), n - 1) for name, n in self.num_levels.items()}
        self.recent = {name: list(state["recent"].get(name, [])) for name in self.num_levels}

    def observe(self, summaries: list[dict]) -> list[tuple[str, int]]:
        """One step's scored groups (group_summary dicts); returns the (task, new level) of each promotion."""
        by_task, promoted = group_by_task(summaries), []
        for name, level in self.levels.items():
            at_level = [s for s in by_task.get(name, []) if s["level"] == level]
            if not at_level or level == self.num_levels[name] - 1:
                continue
            accuracy = mean(c for s in at_level for c in s["correct"])
            self.recent[name] = (self.recent[name] + [accuracy])[-self.cfg.window:]
            if len(self.recent[name]) == self.cfg.window and mean(self.recent[name]) >= self.cfg.threshold:
                self.levels[name], self.recent[name] = level + 1, []
                promoted.append((name, level + 1))
        return promoted

    def state(self) -> dict:
        """What a checkpoint keeps (JSON): levels and the recent accuracies at them."""
        return {"levels": dict(self.levels), "recent": {name: list(v) for name, v in self.recent.items()}}


class TaskMixtureSampler:
    """The training prompts of a run. Position k of the run (its cursor) draws from the task the
    TaskSchedule names, from that task's pool at its current curriculum level, walked in seeded epochs
    (PromptSampler) by the task's own draw number. With one task this is PromptSampler(train, seed).
    With data.difficulty_filter on, a drawn problem the filter skips gives way to the task's next draw;
    the draws each task skipped so far shift its later ones. The cursor, the curriculum's state and the
    filter's (skips included) are all a resume needs."""

    def __init__(self, cfg: DataConfig, train: list[Problem], seed: int, cursor: int = 0,
                 curriculum_state: dict | None = None, filter_state: dict | None = None):
        pools: dict[tuple[str, int], list[Problem]] = {}
        for problem in train:
            pools.setdefault((problem.task, problem.level), []).append(problem)
        self.names = list(dict.fromkeys(task for task, _ in pools))
        weights = {t.name: t.weight for t in cfg.task_specs()}
        if cfg.tasks and "general" in self.names:  # data.general_prompts: drawn as often as they would be in one pool
            general = len(pools[("general", 0)])
            weights["general"] = sum(weights.values()) * general / (len(train) - general)
        self.pools = {key: PromptSampler(problems, seed + 1000 * i) for i, (key, problems) in enumerate(pools.items())}
        self.schedule = TaskSchedule(task_quotas([weights[name] for name in self.names]), seed)
        self.curriculum = Curriculum(cfg.curriculum, {t.name: len(t.levels) for t in cfg.tasks if t.weight > 0},
                                     curriculum_state)
        self.cursor = cursor
        filter_state = filter_state or {}
        self.filter = DifficultyFilter(cfg.difficulty_filter, filter_state) if cfg.difficulty_filter.enabled else None
        self.skipped_draws: dict[str, int] = dict(filter_state.get("skipped_draws", {}))
        self.promotions: list[tuple[str, int]] = []  # the last observe's

    def next_batch(self, n: int) -> list[Problem]:
        batch = []
        for position in range(self.cursor, self.cursor + n):
            task, draw = self.schedule.at(position)
            batch.append(self._draw(self.names[task], draw))
        self.cursor += n
        return batch

    def _draw(self, name: str, draw: int) -> Problem:
        pool = self.pools[name, self.curriculum.levels.get(name, 0)]
        for _ in range(len(pool.problems)):  # one pass at most: the filter lets a problem through in the end anyway
            problem = pool.problem_at(draw + self.skipped_draws.get(name, 0))
            if self.filter is None or self.filter.admit(problem.problem_id):
                break
            self.skipped_draws[name] = self.skipped_draws.get(name, 0) + 1
        return problem

    def observe(self, summaries: list[dict]) -> dict[str, float]:
        """A step's scored groups move the curriculum and the filter's histories; returns each leveled
        task's level as task/<name>/level and the filter's counts (filter/*). `promotions` lists the moves."""
        self.promotions = self.curriculum.observe(summaries)
        metrics = {f"task/{name}/level": level for name, level in self.curriculum.levels.items()}
        if self.filter is not None:
            self.filter.observe(summaries)
            metrics.update(self.filter.metrics())
        return metrics

    def filter_state(self) -> dict | None:
        """What a checkpoint keeps of the difficulty filter (JSON); None when it is off."""
        return None if self.filter is None else {**self.filter.state(), "skipped_draws": dict(self.skipped_draws)}


def group_by_task(summaries: list[dict]) -> dict[str, list[dict]]:
    """Group summaries by the task their problem came from, in first-seen order; {} in a one-task run."""
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        if s["task"]:
            groups.setdefault(s["task"], []).append(s)
    return groups

