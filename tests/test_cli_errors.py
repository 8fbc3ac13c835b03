"""Bad input to `python -m rl_system train` exits non-zero with one clear line, before Ray starts."""
import json
import subprocess
import sys

import pytest


def run_train(*overrides):
    return subprocess.run([sys.executable, "-m", "rl_system", "train", "--config", "configs/r1_zero.yaml", *overrides],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def missing_column_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "qa.jsonl"
    path.write_text("\n".join(json.dumps({"problem": f"{i}+1", "answer": str(i + 1)}) for i in range(5)))
    return str(path)


@pytest.mark.parametrize("overrides, message", [
    (["learner.learning_rate=1e-5"], "unknown config key 'learner.learning_rate'"),
    (["num_steps=many"], "config key 'num_steps': expected an integer, got 'many'"),
    (["model.path=/no/such/model"], "model.path '/no/such/model': no Hugging Face model directory there"),
])
def test_one_line_errors(overrides, message):
    result = run_train(*overrides)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]


def test_unknown_reward_name(tiny_model_dir):
    result = run_train(f"model.path={tiny_model_dir}", "reward.functions=[{name: accuracyy}]")
    assert result.returncode != 0
    assert "error: reward.functions name 'accuracyy': unknown reward" in result.stderr


def test_missing_dataset_column(tiny_model_dir, missing_column_file):
    result = run_train(f"model.path={tiny_model_dir}", "data.source=file", f"data.path={missing_column_file}",
                       "data.num_eval=1")
    assert result.returncode != 0
    assert "missing column 'question'" in result.stderr.strip().splitlines()[-1]


def test_resume_without_a_checkpoint(tiny_model_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "rl_system", "train", "--config", "configs/r1_zero.yaml", "--resume",
                             f"model.path={tiny_model_dir}", f"output_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"error: --resume: no checkpoint at {tmp_path}/checkpoint (trainer_state.json missing)" in result.stderr
    assert "Started a local Ray" not in result.stderr
