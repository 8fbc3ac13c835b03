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


def pack_weights(named_params, version: int, dtype: str) -> dict:
    """named_params: iterable of (name, tensor) holding full (gathered) parameters."""
    target = dtype_from_name(dtype)
    manifest, flats, offset = [], [], 0
    for name, tensor in named_params:
        flat = tensor.detach().to("cpu", target).reshape(-1)
        manifest.append((name, tuple(tensor.shape), offset, flat.numel()))
        flats.append(flat)
        offset += flat.numel()
    data = torch.cat(flats).view(torch.uint8).numpy()
    return {"version": version, "dtype": dtype, "manifest": manifest, "data": data}


def load_packed_weights(model: torch.nn.Module, packed: dict, expected_version: int) -> int:
    if packed["version"] != expected_version:
        raise WeightSyncError(f"weight publish carries version {packed['version']}, expected {expected_version}")
    params = dict(model.named_parameters())
    for name, shape, _, _ in packed["manifest"]:
        if name not in params or tuple(params[name].shape) != shape:
            raise WeightSyncError(f"weight publish: parameter '{name}' {shape} does not match this model")
    if len(packed["manifest"]) != len(params):
        raise WeightSyncError(f"weight publish has {len(packed['manifest'])} tensors, model has {len(params)}")
    with warnings.catch_warnings():  # the object store's buffer is read-only; we only read it
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.from_numpy(packed["data"]).view(dtype_from_name(packed["dtype"]))
    with torch.no_grad():
        for name, shape, offset, numel in packed["manifest"]:
            params[name].copy_(flat[offset:offset + numel].view(shape))
    return packed["version"]
