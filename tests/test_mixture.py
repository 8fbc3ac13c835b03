"""data.tasks without Ray: a weighted mixture of tasks, per-task splits, per-task metrics and the
curriculum, each checked against numbers worked out by hand."""
import json
from collections import Counter

import pytest

from rl_system.config import ConfigError, CurriculumConfig, DataConfig, TaskConfig, load_config
from rl_system.data import Problem, PromptSampler, TaskMixtureSampler, load_splits
from rl_system.data.mixture import TaskSchedule, task_quotas
from rl_system.pipeline import r1_zero


def labelled(tasks: dict[str, int], levels: int = 1, start: int = 0) -> list[Problem]:
    """`size` problems of each task (at each level), ids from `start` on, running over all of them."""
    problems = []
    for name, size in tasks.items():
        for level in range(levels):
            problems += [Problem(start + len(problems) + i, f"{name}/{level}/{i}", "0", task=name, level=level)
                         for i in range(size)]
    return problems


def summary(task: str, correct: list[float], level: int = 0, formatted: list[float] | None = None) -> dict:
    """The fields of a group_summary that per-task metrics and the curriculum read."""
    return {"task": task, "level": level, "correct": correct, "formatted": formatted or [1.0] * len(correct),
            "total_reward": sum(correct) / len(correct), "mean_length": 10.0}


MIX = DataConfig(tasks=(TaskConfig("a", weight=3.0), TaskConfig("b", weight=1.0), TaskConfig("c", weight=0.5),
                        TaskConfig("eval_only", weight=0.0)))


def test_mixture_draws_follow_the_weights_and_each_task_walks_its_epochs():
    train = labelled({"a": 50, "b": 7, "c": 300})
    sampler = TaskMixtureSampler(MIX, train, seed=5)
    drawn = [sampler.next_batch(size) for size in (3, 64, 1000, 7, 5000, 926)]  # 7000 draws in uneven batches
    counts = Counter(p.task for batch in drawn for p in batch)
    shares = {name: counts[name] / 7000 for name in counts}
    for name, weight in (("a", 3.0), ("b", 1.0), ("c", 0.5)):
        assert shares[name] == pytest.approx(weight / 4.5, abs=0.002)  # exact per 1000-draw block, up to rounding
    assert "eval_only" not in counts  # weight 0: held out only
    # Each task goes through all of its problems once per epoch, in its own seeded order.
    b_draws = [p.problem_id for batch in drawn for p in batch if p.task == "b"]
    assert all(sorted(b_draws[i:i + 7]) == list(range(50, 57)) for i in range(0, len(b_draws) - 6, 7))
    again = TaskMixtureSampler(MIX, train, seed=5).next_batch(200)
    assert [p.problem_id for p in again] == [p.problem_id for batch in drawn for p in batch][:200]
    other_seed = TaskMixtureSampler(MIX, train, seed=6).next_batch(200)
    assert [p.problem_id for p in other_seed] != [p.problem_id for p in again]


def test_mixture_resumes_from_its_cursor_and_one_task_draws_as_prompt_sampler():
    train = labelled({"a": 50, "b": 7, "c": 300})
    sampler = TaskMixtureSampler(MIX, train, seed=2)
    sampler.next_batch(1234)
    assert [p.problem_id for p in sampler.next_batch(100)] == [
        p.problem_id for p in TaskMixtureSampler(MIX, train, seed=2, cursor=1234).next_batch(100)]
    plain = labelled({"": 37})
    one_task = TaskMixtureSampler(DataConfig(), plain, seed=9, cursor=11)
    assert [p.problem_id for p in one_task.next_batch(500)] == [
        p.problem_id for p in PromptSampler(plain, seed=9, cursor=11).next_batch(500)]


def test_task_schedule_gives_every_task_its_quota_in_each_block():
    assert task_quotas([3.0, 1.0, 0.5, 0.0]) == [667, 222, 111, 0]
    assert task_quotas([1.0, 1e-6]) == [1000, 1]  # a tiny positive weight is still drawn
    schedule = TaskSchedule([2, 1], seed=0)
    block = [schedule.at(position) for position in range(6)]  # two blocks of three
    assert sorted(block[:3]) == [(0, 0), (0, 1), (1, 0)] and sorted(block[3:]) == [(0, 2), (0, 3), (1, 1)]


