"""Peak memory of one learner micro-batch at long completions: the GRPO forward and backward
(policy log-probs in the learner's precision on this host, as it runs them) of --batch sequences of
--completion-tokens tokens, with the output layer over all positions at once (today's default)
vs in chunks (learner.logprob_chunk_tokens), each with and without gradient checkpointing.
And the rollout side: sampling --rollout-batch sequences of --rollout-tokens tokens with their
behaviour log-probs, from generate's kept logits (output_logits, as before) vs the step-at-a-time
recorder rl_system/rollout/hf.py uses.

The model is the demo's architecture (SmolLM2-135M: 30 layers, hidden 576, vocabulary 49152)
with random weights, built from its config (nothing downloaded). Each variant runs in a fresh
process; its peak RSS above the RSS it had once the model and batch were built is the step's memory.

    python benchmarks/logprob_memory.py [--completion-tokens 2048] [--batch 2] [--chunk 512]
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource


def measure(chunk: int, checkpointing: bool, args, out) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rl_system.training import Sample, collate, completion_logprobs

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    n = args.completion_tokens
    samples = [Sample(list(range(10, 74)), [int(t) for t in torch.randint(100, 49000, (n,))], [-1.0] * n, 1.0, 0)
               for _ in range(args.batch)]
    batch = collate(samples, 0, torch.device("cpu"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.autocast("cpu", dtype=getattr(torch, args.dtype), enabled=args.dtype != "float32"):
        logprobs = completion_logprobs(model, batch, 1.0, share_prompt=False, chunk_tokens=chunk)
    (logprobs * batch["mask"]).sum().backward()
    out.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)  # KiB -> GiB


def measure_rollout(keep_logits: bool, args, out) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList, StoppingCriteriaList

    from rl_system.algorithms.grpo import token_logprobs
    from rl_system.rollout.hf import SampledLogprobs

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    prompts = torch.randint(100, 49000, (args.rollout_batch, 32))
    tokens = {"max_new_tokens": args.rollout_tokens, "min_new_tokens": args.rollout_tokens, "do_sample": True,
              "top_k": 0, "pad_token_id": 0}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        if keep_logits:
            result = model.generate(prompts, output_logits=True, return_dict_in_generate=True, **tokens)
            generated = result.sequences[:, prompts.shape[1]:]
            logprobs = torch.stack([token_logprobs(step, generated[:, t]) for t, step in enumerate(result.logits)], 1)
        else:
            sampled = SampledLogprobs(1.0)
            model.generate(prompts, logits_processor=LogitsProcessorList([sampled]),
                           stopping_criteria=StoppingCriteriaList([sampled]), **tokens)
            logprobs = sampled.logprobs()
    assert logprobs.shape == (args.rollout_batch, args.rollout_tokens)
    out.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--completion-tokens", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rollout-batch", type=int, default=16)
    parser.add_argument("--rollout-tokens", type=int, default=1024)
    args = parser.parse_args()
    from _common import cpu_dtype, machine

    args.dtype = cpu_dtype("auto", "learner.autocast_dtype")  # as the learner resolves its default here
    spawn = multiprocessing.get_context("spawn")
    print(f"host: {machine()}")
    print(f"{args.batch} x {args.completion_tokens} completion tokens, vocabulary 49152, SmolLM2-135M architecture, "
          f"{args.dtype} compute, forward + backward; peak RSS growth of the step")
    print("| gradient checkpointing | output layer | peak GiB | chunked / all at once |")
    print("|---|---|---:|---:|")
    for checkpointing in (False, True):
        peaks = {}
        for chunk in (0, args.chunk):
            queue = spawn.Queue()
            process = spawn.Process(target=measure, args=(chunk, checkpointing, args, queue))
            process.start()
            peaks[chunk] = queue.get()
            process.join()
            label = "all positions at once" if chunk == 0 else f"{chunk} tokens a chunk"
            ratio = f"{peaks[chunk] / peaks[0]:.2f}x" if chunk else ""
            print(f"| {'on' if checkpointing else 'off'} | {label} | {peaks[chunk]:.2f} | {ratio} |", flush=True)

    print(f"\nRollout: {args.rollout_batch} x {args.rollout_tokens} sampled tokens with their log-probs; peak RSS growth")
    print("| behaviour log-probs from | peak GiB | recorder / kept logits |\n|---|---:|---:|")
    peaks = {}
    for keep_logits in (True, False):
        queue = spawn.Queue()
        process = spawn.Process(target=measure_rollout, args=(keep_logits, args, queue))
        process.start()
        peaks[keep_logits] = queue.get()
        process.join()
        label = "generate's kept logits (output_logits)" if keep_logits else "the step-at-a-time recorder"
        ratio = "" if keep_logits else f"{peaks[False] / peaks[True]:.2f}x"
        print(f"| {label} | {peaks[keep_logits]:.2f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
