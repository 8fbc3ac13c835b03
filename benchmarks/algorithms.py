"""The policy-optimisation variants side by side on the demo config (25 steps, the demo's held-out
split), each over the same seeds: held-out greedy accuracy after training, samples/s, clip
fraction, final entropy, and the learner's peak memory and update time (LoRA against full
fine-tuning). One run after another; nothing else should run beside it.

    python benchmarks/algorithms.py [--seeds 0 1] [--steps 25] [--only grpo lora]
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _common import grpo_run

# name -> (overrides, what it is)
VARIANTS = {
    "grpo": ([], "the demo: GRPO, one step per batch, k3 KL (beta 0.001)"),
    "ppo_epochs2_cliphigher": (["learner.ppo_epochs=2", "learner.epsilon_high=0.28"],
                               "2 passes over each batch (2 optimizer steps), clip-higher 0.28"),
    "dapo": (["dynamic_sampling.enabled=true", "reward.overlong_buffer=16", "learner.loss_agg=token-mean",
              "learner.epsilon_high=0.28", "learner.beta=0"],
             "dynamic sampling (4 rounds at most), soft overlong punishment (16 tokens), token-mean, "
             "clip-higher 0.28, no KL"),
    "gspo": (["learner.policy_loss=gspo", "learner.mini_batches=2", "learner.epsilon_low=3e-4",
              "learner.epsilon_high=4e-4"], "sequence-level ratio, 2 mini-batches, clip 3e-4 / 4e-4 (the paper's)"),
    "rloo": (["learner.advantage=rloo"], "leave-one-out baseline"),
    "reinforce_pp": (["learner.advantage=reinforce_pp"], "group mean, then batch mean/std normalisation"),
    "lora": (["learner.lora.r=16", "learner.lora.alpha=32", "learner.lr=1e-4"],
             "LoRA r=16 alpha=32 on every linear layer, lr 1e-4 (10x: adapters start at zero)"),
}


def measure(name: str, overrides: list[str], seed: int, steps: int, output: Path) -> dict:
    run = grpo_run([f"num_steps={steps}", f"seed={seed}", "data.seed=0", "eval_before=false", "checkpoint_every=0",
                    *overrides], output / f"{name}_seed{seed}")
    cfg, logged = run["cfg"], run["steps"]
    trained = [m for m in logged if "loss" in m]
    samples = logged[-1]["groups/generated"] * cfg.rollout.group_size  # with dynamic sampling's extra rounds
    seconds = sum(m["time/step"] for m in logged)
    return {"accuracy": run["results"]["after"]["accuracy"], "samples_per_s": samples / seconds,
            "trained_samples_per_s": len(trained) * cfg.prompts_per_step * cfg.rollout.group_size / seconds,
            "clip_fraction": statistics.mean(m["clip_fraction"] for m in trained),
            "final_entropy": trained[-1]["entropy"], "train_s": statistics.mean(m["time/train"] for m in trained),
            "peak_memory_gib": max(m["learner/peak_memory_gib"] for m in trained),
            "zero_std_groups": statistics.mean(m["zero_std_groups"] for m in logged)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--output", default="runs/bench/algorithms")
    args = parser.parse_args()
    out = Path(args.output).resolve()
    results = {}
    for name in args.only:
        results[name] = [measure(name, VARIANTS[name][0], seed, args.steps, out) for seed in args.seeds]
        (out / "results.json").write_text(json.dumps(results, indent=2))  # each variant kept as it finishes

    def avg(name: str, key: str) -> float:
        return statistics.mean(r[key] for r in results[name])

    print(f"\n{args.steps} steps of the demo config, seeds {args.seeds} (held-out accuracy per seed, then their mean)\n")
    print("| variant | held-out accuracy | samples/s | clip fraction | final entropy | learner update (s) "
          "| learner peak RSS (GiB) | all-equal groups |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for name in results:
        per_seed = " / ".join(f"{r['accuracy']:.1%}" for r in results[name])
        print(f"| {name} | {per_seed} (mean {avg(name, 'accuracy'):.1%}) | {avg(name, 'samples_per_s'):.2f} | "
              f"{avg(name, 'clip_fraction'):.3f} | {avg(name, 'final_entropy'):.3f} | {avg(name, 'train_s'):.1f} | "
              f"{avg(name, 'peak_memory_gib'):.2f} | {avg(name, 'zero_std_groups'):.0%} |")
    if "lora" in results and "grpo" in results:
        print(f"LoRA / full fine-tuning: learner peak RSS {avg('lora', 'peak_memory_gib') / avg('grpo', 'peak_memory_gib'):.2f}x, "
              f"update time {avg('lora', 'train_s') / avg('grpo', 'train_s'):.2f}x")
    for name in results:
        print(f"- {name}: {VARIANTS[name][1]}")


if __name__ == "__main__":
    main()
