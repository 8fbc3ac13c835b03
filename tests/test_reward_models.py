"""Learned rewards without Ray: step labels, encoding, training, scoring, evaluation, bad input."""
import json
import math
import shutil
from pathlib import Path

import datasets
import pytest

from rl_system.cli import main
from rl_system.algorithms.reward_model import (auroc, evaluate_reward_model, load_samples, metrics_by_task,
                                               metrics_lines, train_reward_model)
from rl_system.config import ConfigError, RewardModelTrainConfig, load_config
from rl_system.data.sources import DatasetError
from rl_system.pipeline.collect import collect_samples
from rl_system.types import PromptGroup
from rl_system.models import load_tokenizer
from rl_system.rewards.learned import LearnedReward, RewardModelError, aggregate_steps, encode
from rl_system.rewards.steps import mc_step_labels, split_steps, step_ends

RIGHT = "<think> 3 plus 4 is 7. So it is 7. </think> <answer>7</answer>"
WRONG = "<think> 3 plus 4 is 9. So it is 9. </think> <answer>9</answer>"


def test_step_splitting_modes():
    assert split_steps(RIGHT, "sentences") == ["<think> 3 plus 4 is 7.", " So it is 7. </think> <answer>7</answer>"]
    assert split_steps("<think>Step 1: a\nStep 2: b</think><answer>1</answer>", "step") == [
        "<think>Step 1: a\n", "Step 2: b</think><answer>1</answer>"]
    assert split_steps("<think>a\n\nb\n</think>x", "lines") == ["<think>a", "\n\nb\n</think>x"]
    assert step_ends("no tags", "lines") == [7]  # always at least one step: the whole completion
    with pytest.raises(ValueError, match="step split 'words'"):
        step_ends(RIGHT, "words")


def test_math_shepherd_soft_labels():
    ends = step_ends(RIGHT, "sentences")
    assert mc_step_labels(ends, [[1.0, 0.0, 1.0, 1.0]], outcome_correct=1) == [0.75, 1.0]
    with pytest.raises(ValueError, match="continuation sets"):
        mc_step_labels(ends, [], 1)


