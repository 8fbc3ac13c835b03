"""What running each prompt once per group buys, measured side by side in one run, for both
attention kernels: sampling G completions per prompt (rollout worker) and one micro-batch's
forward, reference forward and backward (learner rank), with and without the shared prompt.

Demo config, real prompts from its train split, one torch thread (what one demo worker or rank
has); every completion is exactly --new-tokens long so both ways do the same work; medians of
--repeats after one warm-up.

    python benchmarks/shared_prompt.py [--new-tokens 24] [--repeats 3] [--threads 1]
"""
from __future__ import annotations

import argparse

import torch
from _common import cpu_dtype, demo_config, machine, median_seconds

from rl_system.data import load_splits
from rl_system.models import dtype_from_name, load_model, load_tokenizer
from rl_system.rollout.hf import encode_prompts, shared_prompt_inputs
from rl_system.training import Sample, collate, completion_logprobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=24, help="every completion's length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = demo_config([])
    n, path = cfg.rollout.group_size, cfg.model.path
    tokenizer = load_tokenizer(path)
    problems = load_splits(cfg.data)[0][:cfg.prompts_per_step // cfg.rollout.num_workers]  # one worker's share
    enc = encode_prompts(tokenizer, problems, cfg.data.system_prompt, [cfg.data.prefill] * len(problems))
    length = args.new_tokens
    rows = {}
    compute = cpu_dtype(cfg.learner.autocast_dtype, "learner.autocast_dtype")
    for attention in ("sdpa", "eager"):
        sampler = load_model(path, cpu_dtype(cfg.rollout.dtype, "rollout.dtype"), attn_implementation=attention).eval()
        policy, reference = (load_model(path, attn_implementation=attention) for _ in range(2))

        def sample(shared: bool):
            inputs = shared_prompt_inputs(sampler, enc, n) if shared else {**enc, "num_return_sequences": n}
            with torch.no_grad():
                return sampler.generate(**inputs, do_sample=True, top_k=0, max_new_tokens=length,
                                        min_new_tokens=length, pad_token_id=tokenizer.pad_token_id)

        prompt_len = enc["input_ids"].shape[1]
        completions = sample(True)[:n, prompt_len:]  # one group: a micro-batch of the demo's learner
        prompt_ids = enc["input_ids"][0][enc["attention_mask"][0].bool()].tolist()
        batch = collate([Sample(prompt_ids, c.tolist(), [0.0] * length, 1.0, 0) for c in completions],
                        tokenizer.pad_token_id, torch.device("cpu"))

        def learn(shared: bool):
            with torch.autocast("cpu", dtype=dtype_from_name(compute), enabled=compute != "float32"):
                logprobs = completion_logprobs(policy, batch, 1.0, shared)
                with torch.no_grad():
                    completion_logprobs(reference, batch, 1.0, shared)
            logprobs.sum().backward()
            policy.zero_grad(set_to_none=True)

        for shared in (False, True):
            rows[(attention, shared)] = (median_seconds(lambda: sample(shared), args.repeats, warmup=1),
                                         median_seconds(lambda: learn(shared), args.repeats, warmup=1))
    print(f"\n{len(problems)} prompts x {n} completions of {length} tokens after a {prompt_len}-token prompt; "
          f"learner micro-batch: one group of {n}; {args.threads} thread(s); learner in {compute}; host: {machine()}")
    print("| attention | prompt | sampling (s) | learner fwd + ref + bwd (s) |\n|---|---|---:|---:|")
    for (attention, shared), (sample_s, learn_s) in rows.items():
        print(f"| {attention} | {'once per group' if shared else 'once per completion'} | {sample_s:.2f} | {learn_s:.2f} |")
    base, best = rows[("sdpa", False)], rows[("eager", True)]
    print(f"shared prompt, same kernel (sdpa): sampling {base[0] / rows[('sdpa', True)][0]:.2f}x, "
          f"learner {base[1] / rows[('sdpa', True)][1]:.2f}x faster; with eager as well: sampling "
          f"{base[0] / best[0]:.2f}x, learner {base[1] / best[1]:.2f}x")


if __name__ == "__main__":
    main()
