"""rl_system against TRL's GRPOTrainer on the demo, measured side by side in one run.

Both train SmolLM2-135M-Instruct on the demo's train split with the same prompt text (system
prompt, one-shot example, assistant turn prefilled with `<think>`), 4 prompts x 8 completions a
step, at most 48 new tokens, temperature 1, AdamW lr 1e-5, beta 0.001, clip 0.2, group-std
advantages, per-sequence token-mean loss, grad-norm clip 1, the precision this host resolves (bf16
compute over fp32 weights where the CPU has native bf16, else fp32: TRL's bf16 flag follows it), the
same attention kernel (model.attn_implementation) and micro-batch size, and the same reward
functions (0.5 x strict format + accuracy) for the same number of steps. Then the demo's held-out
greedy evaluation scores both final policies.

samples/s: completions per second over steps 2..N (step 1 warms up); TRL's steps are timed by
a callback at each optimizer step's end. Time to the demo's accuracy: the run's wall time if its
held-out accuracy after N steps reaches --target, else "not reached in N steps". rl_system's wall
time counts Ray's start, the final checkpoint and its held-out evaluation too; TRL's only the
model load and training (its evaluation runs afterwards, untimed).

    pip install trl==1.16.0     # (make bench installs it)
    python benchmarks/trl_grpo.py [--steps 25] [--target 0.781]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from _common import grpo_run, held_out_evaluation, machine

from rl_system.data import format_prompt, load_splits
from rl_system.models import load_policy, load_tokenizer
from rl_system.rewards import resolve_reward


def trl_run(cfg, steps: int, output: Path, dtype: str) -> dict:
    """`dtype`: the compute dtype rl_system's learner resolved on this host, for TRL's bf16 / fp16 flags."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = load_tokenizer(cfg.model.path)
    train_set, _ = load_splits(cfg.data)
    prefill = cfg.data.prefill
    dataset = Dataset.from_list([
        {"prompt": format_prompt(tokenizer, p.question, cfg.data.system_prompt, prefill), "answer": p.answer, **p.columns}
        for p in train_set])

    # TRL hands reward functions the completion without the prefill; ours see the whole assistant turn.
    def with_prefill(spec):
        reward = resolve_reward(spec.name)

        def scored(prompts, completions, **columns):
            return reward(prompts, [prefill + c for c in completions], **columns, **spec.kwargs)
        scored.__name__ = reward.__name__
        return scored

    group, micro = cfg.rollout.group_size, cfg.learner.micro_batch_size
    args = GRPOConfig(
        output_dir=str(output), max_steps=steps, per_device_train_batch_size=micro, num_generations=group,
        gradient_accumulation_steps=cfg.prompts_per_step * group // micro,  # one optimizer step per 4 x 8 completions
        max_completion_length=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature, top_p=1.0, top_k=0,
        learning_rate=cfg.learner.lr, beta=cfg.learner.beta, epsilon=cfg.learner.epsilon_low,
        loss_type="grpo", scale_rewards="group", max_grad_norm=cfg.learner.grad_clip, num_iterations=1,
        reward_weights=[r.weight for r in cfg.reward.functions], use_cpu=not torch.cuda.is_available(),
        bf16=dtype == "bfloat16", fp16=dtype == "float16",
        gradient_checkpointing=False,  # TRL turns it on by default; rl_system does not recompute activations
        logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed, dataloader_num_workers=0)
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    start = time.perf_counter()
    trainer = GRPOTrainer(model=load_policy(cfg.model, "float32", "cpu"), processing_class=tokenizer,
                          reward_funcs=[with_prefill(spec) for spec in cfg.reward.functions],
                          args=args, train_dataset=dataset, callbacks=[StepClock()])
    trainer.train()
    wall = time.perf_counter() - start
    trainer.save_model(str(output / "final"))
    tokens = [log["completions/mean_length"] for log in trainer.state.log_history if "completions/mean_length" in log]
    return {"step_s": (step_ends[-1] - step_ends[0]) / (len(step_ends) - 1), "wall_s": wall,
            "mean_length": sum(tokens) / len(tokens), "model": str(output / "final")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=25, help="the demo's num_steps")
    parser.add_argument("--target", type=float, default=0.781, help="the demo's held-out accuracy (README)")
    parser.add_argument("--output", default="runs/bench/trl_grpo")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    os.environ.setdefault("MPLCONFIGDIR", str(Path(".cache/matplotlib").resolve()))
    ours = grpo_run([f"num_steps={args.steps}", "eval_before=false", "checkpoint_every=0"], out / "rl_system")
    cfg = ours["cfg"]
    dtype = next(r["dtype"] for r in ours["results"]["precision"] if r["role"] == "learner")
    trl = trl_run(cfg, args.steps, out / "trl", dtype)
    trl_after = held_out_evaluation(trl["model"])
    per_step = cfg.prompts_per_step * cfg.rollout.group_size
    ours_step_s = sum(m["time/step"] for m in ours["steps"][1:]) / (len(ours["steps"]) - 1)
    ours_after = ours["results"]["after"]
    rows = [("rl_system (Ray, 2 rollout workers, 2 DeepSpeed ranks)", per_step / ours_step_s, ours["wall_s"], ours_after,
             sum(m["completion_length"] for m in ours["steps"]) / len(ours["steps"])),
            ("TRL GRPOTrainer (one process)", per_step / trl["step_s"], trl["wall_s"], trl_after, trl["mean_length"])]
    print(f"\nhost: {machine()}; both systems compute in {dtype}")
    print(f"{args.steps} steps of {cfg.prompts_per_step} prompts x {cfg.rollout.group_size} completions, "
          f"{cfg.rollout.max_new_tokens} new tokens at most")
    print("| system | samples/s (steps 2..N) | mean completion tokens | run wall time (s) | held-out accuracy after | "
          f"time to {args.target:.1%} |\n|---|---:|---:|---:|---:|---|")
    for name, rate, wall, after, length in rows:
        reached = f"{wall:.0f} s" if after["accuracy"] >= args.target else f"not reached in {args.steps} steps"
        print(f"| {name} | {rate:.2f} | {length:.1f} | {wall:.0f} | {after['accuracy']:.1%} | {reached} |")
    print(f"samples/s, rl_system / TRL: {rows[0][1] / rows[1][1]:.2f}x (target >= 2x)")


if __name__ == "__main__":
    main()
