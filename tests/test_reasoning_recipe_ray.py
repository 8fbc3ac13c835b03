"""Issue 30's recipe (configs/r1_cold_start.yaml) end to end on a tiny model and a local Ray cluster:
code-written traces -> cold-start SFT -> GRPO with the curriculum and the difficulty filter, stopping
at r1.last_stage; every stage's per-task held-out accuracy and the filter's state in the checkpoint."""
import json

import datasets
import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from actors.sft_trainer import run_sft  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.pipeline.r1 import run_r1  # noqa: E402
from rl_system.rewards.rules import accuracy_reward, format_reward  # noqa: E402

pytestmark = pytest.mark.integration


def test_cold_start_recipe_runs_to_its_last_stage(tiny_model_dir, tmp_path):
    cfg = resolve_paths(load_config("configs/r1_cold_start.yaml", [
        f"model.path={tiny_model_dir}", "rollout.group_size=2", "rollout.max_new_tokens=6", "prompts_per_step=2",
        "learner.micro_batch_size=1", "data.num_eval=2", "data.num_train=20", "eval_max_new_tokens=6",
        "cluster.include_dashboard=false", "cluster.num_cpus=8", f"r1.output_dir={tmp_path / 'r1'}",
        "r1.cold_start_prompts=8", "r1.reasoning_rl_steps=2", "sft.micro_batch_size=2", "sft.epochs=1",
        "sft.autocast_dtype=float32", "data.difficulty_filter.high=0.5",
    ]))
    connect(cfg)
    try:
        state = run_r1(cfg, lambda c, with_learner=False: RayWorkers(c, with_learner=with_learner), run_sft,
                       log=lambda *_: None)
    finally:
        ray.shutdown()

    assert list(state["stages"]) == ["cold_start_data", "cold_start_sft", "reasoning_rl"]
    traces = list(datasets.load_from_disk(state["stages"]["cold_start_data"]["output"]))
    assert len(traces) == 8 and {r["task"] for r in traces} == {"chain_sum_3x2", "basic_arithmetic"}
    completions = [r["messages"][-1]["content"] for r in traces]
    assert format_reward(None, completions) == [1.0] * 8
    assert accuracy_reward(None, completions, [r["answer"] for r in traces]) == [1.0] * 8
    for name in ("cold_start_sft", "reasoning_rl"):  # the held-out-only tasks are evaluated too
        assert set(state["stages"][name]["task_accuracy"]) == {"chain_sum_3x2", "basic_arithmetic",
                                                               "chain_sum_easy", "chain_sum_4x2"}
    rl = tmp_path / "r1" / "reasoning_rl"
    metrics = [json.loads(line) for line in (rl / "metrics.jsonl").open()]
    assert {"task/chain_sum_3x2/level", "zero_std_groups", "filter/skipped_too_easy",
            "filter/skipped_too_hard"} <= set(metrics[-1])
    saved = json.loads((rl / "checkpoint" / "trainer_state.json").read_text())["difficulty_filter"]
    assert saved["pass_rates"] and "skipped_draws" in saved
