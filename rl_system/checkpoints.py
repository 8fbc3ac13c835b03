"""Loading a checkpoint's training state as data, never as code.

DeepSpeed writes its training state (fp32 weights, optimizer moments, client state) with torch.save,
a pickle, and reads it back with `torch.load(weights_only=False)`: a checkpoint from elsewhere could
run any code on load. Here every such file is read with `weights_only=True`, PyTorch's restricted
unpickler, which builds tensors and plain containers and, beyond them, only the globals in
TRAINING_STATE_GLOBALS (what DeepSpeed's state for our engines holds). A file that needs anything else
is refused with one line naming it and what it asked for, before any worker starts
(`check_training_state`), and again by the loader itself in each learner rank.
"""
from __future__ import annotations

import importlib
import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# The globals DeepSpeed's state for our engines holds beyond tensors and containers, found with
# torch.serialization.get_unsafe_globals_in_checkpoint on states saved under ZeRO 0-3, LoRA, optimizer
# offload, bf16 weights and a ZeRO-3 reference (tests/test_checkpoints.py loads ZeRO-2, ZeRO-3 and LoRA
# states back through it). Each is data: an enum, DeepSpeed's loss-scaler settings, a dataclass of offsets.
TRAINING_STATE_GLOBALS = ("deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.zero.config.ZeroStageEnum",
                          "deepspeed.utils.tensor_fragment.fragment_address")


class CheckpointRefusedError(ValueError):
    """A checkpoint file that would need more than weights to load; the message is one line."""


def _allowed_globals() -> list:
    """TRAINING_STATE_GLOBALS as the objects torch.load's allow-list takes (imported here, in a learner)."""
    objects = []
    for name in TRAINING_STATE_GLOBALS:
        module, _, attribute = name.rpartition(".")
        objects.append(getattr(importlib.import_module(module), attribute))
    return objects


def _refusal(path: Path, why: str) -> CheckpointRefusedError:
    return CheckpointRefusedError(f"checkpoint file '{path}': {why}; refused, a checkpoint is loaded as weights only "
                                  "(a foreign checkpoint could run code: docs/security.md)")


def check_training_state(directory: str | Path) -> None:
    """Every torch.save file under `directory` read statically (its pickle's globals, no tensor loaded):
    raises CheckpointRefusedError for one that needs more than weights."""
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file() and p.suffix == ".pt"):
        try:
            unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path)) - set(TRAINING_STATE_GLOBALS)
        except (ValueError, RuntimeError, OSError) as e:  # not a torch.save zip file
            raise _refusal(path, f"not a file torch.save wrote ({' '.join(str(e).split())[:200]})") from None
        if unsafe:
            raise _refusal(path, f"it needs {', '.join(sorted(unsafe)[:5])} to load")


def load_weights_only(path: str | Path, map_location=None):
    """torch.load with the restricted unpickler and TRAINING_STATE_GLOBALS; one line for a refused file."""
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        asked = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), str(e).splitlines()[0])
        raise _refusal(Path(path), asked[:200]) from None


def load_with_weights_only(engine) -> None:
    """Makes a DeepSpeed engine read its checkpoints with load_weights_only (it writes them as before)."""
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return load_weights_only(path, map_location)

    engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine._config)


# A checkpoint directory: HF weights, DeepSpeed's training state under TRAINING_STATE_DIR, and the
# rollout workers' sampling RNG states in ROLLOUT_RNG_FILE.
TRAINING_STATE_DIR = "deepspeed"
TRAINING_STATE_TAG = "training_state"
ROLLOUT_RNG_FILE = "rollout_rng.safetensors"


def save_rollout_rng(checkpoint: str, states: dict[str, dict[str, torch.Tensor]]) -> None:
    """Each rollout worker's sampling RNG state ({worker name: {device: state}}) in one file."""
    save_file({f"{name}/{device}": state for name, by_device in states.items() for device, state in by_device.items()},
              os.path.join(checkpoint, ROLLOUT_RNG_FILE))


def load_rollout_rng(checkpoint: str) -> dict[str, dict[str, torch.Tensor]]:
    states: dict[str, dict[str, torch.Tensor]] = {}
    for key, state in load_file(os.path.join(checkpoint, ROLLOUT_RNG_FILE)).items():
        name, device = key.split("/", 1)
        states.setdefault(name, {})[device] = state
    return states