def test_encode_puts_step_positions_on_each_steps_last_token(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    enc, positions = encode(tok, ["What is 3 + 4?"], [RIGHT], "sentences", max_length=512)
    ids = enc["input_ids"][0].tolist()
    decoded_upto = [tok.decode(ids[:p + 1]) for p in positions[0]]
    assert decoded_upto[0].endswith("3 plus 4 is 7.")
    assert decoded_upto[1].endswith("<answer>7</answer>")
    _, cut = encode(tok, ["What is 3 + 4?"], [RIGHT], "sentences", max_length=12)
    assert len(cut[0]) == 1  # the first step was cut away from the left: only the last is scored


def test_aggregates_and_auroc():
    assert aggregate_steps([0.9, 0.2, 0.5], "min") == 0.2
    assert aggregate_steps([0.9, 0.2, 0.5], "last") == 0.5
    assert aggregate_steps([0.5, 0.5], "product") == 0.25
    assert auroc([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0]) == 1.0
    # positives .1 and .5 against negatives .9 and .5: three losses and one tie -> 0.5 / 4
    assert auroc([0.9, 0.1, 0.5, 0.5], [0, 1, 1, 0]) == pytest.approx(0.125)
    assert auroc([0.2, 0.4, 0.6], [1, 0, 1]) == pytest.approx(0.5)
    assert auroc([0.2, 0.4], [1, 1]) is None  # one label class: undefined


def test_metrics_by_task_reports_each_task_and_undefined_auroc_as_none():
    tasks = ["sum", "sum", "const", "sum", "const", "sum", ""]
    scores = [0.9, 0.2, 0.7, 0.6, 0.4, 0.7, 0.5]
    labels = [1, 0, 1, 1, 1, 0, 0]
    by_task = metrics_by_task(tasks, scores, labels)
    assert list(by_task) == ["sum", "const"]  # first-seen order; a row without a task is only in the overall
    # sum: positives .9 .6 against negatives .2 .7 -> 3 wins of 4; at 0.5, only the negative .7 is wrong -> 3/4
    assert by_task["sum"] == {"num_samples": 4, "positive_rate": 0.5, "auroc": 0.75, "accuracy": 0.75}
    assert by_task["const"] == {"num_samples": 2, "positive_rate": 1.0, "auroc": None, "accuracy": 0.5}
    assert metrics_by_task(["sum"] * 3, [0.1, 0.5, 0.9], [0, 1, 1]) == {}  # one task: nothing per task
    assert metrics_by_task(["", ""], [0.1, 0.9], [0, 1]) == {}  # a one-task run's rows
    lines = metrics_lines("orm", {"auroc": 0.5, "accuracy": 0.25, "num_samples": 8, "positive_rate": 0.5,
                                  "tasks": by_task})
    assert lines == ["orm: auroc 0.500  accuracy 25.0%  (8 samples, 50.0% correct)",
                     "orm task sum: auroc 0.750  accuracy 75.0%  (4 samples, 50.0% correct)",
                     "orm task const: auroc n/a (one label class)  accuracy 50.0%  (2 samples, 100.0% correct)"]


class ScriptedWorkers:
    """collect-samples' Workers without a model: every prompt gets RIGHT (graded correct) and WRONG."""

    def generate(self, problems, **_):
        return [PromptGroup(p, [], [[1], [2]], [RIGHT, WRONG], [[0.0], [0.0]], [False, False], 0) for p in problems]

    def score(self, groups):
        for g in groups:
            g.rewards = {"accuracy": [1.0, 0.0], "format": [1.0, 1.0]}
        return groups, []

    def fetch(self, handles):
        return handles


def test_collect_samples_records_each_rows_task(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(json.dumps({"q": f"What is {i} + 1?", "a": str(i + 1)}) for i in range(20)))
    file_task = f"source: file, path: '{qa}', prompt_column: q, answer_column: a"
    cfg = load_config(None, [f"collect.output_dir={tmp_path / 'samples'}", "collect.num_train_prompts=4",
                             "collect.num_eval_prompts=4", "data.num_train=6", "data.num_eval=3",
                             f"data.tasks=[{{name: first, {file_task}}}, {{name: second, {file_task}}}]"])
    rows = list(datasets.load_from_disk(str(collect_samples(cfg, ScriptedWorkers(), log=lambda *_: None))))
    assert {r["task"] for r in rows if r["split"] == "eval"} == {"first", "second"}
    assert [(r["task"], r["label"]) for r in rows[:4]] == [("first", 1), ("first", 0), ("second", 1), ("second", 0)]
    one_task = load_config(None, [f"collect.output_dir={tmp_path / 'one'}", "collect.num_train_prompts=1",
                                  "collect.num_eval_prompts=1", "data.source=file", f"data.path={qa}",
                                  "data.prompt_column=q", "data.answer_column=a", "data.num_eval=2"])
    rows = list(datasets.load_from_disk(str(collect_samples(one_task, ScriptedWorkers(), log=lambda *_: None))))
    assert {r["task"] for r in rows} == {""}


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory):
    """A collect-samples style dataset where the label is whether the answer is 7."""
    rows = []
    for split, n in (("train", 24), ("eval", 12)):
        for i in range(n):
            good = i % 2 == 0
            rows.append({"question": "What is 3 + 4?", "answer": "7", "completion": RIGHT if good else WRONG,
                         "label": int(good), "split": split, "step_labels": [0.5, float(good)]})
    path = tmp_path_factory.mktemp("samples") / "samples"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    (path / "info.json").write_text(json.dumps({"step_split": "sentences"}))
    return str(path)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, samples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rms")
    paths = {}
    for kind in ("orm", "prm"):
        cfg = load_config(None, [f"base_model={tiny_model_dir}", f"samples={samples_dir}", f"output_dir={out / kind}",
                                 f"kind={kind}", "epochs=8", "lr=3e-3", "batch_size=8", "autocast_dtype=float32"],
                          cls=RewardModelTrainConfig)
        paths[kind] = str(train_reward_model(cfg, log=lambda *_: None))
    return paths


