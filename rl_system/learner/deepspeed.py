"""The DeepSpeed side of a learner rank: the engine config every trainer here uses (GRPO learner,
SFT, reward-model training), joining the process group, and ZeRO-3's gather and construction helpers."""
from __future__ import annotations

import contextlib
import os

import torch


def deepspeed_config(*, micro_batch_size: int, grad_accum: int, world_size: int, grad_clip: float, zero_stage: int,
                     lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999),
                     overrides: dict | None = None, offload_optimizer: bool = False,
                     precision: dict | None = None) -> dict:
    """The DeepSpeed JSON every engine here uses; `overrides` (the user's) are merged over it.
    `offload_optimizer` keeps the Adam moments (and the step) in CPU memory: 8 bytes a parameter off
    the GPU. `precision`: TrainingPrecision.deepspeed_sections for the engine's device."""
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
    if zero_stage == 3:
        # DeepSpeed's defaults, a 5e8-element gradient bucket (allocated whole on a GPU), one
        # 1e9-element optimizer sub-group and up to 1e9 gathered (prefetched) parameters, put a whole
        # fp32 gradient, a partition's worth of step temporaries and the whole gathered model on each
        # rank at once: what ZeRO-3 partitions (benchmarks/results.md (j)). 2e7 elements (80 MB in
        # fp32) is about HF's "auto" bucket (hidden^2) at hidden 4096.
        ds["zero_optimization"].update(reduce_bucket_size=20_000_000, sub_group_size=20_000_000,
                                       stage3_prefetch_bucket_size=20_000_000, stage3_max_live_parameters=20_000_000)
    ds.update(precision or {})
    if offload_optimizer:
        ds["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        ds["zero_force_ds_cpu_optimizer"] = False  # torch's AdamW on the CPU moments: no C++ op to build
    return _merge(ds, overrides or {})


def reference_deepspeed_config(train_config: dict, offload: bool) -> dict:
    """A ZeRO-3 inference engine for the reference policy beside a ZeRO-3 policy: its weights
    partitioned over the ranks like the policy's and gathered a layer at a time in forward, or
    with `offload` kept in CPU memory and brought to the device a layer at a time."""
    keep = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "steps_per_print",
            "torch_autocast", "bf16", "fp16")
    gathering = {k: v for k, v in train_config["zero_optimization"].items() if k.startswith("stage3_")}  # the policy's
    return {**{k: train_config[k] for k in keep if k in train_config},
            "zero_optimization": {**gathering, "stage": 3, "offload_param": {"device": "cpu" if offload else "none"}}}


def gathered_named_parameters(module: torch.nn.Module, zero_stage: int):
    """(name, full tensor) of every parameter, as named_parameters() names them (tied ones once).
    Under ZeRO-3 one module's parameters are gathered at a time and valid only until the next item:
    a collective, so every rank walks the whole iterator; nothing holds the full model at once."""
    if zero_stage != 3:
        yield from module.named_parameters()
        return
    import deepspeed

    seen: set[int] = set()
    for prefix, child in module.named_modules():
        own = [(name, p) for name, p in child.named_parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for _, p in own)
        with deepspeed.zero.GatheredParameters([p for _, p in own], modifier_rank=None):
            for name, p in own:
                yield (f"{prefix}.{name}" if prefix else name), p


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
    # DeepSpeed caches a clone of the world group for the life of the process and drops it only on its own
    # teardown; a world torn down and made again by someone else (vLLM's engine in the same process) would
    # leave the next engine that stale clone. Every rank runs this, so the fresh clone is made collectively.
    from deepspeed.utils import groups

    groups._release_process_group_references(group=None)
    # DeepSpeed records a torch_autocast engine's dtype for the life of the process, and every later engine's
    # optimizer reads it: after a float16 one, a float32 engine would scale its loss and skip its steps.
    # Each engine built after this call sets it again from its own config.
    from deepspeed.runtime import torch_autocast

    torch_autocast.TORCH_AUTOCAST_INITIALIZED, torch_autocast.TORCH_AUTOCAST_DTYPE = False, None
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


@contextlib.contextmanager
def zero3_construction(ds_config: dict | None):
    """While open, transformers' from_pretrained builds a model under deepspeed.zero.Init for
    `ds_config` (ZeRO-3): each rank allocates its own partition of every weight, never the whole
    model. None: a plain construction."""
    if ds_config is None:
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    marker = HfDeepSpeedConfig(ds_config)  # transformers keeps only a weak reference to it
    try:
        yield
    finally:
        del marker
        unset_hf_deepspeed_config()


def reference_placement(lc) -> str:
    """learner.reference, "auto" resolved: ZeRO-3 partitions the reference like the policy, other
    stages keep a full copy on each rank."""
    if lc.reference != "auto":
        return lc.reference
    return "sharded" if lc.zero_stage == 3 else "copy"


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
