"""`make gpu-check`: the GPU path in one short run, for a machine with one GPU (under 8 minutes).

Three GRPO steps of the demo with HF rollouts, then three with vLLM rollouts; in each, one learner
rank and one rollout worker share the GPU by fractions. After every weight sync the rollout's
log-probs of the tokens it sampled are held against the learner's (a stale or garbled publish shows
as a large gap), and at the end every worker must hold the learner's version. Prints tokens/s and
the log-prob mismatch per step; exits non-zero on any failure, and with 2 when there is no GPU.

`--local MODEL DATA`: for a GPU machine without Ray or vLLM (no package index to install them
from): the same driver loop in one process (rl_system.local.LocalWorkers: a DeepSpeed rank with
NCCL and the HF rollout model on the GPU), on a given model directory and json/jsonl problem file.

`--colocate` (`make gpu-check-colocate`): the same runs with cluster.colocate=true, so each step
releases the rollout copy (HF: its weights freed; vLLM: sleep level 2) before training and restores
it before the publish; prints the rollout's GiB in each phase and the learner's peak, and fails if
the release freed nothing. With two or more GPUs it also sends the demo model's weights from cuda:0
to cuda:1 in NCCL buckets (weight_sync.method=broadcast; NCCL cannot pair two ranks on one GPU).

    python benchmarks/gpu_check.py [--steps 3] [--backends hf,vllm] [--colocate]
    python benchmarks/gpu_check.py --local MODEL_DIR PROBLEMS.jsonl [--colocate] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from rl_system.pipeline import r1_zero

MAX_MEAN_MISMATCH = 0.05  # nats per token, rollout (16-bit) vs learner (fp32 master weights, 16-bit autocast)


def check_backend(backend: str, steps: int, output: str, colocate: bool) -> list[str]:
    import ray
    from _common import demo_config

    from actors.controller import RayWorkers, connect

    cfg = demo_config([f"rollout.backend={backend}", f"num_steps={steps}", f"output_dir={output}/{backend}",
                       "learner.num_ranks=1", "learner.num_gpus=0.5", "learner.micro_batch_size=32",
                       "rollout.num_workers=1", "rollout.num_gpus=0.4", "rollout.gpu_memory_utilization=0.3",
                       "eval_before=false", "eval_after=false", "checkpoint_every=0", f"cluster.colocate={colocate}"])
    failures = []
    connect(cfg)
    try:
        workers = RayWorkers(cfg)
        start = time.perf_counter()
        r1_zero.train(cfg, workers)
        wall = time.perf_counter() - start
        if workers.rollout_versions() != [steps]:
            failures.append(f"{backend}: rollout workers hold versions {workers.rollout_versions()}, expected {steps}")
        workers.shutdown()
    finally:
        ray.shutdown()
    return failures + check_metrics(backend, f"{output}/{backend}", steps, wall)


def check_local(model: str, data: str, steps: int, output: str, colocate: bool, overrides: list[str]) -> list[str]:
    from rl_system.config import load_config
    from rl_system.local import LocalWorkers

    cfg = load_config("configs/r1_zero.yaml", [
        f"model.path={model}", "data.source=file", f"data.path={data}", "data.num_eval=4", f"num_steps={steps}",
        f"output_dir={output}/local", "learner.num_ranks=1", "learner.num_gpus=1", "learner.micro_batch_size=32",
        "rollout.num_gpus=1", "eval_before=false", "eval_after=false", "checkpoint_every=0", f"cluster.colocate={colocate}",
        "reward.functions=[{name: format, weight: 0.5}, {name: 'tests.reward_fixtures:length_bonus', weight: 0.1}]",
        *overrides])
    workers = LocalWorkers(cfg)
    try:
        print(f"learner on {workers.learner.device}, rollout on {workers.device}", flush=True)
        start = time.perf_counter()
        r1_zero.train(cfg, workers)
        wall = time.perf_counter() - start
        failures = [] if workers.policy_version == steps else [
            f"local: the rollout model holds version {workers.policy_version}, expected {steps}"]
        if workers.learner.autocast is not None:
            failures += check_engine_autocast(workers.learner.engine, workers.learner.autocast)
    finally:
        workers.shutdown()
    return failures + check_metrics("local", f"{output}/local", steps, wall)


def check_engine_autocast(engine, dtype: torch.dtype) -> list[str]:
    """The learner's forward runs under torch.autocast: its logits must come out in that dtype."""
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        logits = engine(input_ids=torch.tensor([[1, 2, 3]], device=engine.device)).logits
    print(f"learner forward under {dtype} autocast gives {logits.dtype} logits", flush=True)
    return [] if logits.dtype == dtype else [
        f"the learner's forward ignored {dtype} autocast ({logits.dtype} logits): DeepSpeed turned it off"]