def test_per_task_splits_are_disjoint_and_labelled(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) for i in range(30)))
    easy = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    cfg = DataConfig(seed=1, num_train=40, num_eval=10, tasks=(
        TaskConfig("easy", task_args=easy),
        # Its questions include easy's (2 terms of 1 digit): easy's held-out ones must not be trained on here.
        TaskConfig("mixed", task_args={**easy, "max_digits": 2}, num_eval=20, weight=2.0),
        TaskConfig("file", source="file", path=str(path), prompt_column="q", answer_column="a", num_eval=5),
        TaskConfig("transfer", task="basic_arithmetic", task_args={**easy, "operators": ["+"]}, weight=0.0)))
    train, held_out = load_splits(cfg)
    by_task = {split: Counter(p.task for p in problems) for split, problems in (("train", train), ("held", held_out))}
    assert by_task["held"] == {"easy": 10, "mixed": 20, "file": 5, "transfer": 10}
    assert by_task["train"] == {"easy": 40, "mixed": 40, "file": 25}  # nothing trains on a weight-0 task
    held_questions = {p.question for p in held_out}
    assert not held_questions & {p.question for p in train}
    assert len({p.problem_id for p in train}) == len(train) and len({p.problem_id for p in held_out}) == len(held_out)
    assert {p.columns["task"] for p in held_out if p.task == "transfer"} == {"basic_arithmetic"}
    assert [p.task for p in train[:6]] == ["easy", "mixed", "file"] * 2  # the first n come from every task
    assert [p.task for p in held_out[:4]] == ["easy", "mixed", "file", "transfer"]
    again = load_splits(cfg)
    assert [(p.task, p.question) for p in again[0] + again[1]] == [(p.task, p.question) for p in train + held_out]
    # The first task of a mixture splits as the same task would alone.
    alone = load_splits(DataConfig(seed=1, num_train=40, num_eval=10, task_args=easy))[1]
    assert [p.question for p in held_out if p.task == "easy"] == [p.question for p in alone]


def test_curriculum_levels_split_and_the_held_out_is_the_hardest():
    cfg = DataConfig(num_train=30, num_eval=8, tasks=(TaskConfig(
        "sums", task_args={"min_terms": 2, "min_digits": 1, "max_digits": 1},
        levels=({"max_terms": 2}, {"max_terms": 4})),))
    train, held_out = load_splits(cfg)
    assert Counter(p.level for p in train) == {0: 30, 1: 30}
    assert {p.level for p in held_out} == {1} and len(held_out) == 8
    assert all(p.question.count("+") + p.question.count("-") == 1 for p in train if p.level == 0)


def test_curriculum_moves_up_on_accuracy_and_resumes_at_its_level():
    cfg = DataConfig(curriculum=CurriculumConfig(threshold=0.6, window=2), tasks=(
        TaskConfig("sums", levels=({}, {}, {})), TaskConfig("flat")))
    train = labelled({"sums": 20}, levels=3) + labelled({"flat": 20}, start=60)
    sampler = TaskMixtureSampler(cfg, train, seed=0)
    assert {p.level for p in sampler.next_batch(40) if p.task == "sums"} == {0}
    assert sampler.observe([summary("sums", [1.0, 1.0]), summary("flat", [0.0, 0.0])]) == {"task/sums/level": 0}
    assert sampler.observe([summary("sums", [0.0, 0.0])])["task/sums/level"] == 0  # mean of the window 0.5 < 0.6
    sampler.observe([summary("flat", [1.0])])  # no group of sums: its window keeps what it had
    assert sampler.observe([summary("sums", [1.0, 0.0, 1.0, 1.0])])["task/sums/level"] == 0  # (0 + 0.75) / 2
    assert sampler.observe([summary("sums", [1.0, 1.0])])["task/sums/level"] == 1  # (0.75 + 1) / 2 >= 0.6
    # Groups drawn at the old level (generated ahead, in async mode) do not count for the new one.
    sampler.observe([summary("sums", [1.0, 1.0], level=0)] * 3)
    assert sampler.curriculum.state() == {"levels": {"sums": 1}, "recent": {"sums": []}}
    sampler.observe([summary("sums", [1.0, 1.0], level=1)])
    assert {p.level for p in sampler.next_batch(40) if p.task == "sums"} == {1}

    # Resume: the cursor plus the checkpointed state (JSON) draw the same problems at the same levels.
    state = json.loads(json.dumps(sampler.curriculum.state()))
    resumed = TaskMixtureSampler(cfg, train, seed=0, cursor=sampler.cursor, curriculum_state=state)
    for s in (sampler, resumed):
        s.observe([summary("sums", [1.0, 1.0], level=1)])  # the second of its window: up to the last level
    assert sampler.curriculum.levels == resumed.curriculum.levels == {"sums": 2}
    assert [p.problem_id for p in sampler.next_batch(50)] == [p.problem_id for p in resumed.next_batch(50)]
    sampler.observe([summary("sums", [1.0, 1.0], level=2)] * 5)
    assert sampler.curriculum.levels == {"sums": 2}  # the last level is the last


