"""Weight sync through a process group (weight_sync.method=broadcast): learner rank 0 sends the
policy to the rollout engines in buckets, device to device (NCCL on GPUs, gloo on CPU), instead of
packing it into a host slot that every reader maps.

One sync is: a manifest exchange through the group's store (version, names, shapes; every receiver
checks them against its model and answers with its dtype or a one-line error) before a single byte
is sent; then the flat publish buffer (weights.pack_weights' layout, in the receivers' dtype) in
buckets of at most `bucket_mib`, each broadcast from rank 0 straight into its slice of the
receivers' flat buffer. The whole sync has a deadline: the group's timeout, and the time left
checked between buckets. Pure torch.distributed: the group is its own (a TCPStore and a
ProcessGroupGloo / ProcessGroupNCCL), beside any default group a learner rank has already joined.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from rl_system.models import dtype_from_name
from rl_system.weights import WeightSyncError, check_packed_weights

SENDER = 0  # the learner's rank 0 is the group's rank 0; rollout engines are ranks 1..world_size-1


@dataclass
class SyncGroup:
    store: dist.Store
    group: dist.ProcessGroup
    rank: int
    world_size: int
    device: torch.device
    timeout_s: float
    rounds: int = 0  # syncs so far: each one's store keys are its own


def open_sync_group(host: str, port: int, rank: int, world_size: int, device: torch.device | str = "cpu",
                    timeout_s: float = 120.0) -> SyncGroup:
    """Joins the sync group: rank 0 (the sender) serves its store on host:port. Blocks until all
    world_size ranks have joined; raises WeightSyncError once timeout_s passes without them."""
    device = torch.device(device)
    timeout = timedelta(seconds=timeout_s)
    try:
        store = dist.TCPStore(host, port, world_size, is_master=rank == SENDER, timeout=timeout,
                              wait_for_workers=True)
        if device.type == "cuda":
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            group = dist.ProcessGroupNCCL(dist.PrefixStore("nccl", store), rank, world_size, options)
        else:
            group = dist.ProcessGroupGloo(dist.PrefixStore("gloo", store), rank, world_size, timeout)
    except (RuntimeError, dist.DistStoreError) as error:  # DistStoreError: a rank did not join in time
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightSyncError(f"weight sync group {host}:{port}: rank {rank} of {world_size} could not join "
                              f"within {timeout_s:g} s ({first_line})") from None
    return SyncGroup(store, group, rank, world_size, device, timeout_s)


def bucket_ranges(manifest: list, bucket_numel: int) -> list[tuple[int, int]]:
    """[start, end) ranges of the flat buffer, each whole tensors of at most bucket_numel values
    (a larger tensor alone); bucket_numel 0: one range per tensor (tensor by tensor)."""
    ranges, start, end = [], 0, 0
    for _, _, offset, numel in manifest:
        if end > start and (bucket_numel == 0 or offset + numel - start > bucket_numel):
            ranges.append((start, end))
            start = offset
        end = offset + numel
    if end > start:
        ranges.append((start, end))
    return ranges


class Deadline:
    def __init__(self, seconds: float, what: str):
        self.end, self.seconds, self.what = time.monotonic() + seconds, seconds, what

    def left(self) -> timedelta:
        left = self.end - time.monotonic()
        if left <= 0:
            raise WeightSyncError(f"{self.what} did not finish within {self.seconds:g} s")
        return timedelta(seconds=left)


def _wait(work, deadline: Deadline) -> None:
    try:
        work.wait(deadline.left())
    except RuntimeError as error:
        raise WeightSyncError(f"{deadline.what}: {str(error).strip().splitlines()[0]}") from None


def send_weights(sync: SyncGroup, layout: list[tuple[str, tuple]], named_params, version: int,
                 bucket_mib: float) -> dict:
    """Rank 0's side of one sync. `layout`: (name, shape) of every tensor named_params will yield, in
    order (checked by the receivers before anything is sent); named_params: (name, tensor) of the
    full weights, read one at a time (a ZeRO-3 gather may hand each out only while it is read).
    Returns {"bytes", "buckets", "seconds"}."""
    deadline = Deadline(sync.timeout_s, f"weight sync of version {version}")
    start = time.perf_counter()
    sync.rounds += 1
    for rank in range(sync.world_size):  # the last round's keys: every receiver answered, nobody reads them again
        sync.store.delete_key(f"reply/{sync.rounds - 1}/{rank}" if rank else f"manifest/{sync.rounds - 1}")
    sync.store.set(f"manifest/{sync.rounds}", json.dumps({"version": version, "layout": layout}))
    replies = [f"reply/{sync.rounds}/{rank}" for rank in range(1, sync.world_size)]
    try:
        sync.store.wait(replies, deadline.left())
    except (RuntimeError, dist.DistStoreError):
        missing = [key.rsplit("/", 1)[1] for key in replies if not sync.store.check([key])]
        raise WeightSyncError(f"weight sync of version {version}: rollout rank(s) {', '.join(missing)} did not "
                              f"answer the manifest within {sync.timeout_s:g} s") from None
    answers = [json.loads(sync.store.get(key)) for key in replies]
    errors = [answer["error"] for answer in answers if answer["error"]]
    if errors:
        raise WeightSyncError(errors[0])
    dtypes = {answer["dtype"] for answer in answers}
    if len(dtypes) != 1:
        raise WeightSyncError(f"weight sync: rollout engines hold different dtypes {sorted(dtypes)}")
    dtype = dtype_from_name(dtypes.pop())
    manifest = flat_manifest(layout)
    ranges = bucket_ranges(manifest, int(bucket_mib * 2**20) // dtype.itemsize)
    bucket = torch.empty(max(end - begin for begin, end in ranges), dtype=dtype, device=sync.device)
    entries = iter(zip(manifest, named_params))
    for begin, end in ranges:
        filled = begin
        while filled < end:
            (name, shape, offset, numel), (sent_name, tensor) = next(entries)
            if sent_name != name or tuple(tensor.shape) != tuple(shape):
                raise WeightSyncError(f"weight sync: sender yielded '{sent_name}' {tuple(tensor.shape)} where its "
                                      f"layout says '{name}' {tuple(shape)}")
            bucket[offset - begin:offset - begin + numel].copy_(tensor.detach().reshape(-1))
            filled = offset + numel
        _wait(sync.group.broadcast([bucket[:end - begin]], dist.BroadcastOptions()), deadline)
    return {"bytes": ranges[-1][1] * dtype.itemsize, "buckets": len(ranges),
            "seconds": time.perf_counter() - start}


def flat_manifest(layout: list) -> list[tuple[str, tuple, int, int]]:
    """pack_weights' manifest for `layout`: (name, shape, offset, numel) in one flat buffer."""
    manifest, offset = [], 0
    for name, shape in layout:
        numel = 1
        for size in shape:
            numel *= size
        manifest.append((name, tuple(shape), offset, numel))
        offset += numel
    return manifest


