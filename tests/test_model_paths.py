"""Generation, training forward and weight publishing on the tiny model, without Ray."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from rl_system.config import LearnerConfig
from rl_system.data import Problem
from rl_system.models import load_model, load_tokenizer
from rl_system.rollout import SamplingParams
from rl_system.rollout.hf import generate_groups, shared_prompt_inputs
from rl_system.training import Sample, collate, completion_logprobs, flatten_groups, grpo_loss
from rl_system.weights import (SLOT_HEADER_BYTES, PublishSlots, SharedWeightsReader, WeightSyncError,
                               load_packed_weights, pack_weights, slot_reference)

PROBLEMS = [Problem(0, "What is 1 + 2?", "3"), Problem(1, "What is 4 - 9?", "-5")]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    return load_model(tiny_model_dir).eval(), load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def groups(model_and_tokenizer):
    model, tok = model_and_tokenizer
    torch.manual_seed(0)
    return generate_groups(model, tok, PROBLEMS, SamplingParams(n=4, max_new_tokens=12, temperature=0.9,
                                                                stop_strings=()), policy_version=3)


def test_generate_groups_shapes(groups):
    assert len(groups) == 2
    for g in groups:
        assert len(g.completion_ids) == len(g.logprobs) == len(g.completions) == 4
        assert g.policy_version == 3
        assert all(1 <= len(ids) <= 12 and len(ids) == len(lp) for ids, lp in zip(g.completion_ids, g.logprobs))
        assert all(c.startswith("<think>") for c in g.completions)
        assert all(lp <= 0 for row in g.logprobs for lp in row)
        # the payload travels as numpy arrays (rl_system/types.py), each row owning its memory
        assert all(ids.dtype == np.int32 and lp.dtype == np.float32 and ids.base is None and lp.base is None
                   for ids, lp in zip(g.completion_ids, g.logprobs))


def test_behaviour_logprobs_match_the_training_forward(model_and_tokenizer, groups):
    """The learner's padded forward must see exactly what generation sampled from."""
    model, tok = model_and_tokenizer
    for g in groups:
        g.total_rewards = [0.0, 1.0, 0.0, 1.0]
    samples = flatten_groups(groups, std_norm=True)
    batch = collate(samples, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        lp = completion_logprobs(model, batch, temperature=0.9)
    mask = batch["mask"].bool()
    assert torch.allclose(lp[mask], batch["behaviour_logprobs"][mask], atol=2e-3)


def test_behaviour_logprobs_ignore_top_p_and_keep_no_logits(model_and_tokenizer):
    """With top-p the tokens come from the truncated distribution, but their recorded log-probs are
    the full temperature distribution's, which is what the learner's forward computes; and generate
    is not asked to keep every step's logits."""
    model, tok = model_and_tokenizer
    torch.manual_seed(1)
    calls = []
    original = model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    model.generate = spy
    try:
        groups = generate_groups(model, tok, PROBLEMS, SamplingParams(n=4, max_new_tokens=10, temperature=0.7, top_p=0.5,
                                                                      stop_strings=()), policy_version=0)
    finally:
        del model.generate
    assert not calls[0].get("output_logits") and not calls[0].get("output_scores")
    for g in groups:
        g.total_rewards = [0.0, 1.0, 0.0, 1.0]
    batch = collate(flatten_groups(groups, std_norm=True), tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        lp = completion_logprobs(model, batch, temperature=0.7)
    mask = batch["mask"].bool()
    assert torch.allclose(lp[mask], batch["behaviour_logprobs"][mask], atol=2e-3)


def test_shared_prompt_forward_matches_the_full_forward(tiny_model_dir):
    """One prompt forward shared by its completions gives the same log-probs and gradients as
    running every row in full, with two prompts of different lengths in one micro-batch."""
    tok = load_tokenizer(tiny_model_dir)
    prompts = [tok.encode("What is 1 + 2?"), tok.encode("A longer question: what is 4 - 9 then?")]
    samples = [Sample(prompts[i % 2], list(range(100 + i, 100 + i + 3 + i)), [-1.0] * (3 + i), 0.5 - i % 2, 0)
               for i in range(6)]
    batch = collate(samples, tok.pad_token_id, torch.device("cpu"))
    assert batch["prompt_ids"].shape[0] == 2 and batch["prompt_index"].tolist() == [0, 1, 0, 1, 0, 1]
    results = []
    # Each way, and each with the output layer taken 5 tokens at a time (learner.logprob_chunk_tokens).
    for share, chunk in ((True, 0), (False, 0), (True, 5), (False, 5)):
        model = load_model(tiny_model_dir)
        lp = completion_logprobs(model, batch, 0.9, share_prompt=share, chunk_tokens=chunk)
        (lp * batch["mask"]).sum().backward()
        results.append((lp.detach() * batch["mask"], [p.grad for p in model.parameters()]))
    (shared, shared_grads), *others = results
    for full, full_grads in others:
        assert torch.allclose(shared, full, atol=1e-5)
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(shared_grads, full_grads))  # fp32 summation order


def test_shared_prompt_cache_samples_what_generate_samples(model_and_tokenizer):
    """generate() on the prompts' cache computed once samples the same tokens, from the same
    seed, as generate() running each prompt n times itself."""
    model, tok = model_and_tokenizer
    enc = tok(["What is 1 + 2?", "Longer: what is 4 - 9?"], return_tensors="pt", padding=True, padding_side="left")
    out = []
    for inputs in (shared_prompt_inputs(model, enc, 3), {**enc, "num_return_sequences": 3}):
        torch.manual_seed(0)
        out.append(model.generate(**inputs, do_sample=True, top_k=0, max_new_tokens=8, min_new_tokens=8,
                                  pad_token_id=tok.pad_token_id))
    assert torch.equal(out[0], out[1])


def test_grpo_loss_gives_gradients_that_favour_rewarded_samples(model_and_tokenizer, groups):
    model, tok = model_and_tokenizer
    model = load_model(model.name_or_path)  # a fresh trainable copy
    for g in groups:
        g.total_rewards = [1.0, 0.0, 0.0, 0.0]
    samples = flatten_groups(groups, std_norm=True)
    batch = collate(samples, tok.pad_token_id, torch.device("cpu"))
    cfg = LearnerConfig(micro_batch_size=8, num_ranks=1)
    loss, stats = grpo_loss(model, batch, cfg, normalizer=len(samples), learner_version=3,
                            temperature=0.9, autocast_dtype=None)
    assert torch.isfinite(loss) and stats["clipped_tokens"] == 0
    before = completion_logprobs(model, batch, 0.9).detach()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.5 * p.grad
    after = completion_logprobs(model, batch, 0.9).detach()
    m = batch["mask"]
    seq_gain = ((after - before) * m).sum(-1) / m.sum(-1)
    assert seq_gain[0] > seq_gain[1]  # the rewarded completion became more likely than a penalised one


def shifted_model_and_bf16_target(path, shift: float):
    """A model whose every parameter moved by `shift` (so a load shows) and a bf16 copy to load into."""
    src, dst = load_model(path), load_model(path, dtype="bfloat16")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(shift)
    return src, dst


def test_weights_roundtrip_and_all_or_nothing(tiny_model_dir):
    src, dst = shifted_model_and_bf16_target(tiny_model_dir, 0.25)
    packed = pack_weights(src.named_parameters(), version=5, dtype="bfloat16")
    assert packed["data"].nbytes == 2 * sum(p.numel() for p in src.parameters())
    with pytest.raises(WeightSyncError, match="version 5, expected 4"):
        load_packed_weights(dst, packed, expected_version=4)
    before = {n: p.clone() for n, p in dst.named_parameters()}
    broken = dict(packed, manifest=packed["manifest"][:-1] + [("model.norm.weight", (3,), 0, 3)])
    with pytest.raises(WeightSyncError):
        load_packed_weights(dst, broken, expected_version=5)
    assert all(torch.equal(before[n], p) for n, p in dst.named_parameters())  # nothing half-loaded
    assert load_packed_weights(dst, packed, expected_version=5) == 5
    for (name, p), (_, q) in zip(src.named_parameters(), dst.named_parameters()):
        assert torch.allclose(p.to(torch.bfloat16).float(), q.float(), atol=0), name


def test_publish_slots_alternate_and_readers_map_them_in_place(tiny_model_dir):
    model = load_model(tiny_model_dir)
    size = sum(p.numel() for p in model.parameters())
    slots, reader = PublishSlots(size, "bfloat16"), SharedWeightsReader()
    first = slots.pack(model.named_parameters(), version=1)
    assert first["shared_path"] and first["data"].ctypes.data == slots.slots[1].data_ptr() + SLOT_HEADER_BYTES
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    second = slots.pack(model.named_parameters(), version=2)  # the other slot: version 1 stays readable
    seen = reader.read({**first, "data": None})
    assert seen["data"].ctypes.data != first["data"].ctypes.data  # the reader's own mapping of the same memory
    dst = load_model(tiny_model_dir, dtype="bfloat16")
    load_packed_weights(dst, reader.read({**second, "data": None}), expected_version=2, share_buffer=True)
    assert all(torch.equal(p.to(torch.bfloat16), q) for p, q in zip(model.parameters(), dst.parameters()))
    # Another process maps the slot by its path and reads the same bytes.
    script = (f"import torch; t = torch.from_file({second['shared_path']!r}, shared=True, "
              f"size={SLOT_HEADER_BYTES + 2 * size}, dtype=torch.uint8); print(int(t.double().sum()))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert int(out) == int(slots.slots[0].double().sum())
    slots.pack(model.named_parameters(), version=3)  # reuses version 1's slot
    with pytest.raises(WeightSyncError, match="holds version 3, expected 1"):
        reader.read({**first, "data": None})
    with pytest.raises(ValueError, match=rf"publish buffer holds {size - 1} values, the parameters need more"):
        pack_weights(model.named_parameters(), version=4, dtype="bfloat16", out=torch.empty(size - 1, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=rf"publish buffer holds {size + 1} values, the parameters fill {size}"):
        pack_weights(model.named_parameters(), version=4, dtype="bfloat16", out=torch.empty(size + 1, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="expected a 1-D bfloat16 buffer"):
        pack_weights(model.named_parameters(), version=4, dtype="bfloat16", out=torch.empty(size))


def test_a_far_publish_is_stored_in_a_local_slot_for_another_process(tiny_model_dir):
    """A rollout worker off the learner's node gets a publish's bytes through the object store and
    stores them in a slot of its own, which its vLLM engine maps by path (slot_reference: no bytes)."""
    model = load_model(tiny_model_dir)
    size = sum(p.numel() for p in model.parameters())
    far = pack_weights(model.named_parameters(), version=7, dtype="bfloat16")  # as the object store gives it
    local = PublishSlots(size, "bfloat16").store(far)
    reference = slot_reference(local)
    assert set(reference) == {"version", "dtype", "manifest", "shared_path"} and reference["version"] == 7
    seen = SharedWeightsReader().read(reference)
    assert np.array_equal(seen["data"], far["data"])
    with pytest.raises(WeightSyncError, match="holds version 7, expected 9"):
        SharedWeightsReader().read({**reference, "version": 9})


def test_shared_buffer_load_makes_parameters_views_of_the_buffer(tiny_model_dir):
    src, dst = shifted_model_and_bf16_target(tiny_model_dir, 0.5)
    packed = pack_weights(src.named_parameters(), version=1, dtype="bfloat16")
    packed["data"].flags.writeable = False  # as the object store hands it out
    load_packed_weights(dst, packed, expected_version=1, share_buffer=True)
    start, end = packed["data"].ctypes.data, packed["data"].ctypes.data + packed["data"].nbytes
    assert all(start <= p.data_ptr() < end for p in dst.parameters())  # no copy: views of the buffer
    assert dst.lm_head.weight is dst.model.embed_tokens.weight  # the tie survives
    assert all(torch.equal(p.to(torch.bfloat16), q) for p, q in zip(src.parameters(), dst.parameters()))
    fp32 = load_model(tiny_model_dir)  # another dtype: copied, not shared
    load_packed_weights(fp32, packed, expected_version=1, share_buffer=True)
    assert not any(start <= p.data_ptr() < end for p in fp32.parameters())
