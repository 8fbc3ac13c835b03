"""The driver loop in one process (rl_system.local.LocalWorkers, no Ray): the tiny model trains,
every group is accounted for, and the checkpoint holds what a resume needs."""
import itertools
import json
import math

import pytest

from rl_system.config import load_config
from rl_system.data import PromptSampler, TaskMixtureSampler, load_splits
from rl_system.local import LocalWorkers
from rl_system.pipeline import r1_zero
from rl_system.rewards.scoring import RewardFailureError


def local_config(tiny_model_dir, tmp_path, *overrides):
    return load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", f"output_dir={tmp_path}", "num_steps=2", "prompts_per_step=2",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.num_ranks=1", "learner.micro_batch_size=4",
        "learner.lr=1e-3", "eval_before=false", "data.num_eval=4", "eval_max_new_tokens=8",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
        *overrides,
    ])


def logged(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_two_grpo_steps_in_one_process(tiny_model_dir, tmp_path):
    cfg = local_config(tiny_model_dir, tmp_path)
    workers = LocalWorkers(cfg)
    try:
        before = workers.learner.parameter_checksum()
        results = r1_zero.train(cfg, workers)
        after = workers.learner.parameter_checksum()
    finally:
        workers.shutdown()
    assert after != before and workers.policy_version == 2
    stats = workers.buffer_stats()
    assert stats["added"] == stats["trained"] == 4 and stats["in_flight"] == stats["size"] == 0
    lines = logged(tmp_path)
    assert [m["step"] for m in lines] == [1, 2] and all(math.isfinite(m["loss"]) for m in lines)
    assert results["after"]["num_problems"] == 4
    checkpoint = tmp_path / "checkpoint"
    assert {"model.safetensors", "trainer_state.json", "rollout_rng.safetensors", "deepspeed"} <= {
        p.name for p in checkpoint.iterdir()}


def test_colocated_steps_release_the_rollout_copy_and_refill_it_with_each_version(tiny_model_dir, tmp_path):
    cfg = local_config(tiny_model_dir, tmp_path, "cluster.colocate=true", "rollout.num_workers=1", "eval_after=false")
    workers = LocalWorkers(cfg)
    try:
        r1_zero.train(cfg, workers)
        learner = dict(workers.learner._named_weights())
        rollout = dict(workers.sampler.model.named_parameters())
        assert all(rollout[name].equal(tensor.to(rollout[name].dtype)) for name, tensor in learner.items())
    finally:
        workers.shutdown()
    assert workers.policy_version == 2
    for m in logged(tmp_path):
        assert m["memory/rollout_released_gib"] == 0 < m["memory/rollout_generate_gib"]
        assert m["memory/rollout_restored_gib"] > 0


def test_a_task_mixture_logs_and_evaluates_each_task(tiny_model_dir, tmp_path):
    """data.tasks: each step logs each drawn task's metrics, the held-out table has each task's accuracy,
    and the checkpoint keeps the curriculum's state."""
    cfg = local_config(tiny_model_dir, tmp_path, "data.num_train=20", "data.tasks=[{name: easy, task_args: "
                       "{min_terms: 2, max_terms: 2, max_digits: 1}}, {name: long, task_args: {min_terms: 2, "
                       "max_digits: 1}, levels: [{max_terms: 3}, {max_terms: 4}]}]")
    drawn = TaskMixtureSampler(cfg.data, load_splits(cfg.data)[0], cfg.seed).next_batch(4)
    workers = LocalWorkers(cfg)
    try:
        results = r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()
    for m, batch in zip(logged(tmp_path), (drawn[:2], drawn[2:])):
        for name in ("easy", "long"):
            assert m.get(f"task/{name}/groups", 0) == sum(p.task == name for p in batch)
        assert m["task/long/level"] == 0
    assert {name: t["num_problems"] for name, t in results["after"]["tasks"].items()} == {"easy": 4, "long": 4}
    state = json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())
    steps_with_long = sum(any(p.task == "long" for p in batch) for batch in (drawn[:2], drawn[2:]))
    assert state["curriculum"] == {"levels": {"long": 0}, "recent": {"long": [0.0] * steps_with_long}}