def check_metrics(name: str, run_dir: str, steps: int, wall: float) -> list[str]:
    """Per step: tokens/s and the rollout-vs-learner log-prob gap, which a stale publish would blow up."""
    failures = []
    lines = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    for m in lines:
        print(f"{name} step {m['step']}: {m['tokens_per_s/step']:.0f} tokens/s over the step, "
              f"|rollout - learner| log-prob mean {m['behaviour_logprob_abs_diff']:.4f} "
              f"max {m['behaviour_logprob_abs_diff_max']:.4f}, loss {m['loss']:+.4f}", flush=True)
        if not m["behaviour_logprob_abs_diff"] < MAX_MEAN_MISMATCH:
            failures.append(f"{name} step {m['step']}: rollout and learner log-probs differ by "
                            f"{m['behaviour_logprob_abs_diff']:.4f} a token (> {MAX_MEAN_MISMATCH}): stale weights?")
        if "memory/rollout_released_gib" in m:  # cluster.colocate: what each phase left on the GPU
            print(f"{name} step {m['step']}: rollout GiB generating {m['memory/rollout_generate_gib']:.2f}, released "
                  f"{m['memory/rollout_released_gib']:.2f}, restored {m['memory/rollout_restored_gib']:.2f}; learner "
                  f"peak {m['learner/peak_memory_gib']:.2f} GiB", flush=True)
            if not m["memory/rollout_released_gib"] < m["memory/rollout_generate_gib"]:
                failures.append(f"{name} step {m['step']}: releasing the rollout copy freed no GPU memory")
    if len(lines) != steps:
        failures.append(f"{name}: {len(lines)} steps logged, expected {steps}")
    print(f"{name}: {steps} steps in {wall:.0f} s", flush=True)
    return failures


def nccl_receiver(model: str, port: int, outcome) -> None:
    from rl_system.models import load_model
    from rl_system.weight_broadcast import open_sync_group, receive_weights
    from rl_system.weights import load_packed_weights

    rollout = load_model(model).to("cuda:1", torch.bfloat16)
    sync = open_sync_group("127.0.0.1", port, 1, 2, "cuda:1", timeout_s=120)
    packed = receive_weights(sync, 1, {n: p.shape for n, p in rollout.named_parameters()}, "bfloat16", 64)
    load_packed_weights(rollout, packed, expected_version=1)
    outcome.put(sum(float(p.double().sum()) for p in rollout.parameters()))


def check_nccl_buckets(model: str) -> list[str]:
    """weight_sync.method=broadcast's NCCL path: the demo model from cuda:0 (fp32) to cuda:1 (bf16)."""
    if torch.cuda.device_count() < 2:
        print("NCCL buckets: skipped, one GPU (NCCL cannot put both ranks on it)", flush=True)
        return []
    import socket

    import torch.multiprocessing as mp

    from rl_system.models import load_model
    from rl_system.weight_broadcast import open_sync_group, send_weights

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    outcome = context.Queue()
    process = context.Process(target=nccl_receiver, args=(model, port, outcome))
    process.start()
    learner = load_model(model).to("cuda:0")
    sync = open_sync_group("127.0.0.1", port, 0, 2, "cuda:0", timeout_s=120)
    layout = [(n, tuple(p.shape)) for n, p in learner.named_parameters()]
    sent = send_weights(sync, layout, learner.named_parameters(), 1, bucket_mib=64)
    received, expected = outcome.get(timeout=120), sum(float(p.to(torch.bfloat16).double().sum())
                                                       for p in learner.parameters())
    process.join(timeout=60)
    print(f"NCCL buckets: {sent['bytes'] / 2**20:.0f} MiB in {sent['buckets']} buckets, {sent['seconds'] * 1000:.0f} ms "
          f"({sent['bytes'] / 2**30 / sent['seconds']:.1f} GiB/s)", flush=True)
    return [] if abs(received - expected) <= 1e-6 * abs(expected) else [
        f"NCCL buckets: the receiver's weights sum to {received}, the learner's cast ones to {expected}"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--output", default="runs/gpu_check")
    parser.add_argument("--local", nargs=2, metavar=("MODEL", "DATA"), help="one process, no Ray or vLLM")
    parser.add_argument("--colocate", action="store_true", help="rollout and learner take turns on the GPU")
    parser.add_argument("overrides", nargs="*", help="with --local: config key=value, e.g. learner.micro_batch_size=8")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no GPU visible to torch on this machine (torch.cuda.is_available() is False); "
              "nothing was checked. Run `make gpu-check` on a machine with a CUDA GPU.", file=sys.stderr)
        return 2
    from rl_system.models import detect

    hardware = detect("cuda:0")
    print(f"gpu-check on {hardware.kind}, torch {torch.__version__}: dtype keys set to auto resolve to "
          f"{hardware.auto()} here ({', '.join(f'{d} {level}' for d, level in hardware.support)})", flush=True)
    failures = []
    if args.local:
        failures += check_local(*args.local, args.steps, args.output, args.colocate, args.overrides)
    else:
        for backend in args.backends.split(","):
            failures += check_backend(backend, args.steps, args.output, args.colocate)
    if args.colocate:
        failures += check_nccl_buckets(args.local[0] if args.local else "models/smollm2-135m-instruct")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("gpu-check: " + ("FAILED" if failures else "passed"), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
