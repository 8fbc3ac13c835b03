"""Per-rank peak memory of one GRPO update with the KL's reference model, ZeRO-2 against ZeRO-3,
for random-initialised Llama models of about 0.2B and 0.4B parameters (SmolLM2's tokenizer and
vocabulary, built from a config: nothing downloaded). Two learner ranks (--ranks) as Ray actors, as
a run places them, one group of 8 completions each; each configuration on a fresh local Ray, so each
rank's peak is its own. Target: ZeRO-3 <= 0.6x ZeRO-2.

ZeRO-2: the policy's fp32 weights whole on every rank (gradients and Adam moments partitioned),
the reference a full copy (learner.reference=copy). ZeRO-3: the policy built partitioned
(zero.Init) and trained partitioned, the reference a partitioned ZeRO-3 engine
(learner.reference=sharded). On CPU a rank's peak is its process's peak RSS (libraries included).
The ranks run with glibc's mmap threshold fixed at 128 KiB (MALLOC_MMAP_THRESHOLD_, both stages
alike): by default glibc raises it as large blocks are freed and then keeps freed tensors of up to
32 MiB in a fragmented heap, which added 1-2 GiB to either stage's peak RSS here.

    python benchmarks/zero_memory.py [--sizes 0.2B 0.4B] [--ranks 2] [--completion-tokens 128]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import ray
import torch
from safetensors import safe_open

from _common import cpu_dtype, demo_config, machine
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


def step_peaks(model_dir: Path, zero_stage: int, completion_tokens: int, n: int) -> tuple[list[float], list[float]]:
    """Each of `n` ranks' peak memory (GiB) after setup, and after one update on n prompts x 8 completions
    (one prompt per rank)."""
    cfg = demo_config([f"model.path={model_dir}", f"learner.num_ranks={n}", f"learner.zero_stage={zero_stage}",
                       "learner.beta=0.001", f"prompts_per_step={n}", "rollout.group_size=8",
                       "learner.micro_batch_size=4", "learner.num_threads=1"])
    ray.init(address="local", num_cpus=n, include_dashboard=False,
             runtime_env={"env_vars": {"MALLOC_MMAP_THRESHOLD_": "131072"}})
    try:
        ranks = ActorGroup(LearnerRank, "learner", n, cfg, n, num_cpus=1)
        address, port = ray.get(ranks.actors[0].master_address.remote())
        ray.get(ranks.call("setup", address, port, "float32"))
        after_setup = ray.get([r.__ray_call__.remote(lambda self: peak_memory_gib(self.device)) for r in ranks.actors])
        print(f"ZeRO-{zero_stage}: peak after setup {' / '.join(f'{p:.2f}' for p in after_setup)} GiB", flush=True)
        generator = torch.Generator().manual_seed(0)
        groups = [PromptGroup(Problem(i, "q", "1"), torch.randint(100, 49000, (32,), generator=generator).tolist(),
                              [torch.randint(100, 49000, (completion_tokens,), generator=generator).int().numpy()
                               for _ in range(8)], ["x"] * 8, [np.full(completion_tokens, -1.0, np.float32)] * 8,
                              [False] * 8, 0,
                              total_rewards=[float(j % 2) for j in range(8)])
                  for i in range(n)]
        stats = ray.get([rank.train.remote([ray.put(group)]) for rank, group in zip(ranks.actors, groups)])  # a group each
        ranks.kill()
        return after_setup, [s["peak_memory_gib_max"] for s in stats]
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--completion-tokens", type=int, default=128)
    args = parser.parse_args()
    print(f"One GRPO update, {args.ranks} ranks, {args.ranks} prompts x 8 completions of {args.completion_tokens} "
          f"tokens, KL reference on, learner precision auto ({cpu_dtype('auto', 'learner.autocast_dtype')} on this host: "
          f"{machine()}); peak RSS of each learner rank process")
    print("| model | parameters | ranks | ZeRO-2 after setup / after the update (GiB, ranks) | ZeRO-3 after setup / "
          "after the update | ZeRO-3 / ZeRO-2 (largest rank) |")
    print("|---|---:|---:|---|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            model_dir = make_tiny_model(Path(tmp) / size, **SIZES[size])
            with safe_open(model_dir / "model.safetensors", "pt") as f:
                params = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys())
            peaks = {stage: step_peaks(model_dir, stage, args.completion_tokens, args.ranks) for stage in (2, 3)}
            ratio = max(peaks[3][1]) / max(peaks[2][1])
            cells = [", ".join(f"{p:.2f}" for p in setup) + " / " + ", ".join(f"{p:.2f}" for p in update)
                     for setup, update in (peaks[2], peaks[3])]
            print(f"| {size} | {params / 1e9:.2f}B | {args.ranks} | {cells[0]} | {cells[1]} | "
                  f"{ratio:.2f}x (target <= 0.6x) |", flush=True)


if __name__ == "__main__":
    main()