def test_orm_and_prm_learn_to_separate_right_from_wrong(trained, samples_dir):
    orm = evaluate_reward_model(trained["orm"], "orm", samples_dir)
    prm = evaluate_reward_model(trained["prm"], "prm", samples_dir, aggregate="last")
    assert orm["num_samples"] == 12 and orm["positive_rate"] == 0.5
    assert orm["auroc"] == 1.0 and orm["accuracy"] == 1.0
    assert prm["auroc"] == 1.0
    assert "tasks" not in orm  # samples without a task column: one task, overall figures only
    meta = json.loads(open(f"{trained['prm']}/reward_model.json").read())
    assert meta["kind"] == "prm" and meta["step_split"] == "sentences" and meta["num_samples"] == 24
    assert meta["eval"]["num_samples"] == 12 and meta["eval"]["auroc"] == 1.0  # train-prm scored the eval rows


@pytest.fixture(scope="module")
def two_task_samples(tmp_path_factory):
    """Samples of two tasks: 'sum' with right and wrong answers, 'const' whose eval rows are all right."""
    rows = []
    for split, n in (("train", 8), ("eval", 4)):
        for i in range(n):
            rows.append({"question": "What is 3 + 4?", "completion": RIGHT if i % 2 == 0 else WRONG,
                         "label": int(i % 2 == 0), "split": split, "task": "sum"})
            rows.append({"question": "Say 7.", "completion": RIGHT, "label": 1, "split": split, "task": "const"})
    rows.append({"question": "Say 9.", "completion": WRONG, "label": 0, "split": "train", "task": "const"})
    path = tmp_path_factory.mktemp("mix") / "samples"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return str(path)


def test_train_orm_and_eval_rm_report_each_task(trained, two_task_samples, tiny_model_dir, tmp_path, capsys):
    logged = []
    cfg = load_config(None, [f"base_model={tiny_model_dir}", f"samples={two_task_samples}",
                             f"output_dir={tmp_path / 'orm'}", "epochs=1", "autocast_dtype=float32"],
                      cls=RewardModelTrainConfig)
    meta = json.loads((train_reward_model(cfg, log=logged.append) / "reward_model.json").read_text())
    assert meta["eval"]["num_samples"] == 8 and set(meta["eval"]["tasks"]) == {"sum", "const"}
    assert meta["eval"]["tasks"]["const"]["auroc"] is None and meta["eval"]["tasks"]["const"]["num_samples"] == 4
    assert logged[-2].startswith("orm eval task sum: auroc ")
    assert logged[-1].startswith("orm eval task const: auroc n/a (one label class)")

    capsys.readouterr()  # only eval-rm's output from here on
    main(["eval-rm", "--samples", two_task_samples, "--orm", trained["orm"], "--output", str(tmp_path / "rm.json")])
    out, err = capsys.readouterr()
    assert json.loads(out) == json.loads((tmp_path / "rm.json").read_text())
    [result] = json.loads(out)
    assert result["tasks"]["sum"] == {"num_samples": 4, "positive_rate": 0.5, "auroc": 1.0, "accuracy": 1.0}
    assert result["tasks"]["const"]["auroc"] is None and result["auroc"] == 1.0
    assert [line for line in err.splitlines() if line.startswith("orm")] == [
        "orm: auroc 1.000  accuracy 100.0%  (8 samples, 75.0% correct)",
        "orm task sum: auroc 1.000  accuracy 100.0%  (4 samples, 50.0% correct)",
        "orm task const: auroc n/a (one label class)  accuracy 100.0%  (4 samples, 100.0% correct)"]


