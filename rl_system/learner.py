"""The learner's DeepSpeed rank: the GRPO update on its shard of each batch, weight publishing,
checkpoints. Plain Python; actors/learner.py runs it as a Ray actor."""
from __future__ import annotations

import contextlib
import os

import torch
from safetensors.torch import load_file, save_file

from rl_system.config import TrainConfig
from rl_system.models import dtype_from_name, load_policy, load_tokenizer, pick_device
from rl_system.training import (
    batch_normalizer, collate, flatten_groups, grpo_loss, merge_stats, shard_bounds, tis_cap,
)
from rl_system.types import PromptGroup
from rl_system.weights import PublishSlots


def deepspeed_config(*, micro_batch_size: int, grad_accum: int, world_size: int, grad_clip: float, zero_stage: int,
                     lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                     overrides: dict | None = None, torch_autocast: str = "") -> dict:
    """The DeepSpeed JSON every engine here uses; `overrides` (the user's) are merged over it.
    `torch_autocast` (a dtype name) lets torch's autocast act inside the engine's forward: on CUDA,
    DeepSpeed 0.19 turns an autocast the caller opened off there unless this section asks for it
    (seen on an H200: the learner then ran in fp32)."""
    ds = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch_size * grad_accum * world_size,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        # torch_adam: DeepSpeed's fused CPU Adam JIT-compiles a C++ op for ~90 s on first use.
        "optimizer": {"type": "AdamW", "params": {"lr": lr, "betas": list(betas), "eps": 1e-8,
                                                   "weight_decay": weight_decay, "torch_adam": True}},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if torch_autocast:
        ds["torch_autocast"] = {"enabled": True, "dtype": torch_autocast}
    return _merge(ds, overrides or {})


def init_deepspeed(device: torch.device):
    """Joins the torch.distributed group (gloo on CPU, nccl on GPU) and returns the deepspeed module.

    On CPU, DeepSpeed would JIT-compile its shared-memory all-reduce op here; only its
    inference_all_reduce uses that op (training all-reduces go through the process group), so it
    is marked unavailable: no compiler run on a worker's first start, no ISA-dependent kernel."""
    if device.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed
    import deepspeed.ops

    if device.type == "cpu":
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    return deepspeed


@contextlib.contextmanager
def full_parameters(engine, zero_stage: int):
    """Full parameters on every rank: a collective gather under ZeRO-3, nothing to do otherwise."""
    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


