"""Learned reward workers on a real local Ray cluster with tiny models: collect-samples with
Monte-Carlo step labels, ORM/PRM served by replicas, a GRPO step with a mixed reward, and a
timed-out reward model that costs a counted score instead of the run; a killed replica restarts
and scores its chunk again."""
import json
import math
import time

import datasets
import psutil
import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from actors.reward import ModelRewardPool  # noqa: E402
from rl_system.algorithms.reward_model import train_reward_model  # noqa: E402
from rl_system.config import RewardModelConfig, RewardModelTrainConfig, load_config  # noqa: E402
from rl_system.data import Problem, load_splits  # noqa: E402
from rl_system.pipeline import r1_zero  # noqa: E402
from rl_system.pipeline.collect import collect_samples  # noqa: E402
from rl_system.types import PromptGroup  # noqa: E402

pytestmark = pytest.mark.integration

BASE = ["prompts_per_step=2", "rollout.group_size=4", "rollout.max_new_tokens=8", "learner.micro_batch_size=2",
        "rollout.num_workers=2", "learner.num_ranks=2", "data.num_eval=4", "eval_max_new_tokens=8",
        "cluster.include_dashboard=false", "rollout.temperature=1.5"]


@pytest.fixture(scope="module")
def ray_cluster(tiny_model_dir):
    connect(load_config(None, [f"model.path={tiny_model_dir}", *BASE, "cluster.num_cpus=8"]))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def collected(ray_cluster, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("collect") / "samples"
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", *BASE, f"collect.output_dir={out}", "collect.num_train_prompts=3",
        "collect.num_eval_prompts=2", "collect.mc_rollouts=2", "collect.mc_max_new_tokens=6",
        "collect.step_split=lines"]))
    workers = RayWorkers(cfg, with_learner=False)
    try:
        collect_samples(cfg, workers, log=lambda *_: None)
    finally:
        workers.shutdown()
    return out


def test_collect_samples_writes_labelled_dataset(collected):
    table = datasets.load_from_disk(str(collected))
    rows = list(table)
    assert len(rows) == (3 + 2) * 4
    assert {r["split"] for r in rows} == {"train", "eval"}
    for r in rows:
        assert r["completion"].startswith("<think>") and r["label"] in (0, 1) and r["policy_version"] == 0
        assert len(r["step_labels"]) == len(r["steps"]) >= 1
        assert r["step_labels"][-1] == r["label"]  # the final step is the outcome
        assert all(v in (0.0, 0.5, 1.0) for v in r["step_labels"])  # K=2 continuations per prefix
        assert "".join(r["steps"]) == r["completion"]
    assert json.loads((collected / "info.json").read_text())["mc_rollouts"] == 2


