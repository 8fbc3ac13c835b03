"""The R1 recipe's seven stages end to end on tiny models and a local Ray cluster; a stage that
crashes keeps every finished stage, and --resume restarts at the first unfinished one."""
import json

import datasets
import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from actors.sft_trainer import run_sft  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.pipeline.r1 import STAGES, run_r1  # noqa: E402

pytestmark = pytest.mark.integration


def start_workers(cfg, with_learner=False):
    return RayWorkers(cfg, with_learner=with_learner)


def test_r1_pipeline_stages_crash_and_resume(tiny_model_dir, tmp_path):
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "rollout.group_size=2", "rollout.max_new_tokens=6", "rollout.num_workers=2",
        "prompts_per_step=2", "learner.micro_batch_size=1", "data.num_eval=4", "eval_max_new_tokens=6",
        "cluster.include_dashboard=false", "cluster.num_cpus=8", "checkpoint_every=0",
        "reward.functions=[{name: accuracy}, {name: format}, {name: 'tests.reward_fixtures:accepts_hinted'}]",
        "rejection.require={'tests.reward_fixtures:accepts_hinted': 1.0}",
        f"r1.output_dir={tmp_path / 'r1'}", "r1.cold_start_prompts=4", "r1.reasoning_rl_steps=1",
        "r1.general_prompts=8", "r1.rejection_prompts=4", "r1.all_scenario_rl_steps=1", "r1.hh_rm_epochs=1",
        "sft.micro_batch_size=2", "sft.num_workers=2", "sft.epochs=1", "sft.autocast_dtype=float32",
    ]))
    connect(cfg)
    sft_calls = []

    def crashing_second_sft(sft_cfg):
        sft_calls.append(sft_cfg.output_dir)
        if len(sft_calls) == 2:
            raise RuntimeError("node lost")
        return run_sft(sft_cfg)

    try:
        with pytest.raises(RuntimeError, match="node lost"):
            run_r1(cfg, start_workers, crashing_second_sft, log=lambda *_: None)
        state = json.loads((tmp_path / "r1" / "state.json").read_text())
        assert list(state["stages"]) == list(STAGES[:5])  # everything before the crashed sft stage
        log = []
        state = run_r1(cfg, start_workers, run_sft, resume=True, log=log.append)
    finally:
        ray.shutdown()

    assert [line.split(":")[0] for line in log if "skipped" in line] == list(STAGES[:5])
    assert list(state["stages"]) == list(STAGES)
    stages = state["stages"]
    assert stages["cold_start_data"]["rows"] >= 4 and stages["cold_start_data"]["hinted_prompts"] == 4
    for name in ("cold_start_sft", "reasoning_rl", "sft", "all_scenario_rl"):
        assert 0.0 <= stages[name]["accuracy"] <= 1.0 and stages[name]["seconds"] > 0
    assert 0.0 <= stages["general_data"]["hh_rm_auroc"] <= 1.0
    mixed = list(datasets.load_from_disk(stages["rejection_data"]["output"]))
    assert sum(r["source"] == "general" for r in mixed) == 8
    assert stages["sft"]["output"].endswith("r1/sft")
    rl_metrics = [json.loads(line) for line in (tmp_path / "r1" / "all_scenario_rl" / "metrics.jsonl").open()]
    assert "reward/helpfulness" in rl_metrics[0] and "reward/language_consistency" in rl_metrics[0]
