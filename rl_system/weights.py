"""Weight publishing format: one flat buffer plus one manifest, loaded all-or-nothing.

The buffer is a uint8 numpy array so the object store hands it to every reader without a
copy; the manifest lets a reader check names, shapes and the version before touching a
single parameter.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from rl_system.models import dtype_from_name


class WeightSyncError(RuntimeError):
    pass


def pack_weights(named_params, version: int, dtype: str, out: torch.Tensor | None = None) -> dict:
    """named_params: iterable of (name, tensor) holding full (gathered) parameters.

    Each tensor is cast straight into its slice of one flat buffer: `out` (a 1-D tensor of the
    rollout dtype and exactly the parameters' size, kept by the caller between publishes) or a new
    one. Reusing it saves an allocation, and its page faults, on every publish."""
    named = [(name, tensor.detach()) for name, tensor in named_params]
    total, target = sum(tensor.numel() for _, tensor in named), dtype_from_name(dtype)
    flat = torch.empty(total, dtype=target) if out is None else out
    if flat.shape != (total,) or flat.dtype != target:
        raise ValueError(f"publish buffer is {flat.dtype} {tuple(flat.shape)}, expected {dtype} ({total},)")
    manifest, offset = [], 0
    for name, tensor in named:
        flat[offset:offset + tensor.numel()].copy_(tensor.reshape(-1))
        manifest.append((name, tuple(tensor.shape), offset, tensor.numel()))
        offset += tensor.numel()
    return {"version": version, "dtype": dtype, "manifest": manifest, "data": flat.view(torch.uint8).numpy()}


def check_packed_weights(packed: dict, expected_version: int, params: dict[str, tuple]) -> None:
    """Raises WeightSyncError unless `packed` is version `expected_version` and names exactly the
    parameters `params` (name -> shape): checked before a single parameter is touched."""
    if packed["version"] != expected_version:
        raise WeightSyncError(f"weight publish carries version {packed['version']}, expected {expected_version}")
    for name, shape, _, _ in packed["manifest"]:
        if name not in params or tuple(params[name]) != shape:
            raise WeightSyncError(f"weight publish: parameter '{name}' {shape} does not match this model")
    if len(packed["manifest"]) != len(params):
        raise WeightSyncError(f"weight publish has {len(packed['manifest'])} tensors, model has {len(params)}")


def unpacked_tensors(packed: dict):
    """(name, tensor) views into the packed buffer, no copy."""
    with warnings.catch_warnings():  # the object store's buffer is read-only; we only read it
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.from_numpy(packed["data"]).view(dtype_from_name(packed["dtype"]))
    return [(name, flat[offset:offset + numel].view(shape)) for name, shape, offset, numel in packed["manifest"]]


def load_packed_weights(model: torch.nn.Module, packed: dict, expected_version: int,
                        share_buffer: bool = False) -> int:
    """Checks `packed`, then copies it into the model's parameters. With `share_buffer`, a CPU
    parameter of the packed dtype becomes a view of the packed buffer instead: loading is a pointer
    swap, and every worker reading one object-store buffer shares one copy of the weights. Only for
    an inference model and a buffer nobody writes while it is in use (an object-store object)."""
    params = dict(model.named_parameters())
    check_packed_weights(packed, expected_version, {name: p.shape for name, p in params.items()})
    with torch.no_grad():
        for name, tensor in unpacked_tensors(packed):
            param = params[name]
            if share_buffer and param.device.type == "cpu" and param.dtype == tensor.dtype:
                param.data = tensor
            else:
                param.copy_(tensor)
    return packed["version"]
