"""Rejection sampling, SFT and distillation on Ray Train (2 DeepSpeed workers, ZeRO-2), and a STaR
iteration, end to end on a real local Ray cluster with tiny models."""
import json

import datasets
import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from actors.sft_trainer import run_sft  # noqa: E402
from rl_system.config import SFTConfig, load_config  # noqa: E402
from rl_system.data.sources import DatasetError  # noqa: E402
from rl_system.models import load_model, make_layer_cut  # noqa: E402
from rl_system.pipeline.rejection import rejection_sample  # noqa: E402
from rl_system.pipeline.star import star  # noqa: E402

pytestmark = pytest.mark.integration

BASE = ["rollout.group_size=4", "rollout.max_new_tokens=8", "rollout.num_workers=2", "learner.micro_batch_size=2",
        "data.num_eval=4", "eval_max_new_tokens=6", "cluster.include_dashboard=false", "cluster.num_cpus=8",
        "rollout.temperature=1.5"]


@pytest.fixture(scope="module")
def ray_cluster(tiny_model_dir):
    connect(load_config(None, [f"model.path={tiny_model_dir}", *BASE]))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def chat_data(ray_cluster, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rejection") / "data"
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", *BASE, f"rejection.output_dir={out}", "rejection.num_prompts=4",
        "reward.functions=[{name: format}, {name: 'tests.reward_fixtures:accept_all'}]",
        "rejection.require={'tests.reward_fixtures:accept_all': 1.0}"]))
    workers = RayWorkers(cfg, with_learner=False)
    try:
        rejection_sample(cfg, workers, log=lambda *_: None)
    finally:
        workers.shutdown()
    return out


def test_rejection_sample_writes_chat_rows_with_provenance(chat_data):
    rows = list(datasets.load_from_disk(str(chat_data)))
    assert 4 <= len(rows) <= 16  # distinct answers of 4 prompts x 4 samples
    assert len({(r["question"], r["completion"]) for r in rows}) == len(rows)
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
        assert r["messages"][1]["content"] == r["question"] and r["messages"][2]["content"] == r["completion"]
        assert r["source"] == "rejection_sampling" and r["policy_version"] == 0 and "format" in json.loads(r["scores"])


def test_sft_then_distill_on_ray_train(chat_data, tiny_model_dir, tmp_path):
    common = dict(data=str(chat_data), micro_batch_size=2, num_workers=2, zero_stage=2, lr=1e-3,
                  autocast_dtype="float32")
    sft = run_sft(SFTConfig(base_model=tiny_model_dir, output_dir=str(tmp_path / "sft"), epochs=3, **common))
    losses = [h["loss"] for h in sft["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert load_model(tmp_path / "sft").config.num_hidden_layers == 2  # an HF directory that loads

    make_layer_cut(tmp_path / "sft", tmp_path / "student", 1)
    distilled = run_sft(SFTConfig(base_model=str(tmp_path / "student"), teacher_model=str(tmp_path / "sft"),
                                  output_dir=str(tmp_path / "distilled"), epochs=3, temperature=2.0, **common))
    kls = [h["kl"] for h in distilled["history"]]
    assert kls[-1] < kls[0]  # the student moves towards the teacher's distribution
    with pytest.raises(DatasetError, match="need at least num_workers x micro_batch_size"):
        run_sft(SFTConfig(base_model=tiny_model_dir, output_dir=str(tmp_path / "x"), data=str(chat_data),
                          micro_batch_size=64, num_workers=2))


def test_star_rationalises_with_hints_and_fine_tunes(ray_cluster, tiny_model_dir, tmp_path):
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", *BASE, "star.iterations=1", "star.num_prompts=4",
        f"star.output_dir={tmp_path / 'star'}",
        "reward.functions=[{name: accuracy}, {name: format}, {name: 'tests.reward_fixtures:accepts_hinted'}]",
        "rejection.require={'tests.reward_fixtures:accepts_hinted': 1.0}",
        "sft.micro_batch_size=2", "sft.num_workers=2", "sft.epochs=1", "sft.autocast_dtype=float32"]))
    results = star(cfg, lambda c: RayWorkers(c, with_learner=False), run_sft, log=lambda *_: None)
    assert [r["iteration"] for r in results] == [0, 1]
    assert results[0]["kept"] == 0 and results[0]["unsolved"] == 4  # nothing passes without the hint...
    assert 4 <= results[0]["rationalized"] <= 16  # ...every hinted answer does
    rows = list(datasets.load_from_disk(str(tmp_path / "star" / "iter1" / "data")))
    assert all("Hint" not in r["messages"][1]["content"] for r in rows)  # stored with the original question
    assert results[1]["model"].endswith("iter1/model") and 0.0 <= results[1]["accuracy"] <= 1.0
    assert json.loads((tmp_path / "star" / "results.json").read_text()) == results
