"""The bad-input corpus, tests/bad_inputs/cases.yaml.

Every `cases` entry is a command line that must stop with one line, `error: ...`, naming the config
key, the file and row, the model directory or the reward, before Ray starts, and must leave an earlier
run untouched: each case points its command's run directory at a finished run and (unless it says
`overwrite: false`) passes --overwrite, and the run's files must be byte for byte the same afterwards.
Every `outputs` entry is a model output the rule rewards must score with a defined, finite value.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rl_system import cli
from rl_system.rundir import mark_run_dir
from tests.ray_guard import StartedRay

HERE = Path(__file__).parent / "bad_inputs"
CORPUS = yaml.safe_load((HERE / "cases.yaml").read_text())
TRAIN_COMMANDS = ("train", "pipeline", "star", "collect-samples", "rejection-sample", "evaluate")


pytestmark = pytest.mark.usefixtures("no_ray")


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model_dir, chat_data):
    """Valid inputs each case starts from (and then spoils one of)."""
    import datasets

    root = tmp_path_factory.mktemp("valid")
    samples = root / "samples"
    datasets.Dataset.from_list([{"question": f"{i} + 1?", "completion": f"<answer>{i + 1}</answer>", "label": 1,
                                 "split": "train", "step_labels": [1.0]} for i in range(4)]).save_to_disk(str(samples))
    return {"tiny_model": tiny_model_dir, "chat_data": chat_data, "samples": str(samples), "here": str(HERE),
            "home": str(Path.home())}


def base_args(command: str) -> list[str]:
    """Valid, small settings of every command; a case's own arguments come after them and win."""
    if command in TRAIN_COMMANDS:
        args = ["model.path={tiny_model}", "data.num_train=16", "data.num_eval=4"]
        return args + (["--methods=greedy,maj"] if command == "evaluate" else [])
    if command in ("sft", "distill"):
        return ["base_model={tiny_model}", "data={chat_data}"] + (["teacher_model={tiny_model}"]
                                                                  if command == "distill" else [])
    return ["base_model={tiny_model}", "samples={samples}"]  # train-orm, train-prm


def fill(value, names: dict):
    """{name} placeholders in strings (and in lists / mappings of them) replaced; other braces kept."""
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    return value