def test_per_task_metrics_and_held_out_table():
    summaries = [summary("a", [1.0, 0.0, 1.0, 1.0]), summary("b", [0.0, 0.0, 0.0, 0.0], formatted=[1.0, 0, 0, 0]),
                 summary("a", [0.0, 0.0, 1.0, 1.0])]
    m = r1_zero.task_metrics(summaries)
    assert m == {"task/a/accuracy": 0.625, "task/a/format_rate": 1.0, "task/a/reward": 0.625, "task/a/groups": 2,
                 "task/b/accuracy": 0.0, "task/b/format_rate": 0.25, "task/b/reward": 0.0, "task/b/groups": 1}
    assert r1_zero.task_metrics([summary("", [1.0])]) == {}  # a one-task run has no per-task keys

    class Greedy:
        def evaluate(self, problems, max_new_tokens):
            return [summary("a", [1.0]), summary("a", [0.0]), summary("b", [1.0])]

    result = r1_zero.evaluate(Greedy(), [], load_config(None))
    assert result["accuracy"] == pytest.approx(2 / 3) and result["num_problems"] == 3
    assert result["tasks"]["a"]["accuracy"] == 0.5 and result["tasks"]["b"] == {
        "accuracy": 1.0, "format_rate": 1.0, "mean_length": 10.0, "num_problems": 1}
    table = r1_zero.results_table({"before": result, "after": result})
    assert "| a (2): greedy accuracy | 50.0% | 50.0% |" in table and "| b (1): strict format rate | 100.0% |" in table


@pytest.mark.parametrize("overrides, message", [
    (["data.tasks=[{name: a, wieght: 1}]"], "unknown config key 'data.tasks[0].wieght' (known here: answer_column,"),
    (["data.tasks=[{task: chain_sum}]"], "config section 'data.tasks[0]': "),
    (["data.tasks=[{name: a}, {name: b, weight: -1}]"],
     "config key 'data.tasks[1].weight': expected a number >= 0 (0: held out only), got -1.0"),
    (["data.tasks=[{name: a, weight: 0}]"], "config key 'data.tasks': expected at least one task with weight > 0"),
    (["data.tasks=[{name: a}, {name: a}]"], "config key 'data.tasks': expected distinct task names, got ['a', 'a']"),
    (["data.tasks=[{name: a/b}]"], "config key 'data.tasks[0].name': expected a name of letters, digits"),
    (["data.tasks=[{name: general}]"], "config key 'data.tasks[0].name'"),
    (["data.tasks=[{name: a, source: file}]"],
     "config key 'data.tasks[0].path': expected a file path when data.tasks[0].source is 'file', got ''"),
    (["data.tasks=[{name: a, source: file, path: x.jsonl, levels: [{}]}]"], "config key 'data.tasks[0].levels'"),
    (["data.tasks=[{name: a, levels: [3]}]"], "config key 'data.tasks[0].levels[0]': expected a mapping, got 3"),
    (["data.tasks=[{name: a, num_train: 0}]"], "config key 'data.tasks[0].num_train': expected a positive integer"),
    (["data.tasks=[{name: a}, {name: b, weight: 0, num_eval: 0}]"], "config key 'data.tasks[1].num_eval'"),
    (["data.curriculum.threshold=1.5"], "config key 'data.curriculum.threshold': expected an accuracy in (0, 1]"),
    (["data.curriculum.window=0"], "config key 'data.curriculum.window': expected a positive integer, got 0"),
])
def test_bad_task_config_is_one_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_mixture_config_loads():
    cfg = load_config("configs/r1_zero_mix.yaml")
    names = [t.name for t in cfg.data.task_specs()]
    assert names == ["chain_sum_easy", "chain_sum_3x2", "chain_sum_mixed", "basic_arithmetic"]
    assert all(t.num_eval == 64 for t in cfg.data.task_specs())
    assert cfg.data.tasks[1].task_args == {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2}
    # evaluate restricted to the target tasks, by name
    searched = load_config("configs/r1_zero_mix.yaml", ["search.tasks=[chain_sum_3x2, basic_arithmetic]"])
    assert searched.search.tasks == ("chain_sum_3x2", "basic_arithmetic")
    with pytest.raises(ConfigError, match="'search.tasks': expected names of data.tasks"):
        load_config("configs/r1_zero_mix.yaml", ["search.tasks=[chain_sum_hard]"])