def test_learned_reward_callable_scores_and_step_scores(trained):
    orm = LearnedReward(trained["orm"], "orm", batch_size=1)
    scores = orm(["What is 3 + 4?"] * 3, [RIGHT, WRONG, RIGHT])
    assert scores[0] > 0.5 > scores[1] and scores[0] == pytest.approx(scores[2], abs=1e-5)
    prm = LearnedReward(trained["prm"], "prm", aggregate="min", batch_size=2)
    steps = prm.step_scores(["What is 3 + 4?"] * 2, [RIGHT, WRONG])
    assert [len(s) for s in steps] == [2, 2]
    assert steps[0][-1] > 0.5 > steps[1][-1]  # the answer step carries the outcome
    assert prm(["What is 3 + 4?"] * 2, [RIGHT, WRONG]) == pytest.approx([min(steps[0]), min(steps[1])])


def test_wrong_head_and_missing_dir_are_clear_errors(trained, tiny_model_dir):
    with pytest.raises(RewardModelError, match="has no ORM head"):
        LearnedReward(trained["prm"], "orm")
    with pytest.raises(RewardModelError, match="'LlamaForCausalLM'.* has no PRM head"):
        LearnedReward(tiny_model_dir, "prm")  # a causal LM, no reward head at all
    with pytest.raises(FileNotFoundError, match="ORM reward model '/nope': no Hugging Face model directory"):
        LearnedReward("/nope", "orm")


def test_prm_training_needs_step_labels(tmp_path, tiny_model_dir):
    path = tmp_path / "s"
    datasets.Dataset.from_list([{"question": "q", "completion": "c", "label": 1, "split": "train"}]).save_to_disk(str(path))
    with pytest.raises(DatasetError, match="missing column\\(s\\) step_labels .*mc_rollouts"):
        load_samples(path, "prm", "train")
    with pytest.raises(DatasetError, match="not found"):
        load_samples(tmp_path / "nothing", "orm", "train")
    with pytest.raises(ConfigError, match="'epochs'"):
        load_config(None, ["epochs=0"], cls=RewardModelTrainConfig)


def test_a_second_run_into_a_used_directory_is_refused_until_overwrite(trained, tiny_model_dir, samples_dir):
    """`train-orm` again into an existing model directory: refused in one line with nothing changed;
    with --overwrite the earlier run is replaced."""
    out = Path(trained["orm"]).parent / "orm-again"
    shutil.copytree(trained["orm"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["train-orm", f"base_model={tiny_model_dir}", f"samples={samples_dir}", f"output_dir={out}", "epochs=1",
            "autocast_dtype=float32"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == (f"error: output_dir '{out}' already holds a run (chat_template.jinja, config.json, "
                               "model.safetensors, reward_model.json and 2 more): use --overwrite to replace it, "
                               "or another output_dir")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(SystemExit, match="--resume and --overwrite: give one"):
        main(["pipeline", "--resume", "--overwrite", f"model.path={tiny_model_dir}"])
    main([*argv, "--overwrite"])
    assert json.loads((out / "reward_model.json").read_text())["epochs"] == 1


def test_a_float16_reward_model_trains_with_a_loss_scaler_and_records_its_precision(tiny_model_dir, samples_dir,
                                                                                      tmp_path):
    cfg = load_config(None, [f"base_model={tiny_model_dir}", f"samples={samples_dir}", f"output_dir={tmp_path / 'orm'}",
                             "epochs=1", "autocast_dtype=float16"], cls=RewardModelTrainConfig)
    logged = []
    meta = json.loads((train_reward_model(cfg, log=logged.append) / "reward_model.json").read_text())
    assert meta["precision"]["dtype"] == "float16" and math.isfinite(meta["final_loss"])
    assert logged[0].startswith("precision: train-orm float16 (set) on cpu ")
