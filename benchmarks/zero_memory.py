"""Per-rank peak memory of one GRPO update with the KL's reference model, ZeRO-2 against ZeRO-3,
for random-initialised Llama models of about 0.2B and 0.4B parameters (SmolLM2's tokenizer and
vocabulary, built from a config: nothing downloaded). Two learner ranks as Ray actors, as a run
places them; each configuration on a fresh local Ray, so each rank's peak is its own.
Target: ZeRO-3 <= 0.6x ZeRO-2.

ZeRO-2: the policy's fp32 weights whole on every rank (gradients and Adam moments partitioned),
the reference a full copy (learner.reference=copy). ZeRO-3: the policy built partitioned
(zero.Init) and trained partitioned, the reference a partitioned ZeRO-3 engine
(learner.reference=sharded). On CPU a rank's peak is its process's peak RSS (libraries included).

    python benchmarks/zero_memory.py [--sizes 0.2B 0.4B] [--completion-tokens 128]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import ray
import torch
from safetensors import safe_open

from _common import demo_config
from actors.group import ActorGroup
from actors.learner import LearnerRank
from rl_system.learner import peak_memory_gib
from rl_system.data import Problem
from rl_system.models import make_tiny_model
from rl_system.types import PromptGroup

SIZES = {  # Llama shapes; parameters counted with the tied 49152 x hidden embedding
    "0.2B": dict(hidden_size=1024, num_layers=12, intermediate_size=2816, num_attention_heads=16, num_key_value_heads=4),
    "0.4B": dict(hidden_size=1280, num_layers=18, intermediate_size=3584, num_attention_heads=20, num_key_value_heads=4),
}


def step_peaks(model_dir: Path, zero_stage: int, completion_tokens: int) -> list[float]:
    """Each rank's peak memory (GiB) after setup and one update on 2 prompts x 8 completions (one per rank)."""
    cfg = demo_config([f"model.path={model_dir}", "learner.num_ranks=2", f"learner.zero_stage={zero_stage}",
                       "learner.beta=0.001", "prompts_per_step=2", "rollout.group_size=8", "learner.micro_batch_size=4",
                       "learner.num_threads=1"])
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        ranks = ActorGroup(LearnerRank, "learner", 2, cfg, 2, num_cpus=1)
        address, port = ray.get(ranks.actors[0].master_address.remote())
        ray.get(ranks.call("setup", address, port))
        after_setup = ray.get([r.__ray_call__.remote(lambda self: peak_memory_gib(self.device)) for r in ranks.actors])
        print(f"ZeRO-{zero_stage}: peak after setup {' / '.join(f'{p:.2f}' for p in after_setup)} GiB", flush=True)
        generator = torch.Generator().manual_seed(0)
        groups = [PromptGroup(Problem(i, "q", "1"), torch.randint(100, 49000, (32,), generator=generator).tolist(),
                              [torch.randint(100, 49000, (completion_tokens,), generator=generator).int().numpy()
                               for _ in range(8)], ["x"] * 8, [np.full(completion_tokens, -1.0, np.float32)] * 8,
                              [False] * 8, 0,
                              total_rewards=[float(j % 2) for j in range(8)])
                  for i in range(2)]
        stats = ray.get([rank.train.remote([ray.put(group)]) for rank, group in zip(ranks.actors, groups)])  # a group each
        ranks.kill()
        return [s["peak_memory_gib_max"] for s in stats]
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--completion-tokens", type=int, default=128)
    args = parser.parse_args()
    print(f"One GRPO update, 2 ranks, 2 prompts x 8 completions of {args.completion_tokens} tokens, KL reference on, "
          "bf16 autocast; peak RSS of each learner rank process")
    print("| model | parameters | ZeRO-2 (GiB, ranks) | ZeRO-3 (GiB, ranks) | ZeRO-3 / ZeRO-2 (largest rank) |")
    print("|---|---:|---|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            model_dir = make_tiny_model(Path(tmp) / size, **SIZES[size])
            with safe_open(model_dir / "model.safetensors", "pt") as f:
                params = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys())
            peaks = {stage: step_peaks(model_dir, stage, args.completion_tokens) for stage in (2, 3)}
            ratio = max(peaks[3]) / max(peaks[2])
            print(f"| {size} | {params / 1e9:.2f}B | {' / '.join(f'{p:.2f}' for p in peaks[2])} | "
                  f"{' / '.join(f'{p:.2f}' for p in peaks[3])} | {ratio:.2f}x (target <= 0.6x) |", flush=True)


if __name__ == "__main__":
    main()