class Learner:
    """One DeepSpeed data-parallel rank doing the GRPO update on its shard of each batch."""

    def __init__(self, cfg: TrainConfig, world_size: int, rank: int, gpu_index: int = 0):
        """`gpu_index`: this rank's GPU among those the process sees (models.visible_gpu_index)."""
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = pick_device(cfg.learner.num_gpus, gpu_index)
        torch.set_num_threads(cfg.learner.num_threads or max(1, (os.cpu_count() or 1) // world_size))
        self.version = 0
        self._publish_slots: PublishSlots | None = None  # rank 0 packs every publish into these

    def setup(self, master_addr: str, master_port: int) -> None:
        """Joins the ranks' process group (all ranks call it together) and builds the engine. DeepSpeed
        puts the rank on cuda:LOCAL_RANK, so LOCAL_RANK is the device index this process sees."""
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(self.device.index or 0))
        deepspeed = init_deepspeed(self.device)
        torch.manual_seed(self.cfg.seed)
        cfg = self.cfg
        model = load_policy(cfg.model, "float32", self.device)
        model.config.use_cache = False
        if cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lc = cfg.learner
        per_rank = cfg.prompts_per_step * cfg.rollout.group_size // self.world_size
        ds_config = deepspeed_config(
            micro_batch_size=lc.micro_batch_size, grad_accum=per_rank // lc.micro_batch_size,
            world_size=self.world_size, grad_clip=lc.grad_clip, zero_stage=lc.zero_stage, lr=lc.lr,
            weight_decay=lc.weight_decay, betas=lc.betas, overrides=lc.deepspeed,
            # CPU autocast is left alone by DeepSpeed (it checks CUDA's), so only CUDA needs the section.
            torch_autocast=lc.autocast_dtype if self.device.type == "cuda" and lc.autocast_dtype != "float32" else "")
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds_config)
        self.ref_model = None
        if cfg.learner.beta > 0:
            self.ref_model = load_policy(cfg.model, "float32", self.device).eval()
            self.ref_model.requires_grad_(False)
        self.pad_id = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code).pad_token_id
        ad = cfg.learner.autocast_dtype
        self.autocast = None if ad == "float32" else dtype_from_name(ad)

    def train(self, groups: list[PromptGroup]) -> dict:
        """Exactly one optimiser step over the whole batch, whatever its size; this rank takes its
        contiguous shard. Every rank gets the same batch, so an empty one is skipped by all alike:
        no step, and the policy version stays."""
        cfg, lc = self.cfg, self.cfg.learner
        samples = flatten_groups(groups, lc.std_norm, lc.advantage)
        if not samples:
            return {"sequences": 0}
        normalizer = batch_normalizer(samples, lc.loss_agg, cfg.rollout.max_new_tokens)
        lo, hi = shard_bounds(len(samples), self.rank, self.world_size)
        shard = samples[lo:hi]
        # ZeRO-2 reduces gradients in every backward, a collective: every rank runs the micro-batches
        # the largest shard needs, a shorter one padding with zero-weight copies of a sample.
        largest_shard = -(-len(samples) // self.world_size)
        micro_batches = -(-largest_shard // lc.micro_batch_size)
        totals: dict[str, float] = {}
        self.engine.train()
        for i in range(micro_batches):
            part = shard[i * lc.micro_batch_size:(i + 1) * lc.micro_batch_size]
            # Gradients accumulate up to the last micro-batch, whatever number DeepSpeed was set up
            # for; engine.step() then applies them as one step.
            self.engine.set_gradient_accumulation_boundary(i == micro_batches - 1)
            batch = collate(part or samples[:1], self.pad_id, self.device)
            loss, stats = grpo_loss(self.engine, self.ref_model, batch, lc, normalizer, self.version,
                                    cfg.rollout.temperature, self.autocast, tis_cap(cfg))
            # DeepSpeed averages gradients over ranks; the loss is already this rank's share of a
            # global sum, so scale back up instead of letting the mean shrink it.
            self.engine.backward(loss * (self.world_size if part else 0.0), scale_wrt_gas=False)
            if part:
                merge_stats(totals, stats)
        self.engine.step()
        self.version += 1
        totals["grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)
        totals["sequences"] = len(shard)
        return totals

    def _full_parameters(self):
        return full_parameters(self.engine, self.cfg.learner.zero_stage)

    def packed_weights(self) -> dict | None:
        """The current weights in the publish format, on rank 0 (None elsewhere). Collective under ZeRO-3."""
        with self._full_parameters():
            if self.rank != 0:
                return None
            if self._publish_slots is None:
                self._publish_slots = PublishSlots(sum(p.numel() for p in self.engine.module.parameters()),
                                                   self.cfg.rollout.dtype)
            return self._publish_slots.pack(self.engine.module.named_parameters(), self.version)

    def save(self, path: str) -> None:
        with self._full_parameters():
            if self.rank == 0:
                self.engine.module.save_pretrained(path, safe_serialization=True)
                load_tokenizer(self.cfg.model.path, self.cfg.model.trust_remote_code).save_pretrained(path)

    def save_training_state(self, path: str) -> None:
        """DeepSpeed's own checkpoint (fp32 weights, optimizer moments, every rank's partition) under
        `path`: what an exact resume needs beyond the HF weights. Collective: every rank calls it."""
        self.engine.save_checkpoint(path, tag=TRAINING_STATE_TAG, client_state={"policy_version": self.version})

    def load_training_state(self, path: str) -> int:
        _, client_state = self.engine.load_checkpoint(path, tag=TRAINING_STATE_TAG)
        if client_state is None:
            raise FileNotFoundError(f"no DeepSpeed training state in {path}")
        self.version = client_state["policy_version"]
        return self.version

    def parameter_checksum(self) -> float:
        with self._full_parameters():
            return float(sum(p.detach().double().sum() for p in self.engine.module.parameters()))
