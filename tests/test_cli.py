"""The CLI's --print-config and --dry-run, and its help: every sub-command described, every option
explained, every example right for its sub-command (each runs here with --dry-run)."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_system import cli
from rl_system.config import RewardModelTrainConfig, SFTConfig, TrainConfig, load_config

ROOT = Path(__file__).parent.parent
CLASSES = {"sft": SFTConfig, "distill": SFTConfig, "train-orm": RewardModelTrainConfig,
           "train-prm": RewardModelTrainConfig}


pytestmark = pytest.mark.usefixtures("no_ray")  # --print-config and --dry-run start no Ray


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model_dir, chat_data):
    """What the examples read, made small: chat data for sft / distill, samples with step labels."""
    import datasets

    root = tmp_path_factory.mktemp("inputs")
    samples = root / "samples"
    datasets.Dataset.from_list([{"question": f"{i} + 1?", "completion": f"Step one. <answer>{i + 1}</answer>",
                                 "label": i % 2, "split": "train" if i < 6 else "eval", "step_labels": [1.0, 0.0]}
                                for i in range(8)]).save_to_disk(str(samples))
    return {"model": tiny_model_dir, "chat": chat_data, "samples": str(samples)}


def small_inputs(command: str, inputs: dict, out: Path) -> list[str]:
    """Overrides that point a command at the tiny model and small data, and every run directory into `out`."""
    if command in ("sft", "distill"):
        return [f"base_model={inputs['model']}", f"data={inputs['chat']}", f"output_dir={out / 'run'}"] + (
            [f"teacher_model={inputs['model']}"] if command == "distill" else [])
    if command in ("train-orm", "train-prm"):
        return [f"base_model={inputs['model']}", f"samples={inputs['samples']}", f"output_dir={out / 'run'}"]
    return [f"model.path={inputs['model']}", "data.num_train=16", "data.num_eval=4", "cluster.num_cpus=0",
            *(f"{key}={out / key}" for key in ("output_dir", "r1.output_dir", "star.output_dir", "collect.output_dir",
                                               "rejection.output_dir", "search.output_dir"))]


def run_cli(argv: list[str], capsys) -> str:
    cli.main(argv)
    return capsys.readouterr().out


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def examples() -> list[tuple[str, list[str]]]:
    """(command, argv) of every example in a config command's help."""
    out = []
    for name, spec in cli.CONFIG_COMMANDS.items():
        for example in spec.examples:
            argv = shlex.split(example)
            assert argv[:3] == ["python", "-m", "rl_system"] and argv[3] == name, example
            out.append((name, argv[3:]))
    return out


@pytest.mark.parametrize("command, config", [
    ("train", "configs/r1_zero.yaml"), ("train", "configs/r1_zero_mix.yaml"), ("train", "configs/r1_zero_mixed.yaml"),
    ("pipeline", "configs/r1.yaml"), ("star", "configs/star.yaml"), ("collect-samples", "configs/collect.yaml"),
    ("evaluate", "configs/evaluate.yaml"), ("distill", "configs/distill.yaml"), ("train-orm", "configs/orm.yaml"),
    ("train-prm", "configs/prm.yaml"), ("sft", None)])
def test_print_config_round_trips(command, config, capsys, tmp_path):
    overrides = ["rollout.dtype=auto", "learner.lr=3e-6"] if CLASSES.get(command, TrainConfig) is TrainConfig \
        else ["lr=3e-6"]
    argv = [command, *(["--config", config] if config else []), *overrides, "--print-config"]
    printed = run_cli(argv, capsys)
    loaded = load_config(config, [*overrides, *(["kind=prm"] if command == "train-prm" else [])],
                         cls=CLASSES.get(command, TrainConfig))
    (tmp_path / "printed.yaml").write_text(printed)
    assert load_config(tmp_path / "printed.yaml", cls=type(loaded)) == loaded
    assert run_cli([command, "--config", str(tmp_path / "printed.yaml"), "--print-config"], capsys) == printed
    dtype_line = "  dtype: auto  # auto: " if type(loaded) is TrainConfig else "autocast_dtype: auto  # auto: "
    assert any(line.startswith(dtype_line) and "on this machine" in line for line in printed.splitlines()), printed
    assert [p.name for p in tmp_path.iterdir()] == ["printed.yaml"]


