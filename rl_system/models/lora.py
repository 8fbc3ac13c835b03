"""LoRA adapters on a causal LM (peft), and the merged weights that rollout workers and checkpoints need.

Rollout workers (HF generate, vLLM) and saved checkpoints take a plain Hugging Face model, so the learner
publishes base + delta under the base model's own parameter names. The merge is computed beside the
model, never in it: peft's merge_adapter/unmerge_adapter add and subtract the delta in place, and in
floating point the base weights drift a little with every publish.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from rl_system.config import LoraConfig


def apply_lora(model: torch.nn.Module, cfg: LoraConfig):
    """Wraps `model` (in place) in a peft PeftModel with LoRA adapters on `cfg.target_modules`; only the
    adapters are trainable. 'all-linear' is every Linear (or GPT-2 Conv1D) layer but the output head,
    resolved by peft for any architecture. A target list that matches nothing, or a tied weight (SmolLM2's
    lm_head is embed_tokens), is refused: the first would train nothing, the second would merge its delta twice."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists
    from transformers.pytorch_utils import Conv1D

    targets = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=targets, task_type="CAUSAL_LM")
    # get_peft_model expands 'all-linear' the same way; expanded here so the checks below see the real names.
    peft_cfg = _maybe_include_all_linear_layers(peft_cfg, model)
    modules = dict(model.named_modules())
    matched = [name for name in modules if name and check_target_module_exists(peft_cfg, name)]
    if not matched:
        weighted = sorted({name.rpartition(".")[2] for name, m in modules.items()
                           if getattr(getattr(m, "weight", None), "ndim", 0) == 2})  # Linear, Embedding, ...
        raise ValueError(f"LoRA target_modules {targets} match no module of the model "
                         f"(its weight matrices are in: {', '.join(weighted[:16])})")
    # GPT-2's Conv1D keeps its weight as (in, out); saying so up front spares peft's warning for every layer.
    peft_cfg.fan_in_fan_out = all(isinstance(modules[name], Conv1D) for name in matched)
    owners: dict[int, list[str]] = {}
    for name, module in modules.items():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append(name)
    for name in matched:
        tied = [o for o in owners.get(id(getattr(modules[name], "weight", None)), []) if o != name]
        if tied:
            raise ValueError(f"LoRA target '{name}' shares its weight with '{tied[0]}' (tied embeddings); "
                             "leave it out of learner.lora.target_modules")
    return get_peft_model(model, peft_cfg)


def merged_named_parameters(peft_model) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of the model with its active adapters merged, under the names the plain HF
    model's named_parameters() gives (tied weights once). Each LoRA-wrapped weight is a new tensor,
    base + get_delta_weight(adapter); the other weights are the model's own, detached. The model is
    not touched, and the lora_A / lora_B parameters are left out."""
    from peft.tuners.lora import LoraLayer

    base = peft_model.get_base_model()
    layers = {name: m for name, m in base.named_modules() if isinstance(m, LoraLayer)}
    with torch.no_grad():
        for name, param in base.named_parameters():
            owner = name
            while "." in owner and owner not in layers:
                owner = owner.rpartition(".")[0]
            if owner not in layers:
                yield name, param.detach()
                continue
            rest = name[len(owner) + 1:]
            if not rest.startswith("base_layer."):
                continue  # an adapter's own parameter (lora_A, lora_B, ...)
            hf_name, layer, tensor = f"{owner}.{rest[len('base_layer.'):]}", layers[owner], param.detach()
            if rest == "base_layer.weight" and not layer.disable_adapters and not layer.merged:
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A or adapter in layer.lora_embedding_A:
                        tensor = tensor + layer.get_delta_weight(adapter).to(tensor.dtype)
            yield hf_name, tensor


def save_merged(peft_model, path: str | Path) -> Path:
    """Saves the merged model as a plain HF model (safetensors) to `path`, loadable without peft, and
    the adapter alone to `path`/adapter (peft's format) for those who want to keep or reuse it."""
    path = Path(path)
    base = peft_model.get_base_model()
    base.save_pretrained(path, state_dict=dict(merged_named_parameters(peft_model)))
    peft_model.save_pretrained(path / "adapter")
    return path
