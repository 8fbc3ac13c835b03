"""A checkpoint is data (rl_system/checkpoints.py): DeepSpeed's training state loads as weights only,
a pickle that would run code is refused in one line (before any worker starts, and by the learner's
loader itself) and never runs, and the state our learners write loads back through that path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_system import cli
from rl_system.checkpoints import TRAINING_STATE_DIR, CheckpointRefusedError, check_training_state, load_weights_only


class Payload:
    """What a foreign checkpoint may hold: unpickling it runs a command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def foreign_checkpoint(tmp_path):
    """A run directory whose checkpoint's optimizer file carries the payload; it would create `ran`."""
    ran = tmp_path / "ran"
    state = tmp_path / "run" / "checkpoint" / TRAINING_STATE_DIR / "training_state"
    state.mkdir(parents=True)
    torch.save({"optimizer_state_dict": {"step": Payload(f"touch {ran}")}, "ds_version": "0.19.8"},
               state / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (tmp_path / "run" / "checkpoint" / "trainer_state.json").write_text(json.dumps({"step": 1, "version": 1}))
    return tmp_path / "run", state / "zero_pp_rank_0_mp_rank_00_optim_states.pt", ran


def test_the_payload_is_live(foreign_checkpoint):
    """The control: DeepSpeed's own way of loading (weights_only=False) runs it."""
    _, optim, ran = foreign_checkpoint
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(optim)!r}, weights_only=False)"],
                   check=False, timeout=60, capture_output=True, cwd=Path(__file__).parent.parent)
    assert ran.exists()


def test_a_checkpoint_that_needs_code_is_refused_in_one_line_and_never_runs(foreign_checkpoint):
    run, optim, ran = foreign_checkpoint
    with pytest.raises(CheckpointRefusedError) as checked:
        check_training_state(run / "checkpoint" / TRAINING_STATE_DIR)
    with pytest.raises(CheckpointRefusedError) as loaded:
        load_weights_only(optim)
    for message in (str(checked.value), str(loaded.value)):
        assert message.startswith(f"checkpoint file '{optim}': ") and "\n" not in message, message
        assert "system" in message and message.endswith("refused, a checkpoint is loaded as weights only (a "
                                                        "foreign checkpoint could run code: docs/security.md)")
    assert not ran.exists()


def test_resume_from_a_foreign_checkpoint_stops_before_ray(foreign_checkpoint, no_ray, tiny_model_dir):
    run, optim, ran = foreign_checkpoint
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", "--resume", f"model.path={tiny_model_dir}", f"output_dir={run}", "data.num_eval=4"])
    assert str(stopped.value.code).startswith(f"error: checkpoint file '{optim}': it needs ")
    assert not ran.exists()


def test_a_file_torch_save_did_not_write_is_refused(tmp_path):
    (tmp_path / "model_states.pt").write_bytes(b"\x80\x04not a zip archive")
    with pytest.raises(CheckpointRefusedError, match="not a file torch.save wrote"):
        check_training_state(tmp_path)


# One learner per process: DeepSpeed keeps its process groups for the life of the process.
ROUND_TRIP = """import sys
import pytest
from rl_system.checkpoints import check_training_state
from rl_system.config import load_config
from rl_system.learner import Learner
from tests.test_policy_updates import batch

model, state, *overrides = sys.argv[1:]
cfg = load_config("configs/r1_zero.yaml", [
    f"model.path={model}", "prompts_per_step=2", "rollout.group_size=4", "learner.num_ranks=1",
    "learner.micro_batch_size=2", "learner.autocast_dtype=float32", "learner.beta=0", "learner.num_threads=1",
    *overrides])
rank = Learner(cfg, world_size=1, rank=0)
rank.setup_alone("float32")
rank.train(batch(model, 0))
rank.version = 7
rank.save_training_state(state)
check_training_state(state)
saved = rank.parameter_checksum()
rank.train(batch(model, 7))
assert rank.parameter_checksum() != saved
assert rank.load_training_state(state) == 7
assert rank.parameter_checksum() == pytest.approx(saved, rel=0, abs=1e-6)
print("restored")
"""


@pytest.mark.parametrize("overrides", [["learner.zero_stage=2"], ["learner.zero_stage=3"], ["learner.lora.r=4"]],
                         ids=["zero2", "zero3", "lora"])
def test_the_state_a_learner_writes_loads_back_as_weights_only(overrides, tiny_model_dir, tmp_path):
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, tiny_model_dir, str(tmp_path), *overrides],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
    assert done.stdout.strip().endswith("restored"), done.stdout[-2000:] + done.stderr[-4000:]
