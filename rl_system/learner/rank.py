"""The learner's DeepSpeed rank: the GRPO update on its shard of each batch, weight publishing,
checkpoints. Plain Python; actors/learner.py runs it as a Ray actor."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import socket

import torch

from rl_system.algorithms.grpo import loss_normalizer
from rl_system.checkpoints import TRAINING_STATE_TAG, load_with_weights_only
from rl_system.config import TrainConfig
from rl_system.learner.deepspeed import (
    deepspeed_config, full_parameters, gathered_named_parameters, init_deepspeed, reference_deepspeed_config,
    reference_placement, zero3_construction,
)
from rl_system.models import (
    TrainingPrecision, apply_lora, detect, load_policy, load_tokenizer, merged_named_parameters, pick_device, resolve,
    save_merged,
)
from rl_system.training import (
    Sample, collate, completion_logprobs, flatten_groups, grpo_loss, loss_counts, merge_stats, sample_tokens,
    shard_bounds, tis_cap, token_balanced_shards, token_budget_micro_batches,
)
from rl_system.types import PromptGroup
from rl_system.weight_broadcast import SyncGroup, open_sync_group, send_weights
from rl_system.weights import PublishSlots


def peak_memory_gib(device: torch.device) -> float:
    """This process's peak memory so far: allocated on its GPU, or resident (RSS) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class Learner:
    """One DeepSpeed data-parallel rank doing the GRPO update on its shard of each batch."""

    def __init__(self, cfg: TrainConfig, world_size: int, rank: int, gpu_index: int = 0):
        """`gpu_index`: this rank's GPU among those the process sees (models.visible_gpu_index)."""
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = pick_device(cfg.learner.num_gpus, gpu_index)
        resolved = resolve(*cfg.learner.compute_request(), detect(self.device), role="learner")
        self.training_precision = TrainingPrecision.of(resolved, cfg.learner.bf16_weights)
        # The reference policy (beta > 0; with LoRA the base under the adapter) keeps the policy's weight dtype.
        self.precision_report = dataclasses.replace(
            resolved, weights=self.training_precision.weights, reference=self.training_precision.weights if cfg.learner.beta > 0 else "")
        torch.set_num_threads(cfg.learner.num_threads or max(1, (os.cpu_count() or 1) // world_size))
        self.version = 0
        self._publish_slots: PublishSlots | None = None  # rank 0 packs every publish into these
        self._publish_dtype = "float32"
        self._weight_group: SyncGroup | None = None  # weight_sync.method=broadcast: rank 0's group with the rollouts
        self._weight_layout: list[tuple[str, tuple]] | None = None  # (name, shape) of every weight sent

    def precision(self) -> dict:
        return self.precision_report.as_dict()

    def setup(self, master_addr: str, master_port: int, publish_dtype: str) -> None:
        """Joins the ranks' process group (all ranks call it together) and builds the engine. DeepSpeed
        puts the rank on cuda:LOCAL_RANK, so LOCAL_RANK is the device index this process sees.
        `publish_dtype`: what the rollout workers generate in, the dtype each publish is packed in."""
        self._publish_dtype = publish_dtype
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(self.device.index or 0))
        deepspeed = init_deepspeed(self.device)
        torch.manual_seed(self.cfg.seed)
        cfg, lc = self.cfg, self.cfg.learner
        per_rank = cfg.prompts_per_step * cfg.rollout.group_size // self.world_size
        ds_config = deepspeed_config(
            micro_batch_size=lc.micro_batch_size, grad_accum=per_rank // lc.micro_batch_size,
            world_size=self.world_size, grad_clip=lc.grad_clip, zero_stage=lc.zero_stage, lr=lc.lr,
            weight_decay=lc.weight_decay, betas=lc.betas, overrides=lc.deepspeed, offload_optimizer=lc.offload_optimizer,
            precision=self.training_precision.deepspeed_sections(self.device.type))
        with zero3_construction(ds_config if lc.zero_stage == 3 else None):
            model = load_policy(cfg.model, "float32", self.device)  # ZeRO-3: each rank builds its partition only
        model.config.use_cache = False
        if lc.lora.r:
            model = apply_lora(model, lc.lora)
        if lc.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainable = [p for p in model.parameters() if p.requires_grad]  # with LoRA, the adapters only
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=ds_config)
        self.ref_model = None
        if lc.beta > 0 and not lc.lora.r:  # LoRA's reference is the base under the adapter
            self.ref_model = self._reference_model(deepspeed, ds_config)
        self.pad_id = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code).pad_token_id
        self.autocast = self.training_precision.autocast

    def setup_alone(self, publish_dtype: str) -> None:
        """setup for the only rank, in this process: its rendezvous on a free loopback port."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.setup("127.0.0.1", port, publish_dtype)

    def _reference_model(self, deepspeed, ds_config: dict):
        """The frozen initial policy, as learner.reference places it: a full copy on this rank's
        device, or (ZeRO-3) a ZeRO-3 inference engine, partitioned over the ranks or offloaded."""
        placement = reference_placement(self.cfg.learner)
        if placement == "copy":
            return load_policy(self.cfg.model, self.training_precision.weights, self.device).eval().requires_grad_(False)
        ref_config = reference_deepspeed_config(ds_config, offload=placement == "offload")
        with zero3_construction(ref_config):
            model = load_policy(self.cfg.model, "float32", self.device).eval().requires_grad_(False)
        engine, *_ = deepspeed.initialize(model=model, config=ref_config)
        return engine

    def train(self, groups: list[PromptGroup]) -> dict:
        """One update on the batch, of which this rank holds `groups` (whole groups; the other ranks
        the rest), or with learner.max_tokens_per_micro_batch the whole batch (`shard`):
        learner.ppo_epochs passes, each of learner.mini_batches optimizer steps, whatever the shards'
        sizes. What the whole batch decides (its size, each mini-batch's loss normaliser,
        REINFORCE++'s moments) is summed over the ranks. An empty batch is skipped by every rank
        alike: no step, and the policy version stays."""
        cfg, lc = self.cfg, self.cfg.learner
        samples = self.shard(groups)
        parts = [samples[slice(*shard_bounds(len(samples), m, lc.mini_batches))] for m in range(lc.mini_batches)]
        plans = [self.micro_batches(part) for part in parts]
        shard_plan = self.micro_batches(samples)  # for the pass that attaches the fixed log-probs
        # Per mini-batch: [most micro-batches of any rank, sequences, tokens], one all-reduce for them all.
        most = self._max_across_ranks(torch.tensor([len(shard_plan)] + [len(plan) for plan in plans],
                                                   dtype=torch.float64)).int().tolist()
        counts = self._sum_across_ranks(torch.tensor([loss_counts(part) for part in parts], dtype=torch.float64))
        if most[0] == 0:
            return {"sequences": 0}
        # A rank runs zero-weight copies of `pad` where it has fewer micro-batches than another.
        pad = samples[0] if samples else self._pad_sample()
        self.engine.train()
        self.attach_fixed_logprobs(shard_plan or [[pad]], most[0], pad)  # a rank with none: its pad's, for the pad passes
        totals: dict[str, float] = {}
        steps = 0
        for _ in range(lc.ppo_epochs):
            for m, plan in enumerate(plans):
                if most[m + 1] == 0:
                    continue  # no rank has a sample for this mini-batch
                normalizer = loss_normalizer(lc.loss_agg, int(counts[m][0]), int(counts[m][1]), cfg.rollout.max_new_tokens)
                self._optimizer_step(plan, most[m + 1], normalizer, totals, pad)
                steps += 1
        self.version += 1
        totals["loss"] = totals.get("loss", 0.0) / steps  # the mean over the update's optimizer steps
        totals["grad_norm"] = float(self.engine.get_global_grad_norm() or 0.0)  # the last step's
        totals["sequences"] = len(samples)
        totals["peak_memory_gib_max"] = peak_memory_gib(self.device)
        return totals

    def shard(self, groups: list[PromptGroup]) -> list[Sample]:
        """This rank's samples. With learner.max_tokens_per_micro_batch every rank is handed the whole
        batch and keeps its share of token_balanced_shards, the same split on every rank; otherwise
        `groups` is its share already, cut by count (shard_bounds)."""
        lc = self.cfg.learner
        if not lc.max_tokens_per_micro_batch:
            return flatten_groups(groups, lc.std_norm, lc.advantage, lc.overlong_filter, self._sum_across_ranks)
        samples = flatten_groups(groups, lc.std_norm, lc.advantage, lc.overlong_filter)  # the whole batch is here
        share = token_balanced_shards([sample_tokens(s) for s in samples], self.world_size)[self.rank]
        return [samples[i] for i in share]

    def micro_batches(self, samples: list[Sample]) -> list[list[Sample]]:
        """learner.micro_batch_size samples at a time, or with learner.max_tokens_per_micro_batch as
        many as that many padded tokens hold (token_budget_micro_batches)."""
        lc = self.cfg.learner
        if lc.max_tokens_per_micro_batch:
            shapes = [(len(s.prompt_ids), len(s.completion_ids)) for s in samples]
            return [[samples[i] for i in batch]
                    for batch in token_budget_micro_batches(shapes, lc.max_tokens_per_micro_batch)]
        return [samples[i:i + lc.micro_batch_size] for i in range(0, len(samples), lc.micro_batch_size)]

    def _sum_across_ranks(self, values: torch.Tensor) -> torch.Tensor:
        return self._reduce(values, torch.distributed.ReduceOp.SUM)

    def _max_across_ranks(self, values: torch.Tensor) -> torch.Tensor:
        return self._reduce(values, torch.distributed.ReduceOp.MAX)

    def _reduce(self, values: torch.Tensor, op) -> torch.Tensor:
        if self.world_size == 1:
            return values
        on_device = values.to(self.device)  # NCCL reduces GPU tensors only
        torch.distributed.all_reduce(on_device, op=op)
        return on_device.cpu()

    def _pad_sample(self) -> Sample:
        """A one-token stand-in for a rank that holds no sample of a batch others train on."""
        return Sample([self.pad_id], [self.pad_id], [0.0], 0.0, self.version, in_loss=False)

    def _optimizer_step(self, plan: list[list[Sample]], micro_batches: int, normalizer: float, totals: dict,
                        pad: Sample) -> None:
        """One optimizer step on this rank's part of a mini-batch, cut into the micro-batches of
        `plan`. ZeRO reduces gradients in every backward, a collective: every rank runs
        `micro_batches`, the most any rank has, one with fewer padding with zero-weight copies of a sample."""
        lc = self.cfg.learner
        for i in range(micro_batches):
            micro = plan[i] if i < len(plan) else []
            # Gradients accumulate up to the last micro-batch, whatever number DeepSpeed was set up
            # for (its gradient_accumulation_steps, which backward does not scale by here); engine.step()
            # then applies them as one step.
            self.engine.set_gradient_accumulation_boundary(i == micro_batches - 1)
            batch = collate(micro or [pad], self.pad_id, self.device)
            loss, stats = grpo_loss(self.engine, batch, lc, normalizer, self.version, self.cfg.rollout.temperature,
                                    self.autocast, tis_cap(self.cfg))
            # DeepSpeed averages gradients over ranks; the loss is already this rank's share of a
            # global sum, so scale back up instead of letting the mean shrink it.
            self.engine.backward(loss * (self.world_size if micro else 0.0), scale_wrt_gas=False)
            if micro:
                merge_stats(totals, stats)
        self.engine.step()

    @torch.no_grad()
    def attach_fixed_logprobs(self, plan: list[list[Sample]], micro_batches: int, pad: Sample) -> None:
        """Before the first pass, the log-probs that stay fixed through the update: the reference
        policy's (KL, beta > 0), and the learner's own when the batch takes several optimizer steps
        (the ratio's denominator; stale tokens keep their behaviour log-probs, the lag's correction).
        `plan`: this rank's micro-batches; `micro_batches` of them run, the most any rank has (a
        forward of `pad` where this rank has none left), since ZeRO-3 forwards are collective."""
        lc = self.cfg.learner
        several_steps = lc.ppo_epochs * lc.mini_batches > 1
        if not (several_steps or lc.beta > 0):
            return
        for i in range(micro_batches):
            micro = plan[i] if i < len(plan) else []
            batch = collate(micro or [pad], self.pad_id, self.device)
            lengths = [len(s.completion_ids) for s in micro]
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                if several_steps:
                    current = self._logprobs(self.engine, batch)
                    on_policy = batch["token_versions"] == self.version
                    for s, row, n in zip(micro, torch.where(on_policy, current, batch["behaviour_logprobs"]), lengths):
                        s.old_logprobs = row[:n].float().cpu()
                if lc.beta > 0:
                    with self.reference() as reference:
                        for s, row, n in zip(micro, self._logprobs(reference, batch), lengths):
                            s.ref_logprobs = row[:n].float().cpu()

    def _logprobs(self, model, batch: dict) -> torch.Tensor:
        lc = self.cfg.learner
        return completion_logprobs(model, batch, self.cfg.rollout.temperature, lc.share_prompt, lc.logprob_chunk_tokens)

    @contextlib.contextmanager
    def reference(self):
        """The reference policy: the initial model (a frozen copy), or with LoRA the engine's own
        model with its adapter disabled, which is the base (no second copy)."""
        if self.cfg.learner.lora.r:
            with self.engine.module.disable_adapter():
                yield self.engine
        else:
            yield self.ref_model

    def _full_parameters(self):
        return full_parameters(self.engine, self.cfg.learner.zero_stage)

    def _named_weights(self):
        """The policy's weights under the plain HF model's names, full: with LoRA, base + adapter
        merged; under ZeRO-3, gathered a module at a time (collective: every rank walks it all)."""
        module = self.engine.module
        if self.cfg.learner.lora.r:
            return merged_named_parameters(module)
        return gathered_named_parameters(module, self.cfg.learner.zero_stage)

    def packed_weights(self) -> dict | None:
        """The current weights in the publish format, on rank 0 (None elsewhere). Collective under ZeRO-3."""
        weights = self._named_weights()
        if self.rank != 0:
            for _ in weights:  # the other ranks' part of each module's gather
                pass
            return None
        if self._publish_slots is None:
            self._publish_slots = PublishSlots(self._weights_numel(), self._publish_dtype)
        return self._publish_slots.pack(weights, self.version)

    def open_weight_broadcast(self, host: str, port: int, world_size: int) -> None:
        """weight_sync.method=broadcast: rank 0 serves the sync group on host:port, the rollout engines
        join as ranks 1.. (all together, within sync_timeout_s); the other ranks have no part in it."""
        if self.rank == 0:
            self._weight_group = open_sync_group(host, port, 0, world_size, self.device, self.cfg.sync_timeout_s)

    def broadcast_weights(self) -> dict | None:
        """Sends the current weights through the sync group in buckets (rank 0; the other ranks walk the
        weights with it: collective under ZeRO-3). Returns rank 0's {"bytes", "buckets", "seconds"}."""
        if self._weight_layout is None:  # once: a walk of the weights, names and shapes only
            self._weight_layout = [(name, tuple(tensor.shape)) for name, tensor in self._named_weights()]
        weights = self._named_weights()
        if self.rank != 0:
            for _ in weights:
                pass
            return None
        return send_weights(self._weight_group, self._weight_layout, weights, self.version,
                            self.cfg.weight_sync.bucket_mib)

    def _weights_numel(self) -> int:
        """Values in a publish, counted without gathering (ZeRO-3 keeps a partitioned weight's full size in ds_numel)."""
        module = self.engine.module
        if self.cfg.learner.lora.r:
            return sum(p.numel() for name, p in module.get_base_model().named_parameters() if "lora_" not in name)
        return sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())

    def save(self, path: str) -> None:
        """A plain HF model directory (LoRA: the merged weights, the adapter under adapter/)."""
        with self._full_parameters():
            if self.rank == 0:
                if self.cfg.learner.lora.r:
                    save_merged(self.engine.module, path)
                else:
                    self.engine.module.save_pretrained(path, safe_serialization=True)
                load_tokenizer(self.cfg.model.path, self.cfg.model.trust_remote_code).save_pretrained(path)

    def save_training_state(self, path: str) -> None:
        """DeepSpeed's own checkpoint (fp32 weights, optimizer moments, every rank's partition) under
        `path`: what an exact resume needs beyond the HF weights. Collective: every rank calls it."""
        self.engine.save_checkpoint(path, tag=TRAINING_STATE_TAG, client_state={"policy_version": self.version})

    def load_training_state(self, path: str) -> int:
        load_with_weights_only(self.engine)  # a checkpoint is data: DeepSpeed's own loader would unpickle code
        _, client_state = self.engine.load_checkpoint(path, tag=TRAINING_STATE_TAG)
        if client_state is None:
            raise FileNotFoundError(f"no DeepSpeed training state in {path}")
        self.version = client_state["policy_version"]
        return self.version

    def parameter_checksum(self) -> float:
        """The sum of every trained weight (adapters included). Collective under ZeRO-3."""
        return float(sum(p.detach().double().sum()
                         for _, p in gathered_named_parameters(self.engine.module, self.cfg.learner.zero_stage)))
