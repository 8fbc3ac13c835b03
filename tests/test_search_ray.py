"""Test-time search on a real local Ray cluster with the tiny model: one-step generation on the
rollout workers, and `python -m rl_system evaluate` end to end with tiny trained ORM / PRM."""
import csv
import json

import datasets
import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from actors.search_backend import RayPolicy, RuleGrader  # noqa: E402
from rl_system.algorithms.reward_model import train_reward_model  # noqa: E402
from rl_system.cli import main  # noqa: E402
from rl_system.config import RewardModelTrainConfig, SEARCH_METHODS, load_config  # noqa: E402
from rl_system.data import Problem, load_splits  # noqa: E402
from rl_system.models import load_tokenizer  # noqa: E402
from rl_system.search import Request  # noqa: E402

pytestmark = pytest.mark.integration

CLUSTER = ["cluster.include_dashboard=false", "cluster.num_cpus=8", "rollout.num_workers=2", "data.num_eval=4"]
RIGHT = "<think> 3 plus 4 is 7. So it is 7. </think> <answer>7</answer>"
WRONG = "<think> 3 plus 4 is 9. So it is 9. </think> <answer>9</answer>"


@pytest.fixture(scope="module")
def ray_cluster(tiny_model_dir):
    connect(load_config(None, [f"model.path={tiny_model_dir}", *CLUSTER]))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reward_models(tiny_model_dir, tmp_path_factory):
    """A tiny ORM and PRM trained for one epoch: their quality does not matter here, their plumbing does."""
    out = tmp_path_factory.mktemp("search_rm")
    rows = [{"question": "What is 3 + 4?", "answer": "7", "completion": RIGHT if i % 2 else WRONG, "label": i % 2,
             "split": "train", "step_labels": [0.5, float(i % 2)]} for i in range(8)]
    datasets.Dataset.from_list(rows).save_to_disk(str(out / "samples"))
    (out / "samples" / "info.json").write_text(json.dumps({"step_split": "sentences"}))
    paths = {}
    for kind in ("orm", "prm"):
        cfg = load_config(None, [f"base_model={tiny_model_dir}", f"samples={out / 'samples'}", f"output_dir={out / kind}",
                                 f"kind={kind}", "epochs=1", "batch_size=8", "autocast_dtype=float32"],
                          cls=RewardModelTrainConfig)
        paths[kind] = str(train_reward_model(cfg, log=lambda *_: None))
    return paths


def test_one_step_generation_stops_at_the_delimiter(ray_cluster, tiny_model_dir):
    cfg = resolve_paths(load_config("configs/evaluate.yaml", [f"model.path={tiny_model_dir}", *CLUSTER,
                                                              "rollout.temperature=1.5"]))
    workers = RayWorkers(cfg, with_learner=False)
    try:
        problems = load_splits(cfg.data)[1][:2]
        # "e" is in a good share of all tokens, so a random model hits it within a few tokens
        groups = workers.fetch(workers.generate(problems, n=4, max_new_tokens=24, stop_strings=("e",)))
        policy = RayPolicy(workers, cfg.data.prefill, cfg.rollout.stop_strings)
        steps = policy.sample([Request(p, "<think> So") for p in problems], 3, 24, step_delimiter="e")
        graded = RuleGrader(workers).score([Problem(0, "2 + 5 =", "7")] * 3, [
            "<think>x</think> <answer>7</answer>", "<answer>7.0</answer>", "<answer>8</answer>"])
    finally:
        workers.shutdown()
    tokenizer = load_tokenizer(tiny_model_dir)
    for ids, truncated in ((ids, t) for g in groups for ids, t in zip(g.completion_ids, g.truncated)):
        assert "e" not in tokenizer.decode(ids[:-1])  # nothing generated past the first token holding the stop
        assert truncated or "e" in tokenizer.decode(ids[-1:]) or ids[-1] == tokenizer.eos_token_id
    assert sum(len(ids) for g in groups for ids in g.completion_ids) < 0.5 * 8 * 24  # stopped early on the whole
    assert [len(s) for s in steps] == [3, 3]
    assert all(c.text.startswith("<think> So") and 0 < c.tokens <= 24 for s in steps for c in s)
    assert graded == [1.0, 1.0, 0.0]


def test_evaluate_command_end_to_end(ray_cluster, reward_models, tiny_model_dir, tmp_path):
    out = tmp_path / "evaluate"
    argv = ["evaluate", "--config", "configs/evaluate.yaml", "--methods", ",".join(SEARCH_METHODS), "--budgets", "1,2",
            f"model.path={tiny_model_dir}", *CLUSTER, f"search.orm_path={reward_models['orm']}",
            f"search.prm_path={reward_models['prm']}", "search.num_problems=2", "search.max_new_tokens=8",
            "search.step_max_tokens=4", "search.max_steps=2", f"search.output_dir={out}"]
    main(argv)
    with open(out / "search_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], int(r["budget"])) for r in rows] == [("greedy", 1)] + [
        (m, b) for m in SEARCH_METHODS[1:] for b in (1, 2)]
    by = {(r["method"], int(r["budget"])): r for r in rows}
    for r in rows:
        assert 0.0 <= float(r["accuracy"]) <= 1.0 and int(r["num_problems"]) == 2 and float(r["wall_s"]) > 0
        assert 0 < int(r["generated_tokens"])
    for method in ("maj", "bon", "wbon"):  # N samples of at most 8 tokens for each of 2 problems
        assert int(by[method, 1]["generated_tokens"]) <= 16 < int(by[method, 2]["generated_tokens"]) <= 32
    assert int(by["greedy", 1]["generated_tokens"]) <= 16
    assert by["bon", 2]["verifier"] == "orm" and by["beam", 2]["verifier"] == "prm"
    assert by["mcts", 2]["verifier"] == "orm"  # configs/evaluate.yaml: MCTS against the ORM, not the oracle
    assert "| greedy | 1 | - |" in (out / "search_results.md").read_text()
    assert (out / "accuracy_vs_compute.png").read_bytes()[:4] == b"\x89PNG"
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(SystemExit, match=f"error: search.output_dir '{out}' already holds a run .*: use --overwrite"):
        main(argv)  # a second evaluation would have replaced the first
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written