def make_file(path: Path, spec, names: dict) -> None:
    """A case's input file: text, or a generator (see the top of cases.yaml)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, str):
        path.write_text(fill(spec, names))
    elif "lines" in spec:
        lines = [v if isinstance(v, str) else json.dumps(v) for v in fill(spec["lines"], names)]
        path.write_text("\n".join(lines * spec.get("times", 1)) + "\n")
    elif "json" in spec:
        path.write_text(json.dumps(fill(spec["json"], names)))
    elif "symlink" in spec:
        path.symlink_to(fill(spec["symlink"], names))
    elif "fifo" in spec:
        os.mkfifo(path)
    elif "sparse_bytes" in spec:
        with open(path, "wb") as f:
            f.truncate(spec["sparse_bytes"])
    elif "repeat" in spec:
        path.write_text(spec.get("before", "") + spec["repeat"] * spec["times"] + spec.get("after", ""))
    elif "bytes" in spec:
        path.write_bytes(bytes.fromhex(spec["bytes"]))
    elif "dataset" in spec:
        import datasets

        datasets.Dataset.from_list(spec["dataset"]).save_to_disk(str(path))
    elif "model" in spec:  # a copy of the tiny model, spoilt
        shutil.copytree(names["tiny_model"], path)
        for name in spec["model"].get("drop", []):
            (path / name).unlink()
        for name, changes in spec["model"].get("edit", {}).items():
            data = json.loads((path / name).read_text())
            for key, value in changes.items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            (path / name).write_text(json.dumps(data))
        for name, text in spec["model"].get("write", {}).items():
            (path / name).write_text(text)
    else:
        raise ValueError(f"unknown file spec {spec}")


def make_earlier_run(path: Path) -> None:
    """What a finished run leaves behind."""
    mark_run_dir(path)
    (path / "checkpoint").mkdir(parents=True)
    (path / "checkpoint" / "model.safetensors").write_bytes(os.urandom(4096))
    (path / "checkpoint" / "trainer_state.json").write_text(json.dumps({"step": 10, "version": 10, "cursor": 40}))
    (path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.1 * s}) + "\n" for s in range(10)))
    (path / "results.json").write_text(json.dumps({"before": {"accuracy": 0.0}, "after": {"accuracy": 0.5}}))


def tree_digest(path: Path) -> dict[str, str]:
    """Every directory and file under `path` with its size and content hash."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = "dir" if p.is_dir() else f"{p.stat().st_size}:{hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


def argv_of(case: dict, names: dict, run_dir: str) -> list[str]:
    command = case["command"]
    args = fill(base_args(command) + case.get("args", []), names)
    flags = [a for a in args if a.startswith("--")]
    overrides = [a for a in args if not a.startswith("--")]
    key, _ = cli.RUN_DIRS[command]
    overrides.append(f"{key}={run_dir}")
    if case.get("overwrite", True):
        flags.append("--overwrite")
    config = ["--config", fill(case["config"], names)] if "config" in case else []
    return [command, *config, *flags, *overrides]


def run_cli(argv: list[str]) -> str:
    """The one-line error `main` exits with."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    message = info.value.code
    assert isinstance(message, str), f"exit code {message!r}, expected an error message"
    return message


@pytest.mark.parametrize("case", CORPUS["cases"], ids=[c["id"] for c in CORPUS["cases"]])
def test_bad_input_stops_with_one_line(case, shared, tmp_path):
    names = {**shared, "tmp": str(tmp_path)}
    for name, spec in case.get("files", {}).items():
        make_file(tmp_path / name, spec, names)
    earlier = tmp_path / "earlier_run"
    make_earlier_run(earlier)
    before = tree_digest(earlier)
    run_dir = fill(case.get("run_dir", str(earlier)), names)

    message = run_cli(argv_of(case, names, run_dir))

    expected = fill(case["error"], names)
    assert message.startswith("error: ") and "\n" not in message, message
    assert expected in message, f"\nexpected: {expected}\n     got: {message}"
    assert tree_digest(earlier) == before, "the earlier run directory was changed"


@pytest.mark.parametrize("command", [*TRAIN_COMMANDS, "sft", "distill"])
def test_the_valid_inputs_get_as_far_as_ray(command, shared, tmp_path):
    """The control: each command with only the valid defaults passes every check and reaches ray.init,
    so in every case above the spoilt input alone made the difference."""
    earlier = tmp_path / "earlier_run"
    make_earlier_run(earlier)
    before = tree_digest(earlier)
    with pytest.raises(StartedRay):
        cli.main(argv_of({"command": command}, {**shared, "tmp": str(tmp_path)}, str(earlier)))
    assert tree_digest(earlier) == before


def completion_of(spec) -> str:
    if isinstance(spec, str):
        return spec
    if "text" in spec:
        return spec.get("before", "") + spec["text"] * spec.get("times", 1) + spec.get("after", "")
    if "bytes_range" in spec:  # every byte value in order, decoded as a tokenizer's decode(errors="replace") would
        body = bytes(range(256)) * spec["bytes_range"]
    else:
        import random

        body = random.Random(spec["seed"]).randbytes(spec["random_bytes"])
    return spec.get("before", "") + body.decode("utf-8", errors="replace") + spec.get("after", "")


@pytest.mark.parametrize("case", CORPUS["outputs"], ids=[c["id"] for c in CORPUS["outputs"]])
def test_model_output_gets_a_defined_score(case):
    from rl_system.rewards.rules import accuracy_reward, format_reward, language_consistency_reward

    completion = completion_of(case["completion"])
    metadata = json.dumps({"expression": "3 + 4"})
    start = time.perf_counter()
    scores = {
        "format": format_reward(["What is 3 + 4?"], [completion])[0],
        "accuracy": accuracy_reward(["What is 3 + 4?"], [completion], answer=["7"])[0],
        "accuracy_gym": accuracy_reward(["What is 3 + 4?"], [completion], answer=["7"], task=["chain_sum"],
                                        metadata=[metadata])[0],
        "language_consistency": language_consistency_reward(["What is 3 + 4?"], [completion])[0],
    }
    seconds = time.perf_counter() - start
    for name, score in scores.items():
        assert isinstance(score, float) and math.isfinite(score) and 0.0 <= score <= 1.0, (name, score)
        expected = case["scores"][name]
        if isinstance(expected, list):  # a range, for outputs whose exact share is arbitrary
            assert expected[0] <= score <= expected[1], (name, score)
        else:
            assert score == expected, (name, score)
    assert seconds < 20, f"scoring took {seconds:.1f} s"


def test_nan_or_text_scores_at_run_time_are_counted_failures():
    """What the preflight probe stops before a run, the runner contains during one (a reward that
    only returns NaN for some inputs): failure_score, counted, the healthy rewards unaffected."""
    from rl_system.rewards.runner import RewardRunner

    runner = RewardRunner([("tests.bad_inputs.plugins:nan_score", 1.0), ("tests.bad_inputs.plugins:inf_score", 1.0),
                           ("tests.bad_inputs.plugins:text_score", 1.0), ("format", 1.0)],
                          timeout_s=30, failure_score=-1.0)
    try:
        result = runner.score(["q", "q"], ["<think>a</think><answer>1</answer>", "x"], {"answer": ["1", "1"]})
    finally:
        runner.close()
    assert result.failures == {"tests.bad_inputs.plugins:nan_score": 1, "tests.bad_inputs.plugins:inf_score": 1,
                               "tests.bad_inputs.plugins:text_score": 1}
    assert result.scores["tests.bad_inputs.plugins:nan_score"] == [-1.0, -1.0]
    assert result.scores["format"] == [1.0, 0.0]


@pytest.mark.parametrize("args, expected", [
    (["train", "--config", str(HERE / "configs" / "syntax_error.yaml")],
     f"error: config file '{HERE / 'configs' / 'syntax_error.yaml'}' line 6, column 20: invalid YAML, "
     "mapping values are not allowed here"),
    (["train", "model.path={tiny_model}", "data.num_eval=4",
      "reward.functions=[{name: tests.bad_inputs.plugin_import_fails:score}]"],
     "error: reward.functions name 'tests.bad_inputs.plugin_import_fails:score': importing module "
     "'tests.bad_inputs.plugin_import_fails' raised RuntimeError: GRADER_URL is not set"),
], ids=["bad-yaml", "reward-import-raises"])
def test_the_process_prints_one_line_and_no_traceback(args, expected, shared, tmp_path):
    argv = fill(args, shared) + [f"output_dir={tmp_path / 'run'}"]
    result = subprocess.run([sys.executable, "-m", "rl_system", *argv], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 1
    assert result.stderr.strip() == expected, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()
