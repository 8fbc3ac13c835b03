"""Weight publish against a raw copy of the same bytes, measured side by side in one run.

publish:  RayWorkers.sync_weights, as in training: learner rank 0 casts the weights to the rollout
          dtype into one of its two shared-memory slots and puts their description in the object
          store; every rollout worker maps the slot, checks the manifest and version, and points its
          parameters at it (a worker on another node gets the bytes through the object store).
raw copy: the same number of bytes copied once per rollout worker, in one process (torch copy_
          between flat buffers): the least any publish has to move.

--broadcast: weight_sync.method=broadcast's transport (rl_system/weight_broadcast.py) between two
          processes over gloo (NCCL on GPUs: benchmarks/gpu_check.py --colocate), in buckets of
          --bucket-mib against tensor by tensor, on the demo model and a random ~0.4B Llama.
--placement: the demo's step time with cluster.colocate (rollout and learner take turns on one
          bundle) against split placement (each role its own), --steps steps each.

    python benchmarks/weight_sync.py [--model models/smollm2-135m-instruct] [--repeats 10] [--warmup 3]
    python benchmarks/weight_sync.py --broadcast [--bucket-mib 256] [--repeats 5]
    python benchmarks/weight_sync.py --placement [--steps 3]
"""
from __future__ import annotations

import argparse
import socket
import statistics
from pathlib import Path

import ray
import torch
import torch.multiprocessing as mp
from _common import grpo_run, machine, median_seconds
from zero_memory import SIZES

from actors.controller import RayWorkers, connect, resolve_paths
from rl_system.config import load_config
from rl_system.models import dtype_from_name, publish_dtype


def broadcast_receiver(port: int, layout: list, rounds: list[float]) -> None:
    from rl_system.weight_broadcast import open_sync_group, receive_weights

    sync = open_sync_group("127.0.0.1", port, 1, 2, timeout_s=600)
    shapes = {name: shape for name, shape in layout}
    for version, bucket_mib in enumerate(rounds, 1):
        receive_weights(sync, version, shapes, "float32", bucket_mib)


def broadcast_seconds(model: torch.nn.Module, bucket_mibs: list[float], repeats: int, warmup: int) -> list[float]:
    """Median seconds of one sync (manifest exchange and every bucket) at each bucket size; 0: tensor by tensor."""
    from rl_system.weight_broadcast import open_sync_group, send_weights

    layout = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    rounds = [mib for mib in bucket_mibs for _ in range(warmup + repeats)]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    receiver = mp.get_context("spawn").Process(target=broadcast_receiver, args=(port, layout, rounds))
    receiver.start()
    sync = open_sync_group("127.0.0.1", port, 0, 2, timeout_s=600)
    seconds = [send_weights(sync, layout, model.named_parameters(), version, mib)["seconds"]
               for version, mib in enumerate(rounds, 1)]
    receiver.join()
    per_size = warmup + repeats
    return [statistics.median(seconds[i * per_size + warmup:(i + 1) * per_size]) for i in range(len(bucket_mibs))]


def random_llama(hidden_size: int, num_layers: int, intermediate_size: int, num_attention_heads: int,
                 num_key_value_heads: int) -> torch.nn.Module:
    """A random Llama of zero_memory.py's shapes, built in memory (only its tensors are sent)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=hidden_size, num_hidden_layers=num_layers,
                                        intermediate_size=intermediate_size, num_attention_heads=num_attention_heads,
                                        num_key_value_heads=num_key_value_heads, tie_word_embeddings=True))


def broadcast_benchmark(demo_model: str, bucket_mib: float, repeats: int, warmup: int) -> None:
    from rl_system.models import load_model

    print(machine())
    for name, model in [("demo", lambda: load_model(demo_model)), ("0.4B", lambda: random_llama(**SIZES["0.4B"]))]:
        model = model()
        nbytes = sum(p.numel() for p in model.parameters()) * 4
        tensors = len(list(model.parameters()))
        bucketed, one_by_one = broadcast_seconds(model, [bucket_mib, 0], repeats, warmup)
        print(f"{name}: {nbytes / 2**20:.0f} MiB fp32 in {tensors} tensors over gloo: {bucket_mib:g} MiB buckets "
              f"{bucketed * 1000:.0f} ms ({nbytes / 2**30 / bucketed:.2f} GiB/s), tensor by tensor "
              f"{one_by_one * 1000:.0f} ms ({nbytes / 2**30 / one_by_one:.2f} GiB/s); medians of {repeats} after "
              f"{warmup} warm-up", flush=True)
        del model


def placement_benchmark(steps: int) -> None:
    print(machine())
    for placement in ("split", "colocated"):
        run = grpo_run([f"num_steps={steps}", "learner.num_ranks=1", "rollout.num_workers=1", "eval_before=false",
                        "eval_after=false", "checkpoint_every=0", f"cluster.colocate={placement == 'colocated'}"],
                       Path(f"runs/bench_placement_{placement}"))
        step_s = statistics.median(m["time/step"] for m in run["steps"])
        memory = {k: round(v, 3) for k, v in run["steps"][-1].items() if k.startswith("memory/")}
        print(f"{placement}: median step {step_s:.1f} s over {steps} steps (1 learner rank, 1 rollout worker) {memory}",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--broadcast", action="store_true", help="bucketed gloo broadcast vs tensor by tensor")
    parser.add_argument("--bucket-mib", type=float, default=256.0)
    parser.add_argument("--placement", action="store_true", help="colocated vs split step time on the demo")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.broadcast:
        return broadcast_benchmark(args.model, args.bucket_mib, args.repeats, args.warmup)
    if args.placement:
        return placement_benchmark(args.steps)
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [f"model.path={args.model}",
                                                              "cluster.include_dashboard=false"]))
    connect(cfg)
    workers = RayWorkers(cfg)
    try:
        params = ray.get(workers.rollouts.actors[0].__ray_call__.remote(
            lambda worker: sum(p.numel() for p in worker.sampler.model.parameters())))
        # untrained: the learners hold version 0
        publish = median_seconds(lambda: workers.sync_weights(0), args.repeats, args.warmup)
        dtype = publish_dtype(workers.precision())
    finally:
        workers.shutdown()
        ray.shutdown()
    nbytes = params * torch.finfo(dtype_from_name(dtype)).bits // 8
    source = torch.ones(nbytes, dtype=torch.uint8)
    targets = [torch.zeros_like(source) for _ in range(cfg.rollout.num_workers)]
    raw = median_seconds(lambda: [target.copy_(source) for target in targets], args.repeats, args.warmup)
    print(f"{params / 1e6:.1f} M parameters = {nbytes / 2**20:.0f} MiB as {dtype}; "
          f"{cfg.learner.num_ranks} learner ranks (ZeRO-{cfg.learner.zero_stage}) -> {cfg.rollout.num_workers} rollout workers")
    print(f"weight publish {publish * 1000:.0f} ms, raw copy {raw * 1000:.0f} ms (medians of {args.repeats} "
          f"after {args.warmup} warm-up rounds): "
          f"ratio {publish / raw:.2f}x (target <= 2x)")


if __name__ == "__main__":
    main()