@pytest.fixture(scope="module")
def reward_models(collected, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    paths = {}
    for kind in ("orm", "prm"):
        cfg = load_config(None, [f"base_model={tiny_model_dir}", f"samples={collected}", f"output_dir={out / kind}",
                                 f"kind={kind}", "epochs=1", "autocast_dtype=float32"], cls=RewardModelTrainConfig)
        paths[kind] = str(train_reward_model(cfg, log=lambda *_: None))
    return paths


def test_grpo_step_with_rule_and_learned_rewards(ray_cluster, reward_models, tiny_model_dir, tmp_path):
    orm, prm = reward_models["orm"], reward_models["prm"]
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", *BASE, f"output_dir={tmp_path / 'run'}", "num_steps=1",
        "eval_before=false", "eval_after=false", "reward.failure_score=-1.0",
        f"reward.models=[{{name: orm, path: '{orm}', kind: orm, weight: 0.5, replicas: 2, batch_size: 3, "
        f"num_cpus: 0.5}}, {{name: prm, path: '{prm}', kind: prm, weight: 0.3, aggregate: product, num_cpus: 0.5}}, "
        f"{{name: busy_orm, path: '{orm}', kind: orm, timeout_s: 0.5, num_cpus: 0.5}}, "
        f"{{name: dead_orm, path: '{orm}', kind: orm, num_cpus: 0.5}}]",
    ]))
    workers = RayWorkers(cfg)
    try:
        pools = {pool.cfg.name: pool for pool in workers.reward_models}
        # busy_orm's only replica gets seconds of queued work, so its answers for the step come late;
        # dead_orm's replica is gone. Both must cost a counted failure score, not the run.
        backlog_group = PromptGroup(load_splits(cfg.data)[0][0], [1], [[1]] * 8, ["<think>" + "word " * 400] * 8,
                                    [[0.0]] * 8, [False] * 8, 0)
        backlog = pools["busy_orm"].replicas.actors[0].score.options(num_returns=40).remote(*[backlog_group] * 40)
        ray.kill(pools["dead_orm"].replicas.actors[0])
        r1_zero.train(cfg, workers)
        ray.get(backlog)
        health = [h for name in ("orm", "prm") for h in pools[name].health()]
    finally:
        workers.shutdown()
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    for name in ("orm", "prm", "format", "accuracy"):
        assert 0.0 <= metrics[f"reward/{name}"] <= 1.0
    assert metrics["reward/busy_orm"] == -1.0 and metrics["reward/dead_orm"] == -1.0
    assert metrics["reward_failures"] == 4  # 2 groups x 2 failing reward models, each counted
    assert "reward_corr/orm" in metrics and math.isfinite(metrics["loss"])
    orm_replicas = [h for h in health if h["name"] == "orm"]
    assert sorted(h["replica"] for h in orm_replicas) == [0, 1]
    assert all(h["calls"] == 1 and h["completions"] == 4 for h in orm_replicas)  # the load was spread
    assert {h["version"] for h in health if h["name"] == "prm"} == {
        json.loads(open(f"{prm}/reward_model.json").read())["version"]}


def test_a_killed_replica_restarts_and_rescores_and_a_dead_one_gets_no_more_work(ray_cluster, reward_models):
    """Replica 0's process is SIGKILLed while it scores its half of a batch: Ray restarts it and the call
    runs again there, so the batch gets its real scores, not reward.failure_score. Replica 1, then
    killed for good, fails the one chunk it is sent and gets none after that."""
    pool = ModelRewardPool(RewardModelConfig(name="orm", path=reward_models["orm"], replicas=2, num_cpus=0.5), "dtype",
                           max_restarts=1)
    group = PromptGroup(Problem(0, "What is 2 + 3?", "5"), [1], [[1]] * 8, ["<think>" + "word " * 300] * 8,
                        [[0.0]] * 8, [False] * 8, 0)
    try:
        [expected] = ray.get(pool.score([group]))
        victim = psutil.Process(pool.health()[0]["pid"])
        refs = pool.score([group] * 32)  # 16 groups a replica: seconds of work
        deadline = time.monotonic() + 30
        while not victim.cmdline()[0].startswith("ray::ModelRewardWorker.score"):  # Ray's title while it scores
            assert time.monotonic() < deadline, "replica 0 never started scoring"
            time.sleep(0.005)
        victim.kill()
        assert all(scores == pytest.approx(expected, rel=1e-4) for scores in ray.get(refs))
        health = pool.health()
        assert health[0]["pid"] != victim.pid and health[0]["completions"] == 16 * 8  # restarted, re-scored
        ray.kill(pool.replicas.actors[1])  # dead for good
        with pytest.raises(ray.exceptions.ActorDiedError):
            ray.get(pool.score([group] * 2))  # one chunk each: replica 1's fails
        assert ray.get(pool.score([group] * 2)) == [pytest.approx(expected, rel=1e-4)] * 2  # both on replica 0
        assert pool.dead == {1}
    finally:
        pool.kill()


def test_held_out_split_matches_collect(tiny_model_dir):
    cfg = load_config("configs/r1_zero.yaml", [f"model.path={tiny_model_dir}", *BASE])
    assert len(load_splits(cfg.data)[1]) == 4
