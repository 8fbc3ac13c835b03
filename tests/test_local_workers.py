"""The driver loop in one process (rl_system.local.LocalWorkers, no Ray): the tiny model trains,
every group is accounted for, and the checkpoint holds what a resume needs."""
import json
import math

from rl_system.config import load_config
from rl_system.local import LocalWorkers
from rl_system.pipeline import r1_zero


def test_two_grpo_steps_in_one_process(tiny_model_dir, tmp_path):
    cfg = load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", f"output_dir={tmp_path}", "num_steps=2", "prompts_per_step=2",
        "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.num_ranks=1", "learner.micro_batch_size=4",
        "learner.lr=1e-3", "eval_before=false", "data.num_eval=4", "eval_max_new_tokens=8",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
    ])
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
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and all(math.isfinite(m["loss"]) for m in lines)
    assert results["after"]["num_problems"] == 4
    checkpoint = tmp_path / "checkpoint"
    assert {"model.safetensors", "trainer_state.json", "rollout_rng.safetensors", "deepspeed"} <= {
        p.name for p in checkpoint.iterdir()}