def receive_weights(sync: SyncGroup, expected_version: int, params: dict[str, tuple], dtype: str,
                    bucket_mib: float) -> dict:
    """A rollout engine's side of one sync: reads the manifest, checks it (version, names, shapes
    against `params`: name -> shape) and answers; then receives the buckets into one flat buffer of
    `dtype` on sync.device. Returns it in the publish format (weights.pack_weights' dict, its data a
    tensor), for the backend's own loader. `bucket_mib` must be the sender's."""
    deadline = Deadline(sync.timeout_s, f"weight sync of version {expected_version}")
    sync.rounds += 1
    reply = f"reply/{sync.rounds}/{sync.rank}"
    try:
        sync.store.wait([f"manifest/{sync.rounds}"], deadline.left())
    except (RuntimeError, dist.DistStoreError):
        raise WeightSyncError(f"weight sync: no manifest of version {expected_version} from the learner within "
                              f"{sync.timeout_s:g} s") from None
    sent = json.loads(sync.store.get(f"manifest/{sync.rounds}"))
    manifest = flat_manifest(sent["layout"])
    packed = {"version": sent["version"], "dtype": dtype, "manifest": manifest}
    try:
        check_packed_weights(packed, expected_version, params)
    except WeightSyncError as error:
        sync.store.set(reply, json.dumps({"error": f"rollout rank {sync.rank}: {error}", "dtype": dtype}))
        raise
    sync.store.set(reply, json.dumps({"error": "", "dtype": dtype}))
    target = dtype_from_name(dtype)
    flat = torch.empty(sum(numel for *_, numel in manifest), dtype=target, device=sync.device)
    for begin, end in bucket_ranges(manifest, int(bucket_mib * 2**20) // target.itemsize):
        _wait(sync.group.broadcast([flat[begin:end]], dist.BroadcastOptions()), deadline)
    return {**packed, "data": flat}