def test_difficulty_filter_skips_what_all_or_none_solved_and_resumes():
    from rl_system.config import DifficultyFilterConfig
    from rl_system.data.difficulty import DifficultyFilter

    f = DifficultyFilter(DifficultyFilterConfig(enabled=True, window=2, retry_after=2))
    f.observe([{"problem_id": 1, "correct": [1.0] * 4}, {"problem_id": 2, "correct": [0.0] * 4},
               {"problem_id": 3, "correct": [1.0, 0.0, 0.0, 0.0]}, {"problem_id": 4, "correct": []}])
    assert (f.verdict(1), f.verdict(2), f.verdict(3), f.verdict(4), f.verdict(5)) == (
        "too_easy", "too_hard", None, None, None)  # a group without accuracy scores counts for nothing
    f.observe([{"problem_id": 1, "correct": [0.0] * 4}])
    assert f.verdict(1) is None  # (1 + 0) / 2: the last `window` groups only
    assert [f.admit(2) for _ in range(4)] == [False, False, True, False]  # let through after retry_after skips
    assert f.metrics() == {"filter/skipped_too_easy": 0, "filter/skipped_too_hard": 3, "filter/problems_seen": 3}
    resumed = DifficultyFilter(f.cfg, json.loads(json.dumps(f.state())))
    assert resumed.state() == f.state() and resumed.admit(2) == f.admit(2)


def test_the_sampler_draws_past_filtered_problems_and_resumes_exactly():
    cfg = load_config(None, ["data.difficulty_filter.enabled=true", "data.difficulty_filter.retry_after=3",
                             "data.tasks=[{name: a}, {name: b}]"]).data
    train = labelled({"a": 10, "b": 10})
    sampler = TaskMixtureSampler(cfg, train, seed=0)
    first = sampler.next_batch(20)  # one epoch of each task
    solved = {p.problem_id for p in first if p.task == "a"}
    metrics = sampler.observe([{"task": p.task, "level": 0, "problem_id": p.problem_id,
                                "correct": [1.0, 1.0] if p.task == "a" else [1.0, 0.0]} for p in first])
    assert metrics["filter/problems_seen"] == 20 and metrics["filter/skipped_too_easy"] == 0
    state = json.loads(json.dumps(sampler.filter_state()))
    resumed = TaskMixtureSampler(cfg, train, seed=0, cursor=sampler.cursor, filter_state=state)
    second = sampler.next_batch(20)
    assert [p.problem_id for p in second] == [p.problem_id for p in resumed.next_batch(20)]
    # Every problem of task a was solved by all its samples: each is skipped up to retry_after times
    # before it is let through, so a's draws move past its skipped problems; b is drawn as unfiltered.
    assert {p.problem_id for p in second if p.task == "a"} <= solved
    assert sampler.filter.skipped["too_easy"] > 0 and sampler.skipped_draws["a"] == sampler.filter.skipped["too_easy"]
    unfiltered = TaskMixtureSampler(DataConfig(tasks=cfg.tasks), train, seed=0, cursor=20)
    assert [p.problem_id for p in second if p.task == "b"] == [p.problem_id for p in unfiltered.next_batch(20)
                                                                if p.task == "b"]