def test_a_problem_drawn_twice_in_one_batch_trains_as_two_groups(tiny_model_dir, tmp_path):
    """3 train problems, 2 prompts a step: step 2 draws the last problem of epoch 0 and the first of
    epoch 1, the same one. Both groups train (they were keyed (problem, version): one was dropped)."""
    cfg = local_config(tiny_model_dir, tmp_path, "data.num_train=3", "eval_after=false")
    second_batch = PromptSampler(load_splits(cfg.data)[0], cfg.seed, cursor=2).next_batch(2)
    assert second_batch[0].problem_id == second_batch[1].problem_id
    workers = LocalWorkers(cfg)
    try:
        r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()
    stats = workers.buffer_stats()
    assert stats["added"] == stats["trained"] == 4 and stats["dropped_duplicate"] == 0


def test_a_step_without_groups_to_train_is_skipped_and_counted(tiny_model_dir, tmp_path):
    """The buffer hands no group at step 2 (all dropped): no update, no new version, the run goes on."""
    cfg = local_config(tiny_model_dir, tmp_path, "num_steps=3", "eval_after=false")
    workers = LocalWorkers(cfg)
    sample, calls = workers.buffer_sample, itertools.count(1)
    workers.buffer_sample = lambda n, version: ([], []) if next(calls) == 2 else sample(n, version)
    try:
        r1_zero.train(cfg, workers)
        steps = workers.learner.engine.global_steps
        assert workers.learner.train([]) == {"sequences": 0}  # an empty batch: no optimizer step either
        assert workers.learner.engine.global_steps == steps and workers.learner.version == 2
    finally:
        workers.shutdown()
    assert steps == 2 and workers.policy_version == 2
    lines = logged(tmp_path)
    assert [m["learner/skipped_steps"] for m in lines] == [0, 1, 1]
    assert ["loss" in m for m in lines] == [True, False, True]
    stats = workers.buffer_stats()
    assert stats["added"] == 6 and stats["trained"] == 4 and stats["size"] == 2  # step 3 trained step 2's groups


def test_a_reward_that_always_fails_stops_the_run_with_one_line(tiny_model_dir, tmp_path):
    """Every call of the reward raises: scored reward.failure_score, counted; after
    reward.max_failing_steps such steps the run stops, before training on the second."""
    cfg = local_config(tiny_model_dir, tmp_path, "num_steps=5", "eval_after=false", "reward.max_failing_steps=2",
                       "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:raises'}]")
    workers = LocalWorkers(cfg)
    try:
        with pytest.raises(RewardFailureError) as stopped:
            r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()
    assert str(stopped.value) == (
        "reward 'tests.reward_fixtures:raises' failed on 100% of 8 completions in each of the last 2 steps "
        "(last error: RuntimeError: grader crashed): fix it, or raise reward.max_failure_fraction (0.5) or "
        "reward.max_failing_steps (2)")
    assert [m["reward_failures"] for m in logged(tmp_path)] == [2] and workers.policy_version == 1


def test_chat_data_generates_from_its_own_chat_and_is_scored_in_the_peers_conventions(tiny_model_dir, tmp_path):
    """A veRL parquet (chat prompts with their own system message) in one process: the rollout's prompt
    is the row's chat through the template once, and a veRL compute_score and a TRL reward (reading chat
    completions) score the same groups."""
    import datasets

    from rl_system.data import R1_SYSTEM_PROMPT
    from rl_system.models import load_tokenizer
    from tests.test_peer_formats import VERL_SYSTEM, verl_rows

    path = tmp_path / "gsm8k.parquet"
    datasets.Dataset.from_list(verl_rows(8)).to_parquet(str(path))
    names = ["tests.reward_fixtures:compute_score", "tests.reward_fixtures:trl_format_reward"]
    cfg = local_config(tiny_model_dir, tmp_path / "run", "data.source=file", f"data.path={path}",
                       "data.prompt_column=prompt", "data.answer_column=reward_model.ground_truth", "data.num_eval=2",
                       f"reward.functions=[{{name: '{names[0]}'}}, {{name: '{names[1]}'}}]")
    problems = load_splits(cfg.data)[0][:2]
    workers = LocalWorkers(cfg)
    try:
        scored, _ = workers.score(workers.generate(problems))
    finally:
        workers.shutdown()
    prompt = load_tokenizer(tiny_model_dir).decode(scored[0].prompt_ids)
    assert prompt.count(VERL_SYSTEM) == 1 and R1_SYSTEM_PROMPT not in prompt and problems[0].question in prompt
    for group in scored:
        assert group.reward_errors == {} and set(group.rewards) == set(names)
        # the tiny random model answers nothing right; compute_score still saw data_source and extra_info
        assert group.rewards[names[0]] == [0.5] * len(group.completions)