def test_print_config_keeps_an_explicit_dtype_and_writes_nothing(capsys, tmp_path):
    printed = run_cli(["train", "rollout.dtype=float32", f"output_dir={tmp_path / 'run'}", "--print-config"], capsys)
    assert "  dtype: float32\n" in printed and "output_dir: " + str(tmp_path / "run") in printed
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command, argv", examples(), ids=[" ".join(argv) for _, argv in examples()])
def test_every_example_passes_a_dry_run(command, argv, inputs, capsys, tmp_path):
    out = run_cli([*argv, *small_inputs(command, inputs, tmp_path), "--dry-run"], capsys)
    assert out.startswith(f"dry run of {command}: the config and its inputs check out"), out
    assert f"output dir: {tmp_path}" in out and "(new)" in out, out
    assert "steps: " in out and "resources: " in out, out
    assert list(tmp_path.iterdir()) == [], "a dry run wrote into its output dirs"


def test_dry_run_shows_the_plan(inputs, capsys, tmp_path):
    out = run_cli(["train", *small_inputs("train", inputs, tmp_path), "num_steps=3", "prompts_per_step=2",
                   "rollout.group_size=4", "learner.micro_batch_size=2", "checkpoint_every=2", "eval_before=false",
                   "--dry-run"], capsys)
    assert "steps: 3 steps x 2 prompts x 4 samples = 24 samples (sync)" in out
    assert "evaluation: the held-out split after training" in out and "checkpoints: every 2 steps and at the end" in out
    assert "    learner: 2 x {CPU: 1}, placed PACK" in out and "    rollout: 2 x {CPU: 1}, placed SPREAD" in out
    assert "stage 1 of 1: fits now" in out


def test_dry_run_stops_where_a_run_stops(inputs, capsys, tmp_path):
    """A bad input: the one line a real run gives. A cluster too small: the scheduler's never-fits line."""
    bad_model = ["train", *small_inputs("train", inputs, tmp_path), f"model.path={tmp_path / 'missing'}"]
    with pytest.raises(SystemExit) as dry:
        cli.main([*bad_model, "--dry-run"])
    with pytest.raises(SystemExit) as real:
        cli.main(bad_model)
    assert isinstance(dry.value.code, str) and dry.value.code == real.value.code and "model.path" in dry.value.code
    with pytest.raises(SystemExit) as small:
        cli.main(["train", *small_inputs("train", inputs, tmp_path), "cluster.num_cpus=1", "--dry-run"])
    assert small.value.code.startswith("error: this run can never be scheduled: it asks for CPU"), small.value.code
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as gpus:
            cli.main(["sft", *small_inputs("sft", inputs, tmp_path), "use_gpu=true", "--dry-run"])
        assert "never be scheduled: it asks for GPU 2" in gpus.value.code, gpus.value.code
    assert list(tmp_path.iterdir()) == []


def test_every_subcommand_and_option_is_explained():
    for name, parser in subcommands().items():
        assert parser.description and len(parser.description) > 20, f"{name} has no description"
        assert parser.epilog and "examples:" in parser.epilog, f"{name} has no examples"
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}"
        example_lines = [line.strip() for line in parser.epilog.splitlines() if line.startswith("  python")]
        assert all(shlex.split(line)[3] == name for line in example_lines), (name, example_lines)
    for name in cli.CONFIG_COMMANDS:
        options = {o for a in subcommands()[name]._actions for o in a.option_strings}
        assert {"--print-config", "--dry-run", "--config"} <= options, name


def test_the_process_prints_the_config_and_starts_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rl_system", "train-orm", f"output_dir={tmp_path / 'orm'}",
                             "--print-config"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "kind: orm\n" in result.stdout and not (tmp_path / "orm").exists()
