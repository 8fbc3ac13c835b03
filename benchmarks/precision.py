"""Each dtype this host offers on the demo's shapes, side by side in one run, and what auto picks.

Per dtype (float32, bfloat16, float16): one learner micro-batch of the demo (SmolLM2-135M-Instruct,
the demo's real prompts, each prompt run once per group as the learner does, --completion-tokens a
completion) through forward, backward and an AdamW step, under autocast over fp32 weights (float16
with torch.amp's loss scaler), as the learner runs it; and one rollout worker's generate call of the
demo (its share of prompts x G samples of up to max_new_tokens, stop at </answer>), with the weights
in that dtype. Medians of --repeats after a warm-up; a dtype whose first timing passes --slow-s is
timed once (bf16 training on a CPU without bf16 units takes minutes). With --demo-steps N, the demo
itself then runs N steps on Ray with the dtype keys left to auto and set to each dtype.

    python benchmarks/precision.py [--threads 2] [--repeats 3] [--demo-steps 0]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _common import demo_config, grpo_run, machine

from rl_system.config import DTYPES
from rl_system.data import load_splits
from rl_system.models import TrainingPrecision, detect, load_policy, load_tokenizer, resolve
from rl_system.rollout import HFSampler
from rl_system.training import Sample, collate, completion_logprobs


def timed(fn, repeats: int, slow_s: float) -> float:
    """Median seconds of `repeats` calls after one warm-up, or the warm-up's alone past slow_s."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > slow_s:
        return first
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def learner_step(cfg, dtype: str, batch: dict, hardware):
    """forward + backward + AdamW step of one micro-batch, as the learner computes in `dtype`."""
    precision = TrainingPrecision.of(resolve(dtype, "learner.autocast_dtype", hardware))
    model = load_policy(cfg.model, "float32", "cpu").train()
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learner.lr)
    scaler = precision.grad_scaler("cpu")

    def step():
        with torch.autocast("cpu", dtype=precision.autocast, enabled=precision.autocast is not None):
            logprobs = completion_logprobs(model, batch, cfg.rollout.temperature, cfg.learner.share_prompt)
        loss = -(logprobs.float() * batch["mask"]).sum() / batch["mask"].sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--completion-tokens", type=int, default=48)
    parser.add_argument("--slow-s", type=float, default=60.0, help="past this, a dtype is timed once")
    parser.add_argument("--demo-steps", type=int, default=0, help="also run the demo this many steps per dtype")
    parser.add_argument("--output", default="runs/bench/precision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = demo_config([])
    hardware = detect("cpu")
    auto = hardware.auto()
    tokenizer = load_tokenizer(cfg.model.path)
    prompts = cfg.prompts_per_step // cfg.rollout.num_workers  # one rollout worker's share, one learner rank's groups
    problems = load_splits(cfg.data)[0][:prompts]
    groups = HFSampler(cfg, tokenizer, load_policy(cfg.model, "float32", "cpu").eval()).sample(problems, 0)
    rng = np.random.default_rng(0)
    n = args.completion_tokens  # every completion this long, so each dtype does the same work
    samples = [Sample(g.prompt_ids, rng.integers(100, 49000, n), np.zeros(n, np.float32), 1.0, 0)
               for g in groups for _ in g.completion_ids]
    batch = collate(samples, tokenizer.pad_token_id, torch.device("cpu"))
    print(f"host: {machine()}")
    print(f"hardware: {hardware.kind}; {', '.join(f'{d} {level}' for d, level in hardware.support)}; auto picks {auto}")
    print(f"learner: {len(samples)} sequences ({len(groups)} prompts x {cfg.rollout.group_size}) of "
          f"{batch['prompt_ids'].shape[1]} prompt + {n} completion tokens, forward + backward + AdamW; "
          f"rollout: {len(problems)} prompts x {cfg.rollout.group_size} samples, <= {cfg.rollout.max_new_tokens} "
          f"new tokens; {args.threads} threads")
    rows = {}
    for dtype in DTYPES:
        train_s = timed(learner_step(cfg, dtype, batch, hardware), args.repeats, args.slow_s)
        sampler = HFSampler(cfg, tokenizer, load_policy(cfg.model, dtype, "cpu").eval())
        torch.manual_seed(0)
        generate_s = timed(lambda: sampler.sample(problems, 0), args.repeats, args.slow_s)
        rows[dtype] = (train_s, generate_s)
        print(f"  {dtype}: learner step {train_s:.2f} s, generate {generate_s:.2f} s", flush=True)
    fastest = min(DTYPES, key=lambda d: rows[d][0])
    print("\n| dtype | native here | learner step (s) | x float32 | generate call (s) | x float32 |")
    print("|---|---|---:|---:|---:|---:|")
    for dtype in DTYPES:
        train_s, generate_s = rows[dtype]
        mark = " (auto)" if dtype == auto else ""
        print(f"| {dtype}{mark} | {hardware.level(dtype)} | {train_s:.2f} | {train_s / rows['float32'][0]:.2f} | "
              f"{generate_s:.2f} | {generate_s / rows['float32'][1]:.2f} |")
    print(f"auto ({auto}) learner step / the fastest dtype's ({fastest}): {rows[auto][0] / rows[fastest][0]:.2f}x "
          f"(target <= 1.1x); bfloat16 (the old default) / auto: {rows['bfloat16'][0] / rows[auto][0]:.1f}x")
    if args.demo_steps:
        demo_steps(args.demo_steps, Path(args.output), auto)


def demo_steps(steps: int, output: Path, auto: str) -> None:
    """The demo on Ray for `steps` steps, dtype keys auto and then each dtype set: seconds a step."""
    print(f"\nThe demo, {steps} steps each (no evaluation), time/step and its parts (means)")
    print("| rollout.dtype / learner.autocast_dtype | step (s) | generate (s) | train (s) | accuracy |")
    print("|---|---:|---:|---:|---:|")
    for dtype in ("auto", *DTYPES):
        run = grpo_run([f"num_steps={steps}", "eval_before=false", "eval_after=false", "checkpoint_every=0",
                        f"rollout.dtype={dtype}", f"learner.autocast_dtype={dtype}"], output / dtype)
        means = {k: statistics.mean(m[k] for m in run["steps"]) for k in ("time/step", "time/generate", "time/train",
                                                                           "accuracy")}
        label = f"auto ({auto})" if dtype == "auto" else dtype
        print(f"| {label} | {means['time/step']:.1f} | {means['time/generate']:.1f} | {means['time/train']:.1f} | "
              f"{means['accuracy']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
