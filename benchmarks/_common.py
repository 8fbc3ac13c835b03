"""What several benchmarks share: a GRPO run of the demo config on Ray, and the demo's held-out
evaluation of any model directory."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import ray

from actors.controller import RayWorkers, connect, resolve_paths
from rl_system.cli import run_on_ray
from rl_system.config import TrainConfig, load_config
from rl_system.data import load_splits
from rl_system.models import detect, resolve
from rl_system.models.precision import cpu_flags, cpu_model_name
from rl_system.pipeline import r1_zero

DEMO_CONFIG = "configs/r1_zero.yaml"


def cli(*args: str) -> float:
    """One `python -m rl_system` command, its output passed through; its wall time."""
    print("\n$ python -m rl_system " + " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rl_system", *args], check=True)
    return time.perf_counter() - start


def median_seconds(fn, repeats: int, warmup: int) -> float:
    """Median wall time of `repeats` calls after `warmup` untimed ones (first calls allocate buffers
    and fault in pages)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def machine() -> str:
    """This host as every figure must name it: CPU model, its flags that decide precision, torch's kernels."""
    import torch

    return (f"{cpu_model_name()}, {os.cpu_count()} cores, flags {' '.join(cpu_flags()) or 'none of avx2/avx512'}, "
            f"torch {torch.__version__} kernels {torch.backends.cpu.get_cpu_capability()}")


def cpu_dtype(requested: str, key: str) -> str:
    """A dtype key resolved on this machine's CPU, as the run's workers resolve it there."""
    return resolve(requested, key, detect("cpu")).dtype


def demo_config(overrides: list[str], config: str = DEMO_CONFIG) -> TrainConfig:
    return resolve_paths(load_config(config, ["cluster.include_dashboard=false", *overrides]))


def grpo_run(overrides: list[str], output: Path, config: str = DEMO_CONFIG) -> dict:
    """`train` as the CLI runs it, on a fresh local Ray; its per-step metrics, held-out results and wall time."""
    shutil.rmtree(output, ignore_errors=True)
    cfg = demo_config([*overrides, f"output_dir={output}"], config)
    start = time.perf_counter()
    try:
        results = run_on_ray("train", cfg)
    finally:
        ray.shutdown()
    steps = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {"cfg": cfg, "steps": steps, "results": results, "wall_s": time.perf_counter() - start}


def held_out_evaluation(model_path: str, overrides: list[str] = ()) -> dict:
    """The demo's after-training evaluation (greedy, held-out split, rule graders) of a model directory."""
    cfg = demo_config([*overrides, f"model.path={model_path}"])
    connect(cfg)
    try:
        workers = RayWorkers(cfg, with_learner=False)
        try:
            return r1_zero.evaluate(workers, load_splits(cfg.data)[1], cfg)
        finally:
            workers.shutdown()
    finally:
        ray.shutdown()
