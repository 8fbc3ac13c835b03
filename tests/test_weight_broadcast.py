"""weight_sync.method=broadcast's core (rl_system/weight_broadcast.py) for real over gloo: a sender
and a receiver in two spawned processes, no Ray."""
import socket

import pytest
import torch
import torch.multiprocessing as mp

from rl_system.weight_broadcast import bucket_ranges, flat_manifest, open_sync_group, receive_weights, send_weights
from rl_system.weights import WeightSyncError, load_packed_weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_policy(seed: int, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 300), torch.nn.ReLU(), torch.nn.Linear(300, 4)).to(dtype)


def receiver(port: int, version: int, outcome, shape_change: bool) -> None:
    """Rank 1: a bfloat16 copy of the policy (other weights), loaded from the sync; reports its state."""
    model = tiny_policy(seed=1, dtype=torch.bfloat16)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    if shape_change:
        shapes["2.weight"] = torch.Size([5, 300])
    try:
        sync = open_sync_group("127.0.0.1", port, 1, 2, timeout_s=20)
        packed = receive_weights(sync, version, shapes, "bfloat16", bucket_mib=0.002)
        loaded = load_packed_weights(model, packed, expected_version=version)
        outcome.put(("ok", loaded, {name: p.detach().clone() for name, p in model.state_dict().items()}))
    except WeightSyncError as error:
        outcome.put(("error", str(error), None))


def sync_once(version_sent: int, version_expected: int, shape_change: bool = False):
    context = mp.get_context("spawn")
    outcome, port = context.Queue(), free_port()
    process = context.Process(target=receiver, args=(port, version_expected, outcome, shape_change))
    process.start()
    learner = tiny_policy(seed=0)
    layout = [(name, tuple(p.shape)) for name, p in learner.named_parameters()]
    try:
        sync = open_sync_group("127.0.0.1", port, 0, 2, timeout_s=20)
        sent = send_weights(sync, layout, learner.named_parameters(), version_sent, bucket_mib=0.002)
        error = None
    except WeightSyncError as raised:
        sent, error = None, str(raised)
    received = outcome.get(timeout=60)
    process.join(timeout=30)
    return learner, sent, error, received


def test_receiver_holds_the_learners_weights_cast_and_the_version():
    learner, sent, error, (status, version, weights) = sync_once(3, 3)
    assert error is None and status == "ok" and version == 3
    assert sent["buckets"] > 1  # 2 KiB buckets: the 9.6 KiB first weight alone, the rest split
    for name, p in learner.state_dict().items():
        assert weights[name].dtype == torch.bfloat16
        assert torch.equal(weights[name], p.to(torch.bfloat16)), name


@pytest.mark.parametrize("sent, expected, shape_change, message", [
    (4, 3, False, "weight publish carries version 4, expected 3"),
    (3, 3, True, "parameter '2.weight' (4, 300) does not match this model"),
])
def test_a_mismatch_fails_on_both_sides_before_anything_is_sent(sent, expected, shape_change, message):
    _, _, error, (status, text, _) = sync_once(sent, expected, shape_change)
    assert status == "error" and message in text and "\n" not in text
    assert error is not None and message in error and "\n" not in error


def test_a_missing_receiver_trips_the_deadline():
    with pytest.raises(WeightSyncError, match=r"rank 0 of 2 could not join within 2 s"):
        open_sync_group("127.0.0.1", free_port(), 0, 2, timeout_s=2)


def test_buckets_hold_whole_tensors_and_a_large_one_alone():
    manifest = flat_manifest([("a", (3,)), ("b", (4,)), ("c", (10,)), ("d", (2,))])
    assert bucket_ranges(manifest, 8) == [(0, 7), (7, 17), (17, 19)]
    assert bucket_ranges(manifest, 0) == [(0, 3), (3, 7), (7, 17), (17, 19)]
