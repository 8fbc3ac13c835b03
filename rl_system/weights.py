"""Weight publishing format: one flat buffer plus one manifest, loaded all-or-nothing.

The buffer is a uint8 numpy array so the object store hands it to every reader without a
copy; the manifest lets a reader check names, shapes and the version before touching a
single parameter. On Linux the publisher packs straight into shared memory that readers on
its node map (PublishSlots, SharedWeightsReader): a publish then writes the weights once.
"""
from __future__ import annotations

import os
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
    one. Reusing it saves an allocation, and its page faults, on every publish; and with `out` the
    parameters are read one at a time, so an iterable that gathers each module's parameters only
    while it is read (ZeRO-3) never holds the whole model."""
    target = dtype_from_name(dtype)
    if out is None:
        named_params = [(name, tensor.detach()) for name, tensor in named_params]
        out = torch.empty(sum(tensor.numel() for _, tensor in named_params), dtype=target)
    if out.dtype != target or out.dim() != 1:
        raise ValueError(f"publish buffer is {out.dtype} {tuple(out.shape)}, expected a 1-D {dtype} buffer")
    manifest, offset = [], 0
    for name, tensor in named_params:
        numel = tensor.numel()
        if offset + numel > out.numel():
            raise ValueError(f"publish buffer holds {out.numel()} values, the parameters need more (at '{name}')")
        out[offset:offset + numel].copy_(tensor.detach().reshape(-1))
        manifest.append((name, tuple(tensor.shape), offset, numel))
        offset += numel
    if offset != out.numel():
        raise ValueError(f"publish buffer holds {out.numel()} values, the parameters fill {offset}")
    return {"version": version, "dtype": dtype, "manifest": manifest, "data": out.view(torch.uint8).numpy()}


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
    data = packed["data"]
    if isinstance(data, torch.Tensor):  # received by a weight broadcast (weight_broadcast.py), maybe on a GPU
        flat = data.view(dtype_from_name(packed["dtype"]))
    else:
        with warnings.catch_warnings():  # the object store's buffer is read-only; we only read it
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.from_numpy(data).view(dtype_from_name(packed["dtype"]))
    return [(name, flat[offset:offset + numel].view(shape)) for name, shape, offset, numel in packed["manifest"]]


def load_packed_weights(model: torch.nn.Module, packed: dict, expected_version: int,
                        share_buffer: bool = False) -> int:
    """Checks `packed`, then copies it into the model's parameters. With `share_buffer`, a CPU
    parameter of the packed dtype becomes a view of the packed buffer instead: loading is a pointer
    swap, and every worker reading one object-store buffer shares one copy of the weights. Only for
    an inference model and a buffer nobody writes while it is in use (an object-store object, or a
    PublishSlots slot, rewritten only once every reader has moved to the next version)."""
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


SLOT_HEADER_BYTES = 64  # a slot's first 8 bytes: the version packed in it, written after the data


def slot_nbytes(numel: int, dtype: str) -> int:
    return SLOT_HEADER_BYTES + numel * torch.finfo(dtype_from_name(dtype)).bits // 8


def slot_version(slot: torch.Tensor) -> torch.Tensor:
    """The slot's header as a one-element int64 view: read it, or assign the version packed in it."""
    return slot[:8].view(torch.int64)


def slot_data(slot: torch.Tensor, version: int) -> np.ndarray:
    held = int(slot_version(slot)[0])
    if held != version:
        raise WeightSyncError(f"shared weight slot holds version {held}, expected {version}")
    return slot[SLOT_HEADER_BYTES:].numpy()


class PublishSlots:
    """Two buffers the publisher packs into in turn (slot = version % 2), so readers keep using
    version v in place while v + 1 is written. The caller publishes v + 2 only once every reader
    has loaded v + 1 (RayWorkers.sync_weights checks the previous loads first).

    On Linux each slot is a memfd that readers on this node map by its /proc path: they read the
    publisher's bytes in place, and the memory is freed with the publisher's process, even if it
    is killed. Elsewhere a slot is plain memory and readers need the bytes sent (`shared_path` None)."""

    def __init__(self, numel: int, dtype: str):
        self.dtype = dtype
        nbytes = slot_nbytes(numel, dtype)
        self.paths: list[str | None] = []
        self.slots: list[torch.Tensor] = []
        for index in range(2):
            if hasattr(os, "memfd_create"):
                fd = os.memfd_create(f"rl_system-weights-{index}")  # open for the process's lifetime
                os.ftruncate(fd, nbytes)
                path = f"/proc/{os.getpid()}/fd/{fd}"
                self.slots.append(torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8))
            else:
                path = None
                self.slots.append(torch.empty(nbytes, dtype=torch.uint8))
            slot_version(self.slots[-1])[0] = -1  # holds no version yet
            self.paths.append(path)

    def data(self, version: int) -> np.ndarray:
        """The packed bytes of `version`, while its slot still holds it."""
        return slot_data(self.slots[version % 2], version)

    def pack(self, named_params, version: int) -> dict:
        """pack_weights into the slot of `version`; the result also names the slot's shared path."""
        slot = self.slots[version % 2]
        slot_version(slot)[0] = -1  # a reader never takes a half-written slot for a whole one
        packed = pack_weights(named_params, version, self.dtype,
                              out=slot[SLOT_HEADER_BYTES:].view(dtype_from_name(self.dtype)))
        slot_version(slot)[0] = version
        return {**packed, "shared_path": self.paths[version % 2]}


    def store(self, packed: dict) -> dict:
        """Copies a publish's bytes (`packed` with its data) into the slot of its version, for a
        reader in another process of this node (a vLLM engine's worker); returns it as `pack` does."""
        slot = self.slots[packed["version"] % 2]
        slot_version(slot)[0] = -1
        slot[SLOT_HEADER_BYTES:].copy_(torch.from_numpy(packed["data"]))
        slot_version(slot)[0] = packed["version"]
        return {**packed, "shared_path": self.paths[packed["version"] % 2]}


def slot_reference(packed: dict) -> dict:
    """What a reader on this node needs to map and check a published version: no bytes, no handles."""
    return {key: packed[key] for key in ("version", "dtype", "manifest", "shared_path")}


class SharedWeightsReader:
    """A reader's side of PublishSlots on the publisher's node: maps each slot once (its pages stay
    mapped between loads) and checks that the slot still holds the version the publish names."""

    def __init__(self):
        self._mapped: dict[str, torch.Tensor] = {}

    def read(self, packed: dict) -> dict:
        """`packed` (from PublishSlots.pack, its data left behind) with the slot's bytes as its data."""
        path = packed["shared_path"]
        if path not in self._mapped:
            nbytes = slot_nbytes(sum(numel for *_, numel in packed["manifest"]), packed["dtype"])
            self._mapped[path] = torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)
        return {**packed, "data": slot_data(self._mapped[path], packed["version"])}
