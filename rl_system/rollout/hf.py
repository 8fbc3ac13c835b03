"""The HF rollout backend (rollout.backend=hf): transformers' generate with a KV cache, G completions
per prompt from one prompt forward, recording each sampled token's behaviour log-prob."""
from __future__ import annotations

import gc
import time
from dataclasses import replace

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.rollout.base import Sampler, WeightFeed
from rl_system.rollout.multiturn import TurnSampler
from rl_system.rollout.params import SamplingParams, chat_texts
from rl_system.training import padded_positions
from rl_system.types import LOGPROB_DTYPE, TOKEN_DTYPE, VERSION_DTYPE, PromptGroup


class StopRecorder(StoppingCriteria):
    """Stops a sequence at EOS or a stop string and remembers how many tokens it kept. `carried`: the
    completion tokens already in the input (a resumed partial rollout), so a stop string that
    straddles the resumption is still seen."""

    def __init__(self, tokenizer, prompt_len: int, batch: int, stop_strings: tuple[str, ...], carried: int = 0):
        self.tokenizer, self.prompt_len, self.stop_strings = tokenizer, prompt_len, stop_strings
        self.completion_start = prompt_len - carried
        self.eos_ids = {tokenizer.eos_token_id}
        self.lengths: list[int | None] = [None] * batch
        self.tail = max([len(tokenizer.encode(s, add_special_tokens=False)) for s in stop_strings] + [1]) + 2

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        generated = input_ids.shape[1] - self.prompt_len
        for i, length in enumerate(self.lengths):
            if length is not None:
                continue
            row = input_ids[i, self.completion_start:]
            if int(row[-1]) in self.eos_ids:
                self.lengths[i] = generated
            elif self.stop_strings:
                text = self.tokenizer.decode(row[-self.tail:])
                if any(s in text for s in self.stop_strings):
                    self.lengths[i] = generated
        return torch.tensor([length is not None for length in self.lengths], device=input_ids.device)


class SampledLogprobs(LogitsProcessor, StoppingCriteria):
    """The behaviour log-prob of each sampled token, log softmax(logits / temperature), without
    keeping every step's full-vocabulary logits (generate's output_logits): as a logits processor
    (user processors run before generate's temperature and top-p warpers) it keeps the current
    step's log-probs, (batch, vocabulary) in fp32; as a stopping criterion (run once the step's
    token is appended) it picks the sampled token's and lets the step go."""

    def __init__(self, temperature: float):
        self.temperature = temperature
        self.step: torch.Tensor | None = None
        self.picked: list[torch.Tensor] = []  # one (batch,) tensor per generated position

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # no **kwargs: generate checks
        if self.step is None:  # a logits processor's call: before sampling
            self.step = torch.log_softmax(scores.float() / self.temperature, dim=-1)
            return scores
        self.picked.append(self.step.gather(1, input_ids[:, -1:]).squeeze(1))  # after: the token is in
        self.step = None
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def logprobs(self) -> torch.Tensor:
        return torch.stack(self.picked, dim=1)


class NewerWeights(StoppingCriteria):
    """Partial rollouts: every `every` generated tokens, asks `weights` whether a newer version is
    published; once one is, stops the whole batch (after the step's token, sampled and recorded
    under the old weights), so the caller loads it and resumes the unfinished rows."""

    def __init__(self, weights: WeightFeed, every: int):
        self.weights, self.every, self.steps, self.found = weights, every, 0, False

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        self.steps += 1
        if not self.found and self.steps % self.every == 0:
            self.found = self.weights.newer()
        return torch.full((input_ids.shape[0],), self.found, dtype=torch.bool, device=input_ids.device)


def encode_prompts(tokenizer, problems: list[Problem], system_prompt: str, prefills: list[str],
                   device: torch.device | str = "cpu") -> dict:
    """The problems' chat prompts, each continued by its prefill, left-padded into one batch."""
    enc = tokenizer(chat_texts(tokenizer, problems, system_prompt, prefills), return_tensors="pt", padding=True,
                    padding_side="left", add_special_tokens=False)
    return {k: v.to(device) for k, v in enc.items()}


def shared_prompt_inputs(model, enc: dict, n: int) -> dict:
    """generate() inputs for n samples of every prompt, with the prompts' KV cache computed once
    and repeated n times (generate's own num_return_sequences would run each prompt n times):
    generate then runs only the last prompt token before sampling."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if n == 1 or ids.shape[1] < 2:
        return {**enc, "num_return_sequences": n}
    cache = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1],
                  position_ids=padded_positions(mask[:, :-1]), use_cache=True).past_key_values
    cache.batch_repeat_interleave(n)
    return {"input_ids": ids.repeat_interleave(n, dim=0), "attention_mask": mask.repeat_interleave(n, dim=0),
            "past_key_values": cache}


@torch.no_grad()
def sample_with_logprobs(model, tokenizer, inputs: dict, prompt_len: int, rows: int, params: SamplingParams,
                         stop_strings: tuple[str, ...], carried: int = 0,
                         interrupt: NewerWeights | None = None) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """generate() from `inputs` (`rows` sequences after `prompt_len` input columns, the last `carried`
    of them completion tokens already generated): for each row, the ids it kept (int32), their
    behaviour log-probs (float32), and whether it stopped (a stop string or EOS) before
    params.max_new_tokens. Arrays, not lists: PromptGroup's payload (types.py). `interrupt` may end
    every row early (newer weights published)."""
    recorder = StopRecorder(tokenizer, prompt_len, rows, stop_strings, carried)
    sampled = SampledLogprobs(1.0 if params.greedy else params.temperature)
    criteria = [sampled, recorder] + ([interrupt] if interrupt else [])
    sampling = {} if params.greedy else {"temperature": params.temperature, "top_p": params.top_p,
                                         "top_k": params.top_k}
    sequences = model.generate(
        **inputs, do_sample=not params.greedy, max_new_tokens=params.max_new_tokens,
        logits_processor=LogitsProcessorList([sampled]), stopping_criteria=StoppingCriteriaList(criteria),
        pad_token_id=tokenizer.pad_token_id, **sampling,
    )
    generated, logprobs = sequences[:, prompt_len:].cpu(), sampled.logprobs().cpu()
    out = []
    for i, kept in enumerate(recorder.lengths):
        n = kept or generated.shape[1]
        # astype copies: each row owns its memory instead of viewing the whole batch's tensor
        ids, row_logprobs = generated[i, :n].numpy().astype(TOKEN_DTYPE), logprobs[i, :n].float().numpy()
        out.append((ids, row_logprobs.astype(LOGPROB_DTYPE), kept is not None))
    return out


@torch.no_grad()
def sample_resuming(model, tokenizer, enc: dict, params: SamplingParams, weights: WeightFeed,
                    check_tokens: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, bool]]:
    """Partial rollouts: sample_with_logprobs for params.n samples of each prompt in `enc`, asking
    `weights` every `check_tokens` tokens for a newer version. When one is published the batch stops,
    the new weights are loaded, and the unfinished rows go on from prompt + their tokens so far (a
    fresh prefill, so the KV cache is the new weights'), within params.max_new_tokens in all. Per
    row: ids, behaviour log-probs, the version that sampled each token (int32), and whether it stopped."""
    prompt_ids, prompt_mask = (enc[k].repeat_interleave(params.n, 0) for k in ("input_ids", "attention_mask"))
    rows = prompt_ids.shape[0]
    segments: list[list[tuple[np.ndarray, np.ndarray, int]]] = [[] for _ in range(rows)]  # (ids, logprobs, version)
    stopped = [False] * rows
    active, done = list(range(rows)), 0  # rows still generating; the tokens each of them holds
    inputs = shared_prompt_inputs(model, enc, params.n)
    while active:
        version, interrupt = weights.version, NewerWeights(weights, check_tokens)
        part = sample_with_logprobs(model, tokenizer, inputs, inputs["input_ids"].shape[1], len(active),
                                    replace(params, max_new_tokens=params.max_new_tokens - done), params.stop_strings,
                                    carried=done, interrupt=interrupt)
        for row, (ids, logprobs, stop) in zip(active, part):
            segments[row].append((ids, logprobs, version))
            stopped[row] = stop
        if interrupt.found:
            weights.load()
        # Every row still active has generated the same tokens: the batch stops for all at once.
        done += max(len(ids) for ids, _, _ in part)
        active = [row for row in active if not stopped[row] and done < params.max_new_tokens]
        if active:
            prefix = torch.tensor(np.stack([np.concatenate([ids for ids, _, _ in segments[row]]) for row in active]),
                                  dtype=torch.long)
            inputs = {"input_ids": torch.cat([prompt_ids[active], prefix.to(prompt_ids.device)], dim=1),
                      "attention_mask": torch.cat([prompt_mask[active], torch.ones_like(prefix).to(prompt_mask.device)],
                                                  dim=1)}
    return [(np.concatenate([ids for ids, _, _ in parts]), np.concatenate([lp for _, lp, _ in parts]),
             np.concatenate([np.full(len(ids), v, dtype=VERSION_DTYPE) for ids, _, v in parts]), stop)
            for parts, stop in zip(segments, stopped)]


@torch.no_grad()
def generate_groups(model, tokenizer, problems: list[Problem], params: SamplingParams, policy_version: int,
                    system_prompt: str = "", prefill: str = "<think>",
                    prefills: list[str] | None = None, weights: WeightFeed | None = None,
                    check_tokens: int = 16) -> list[PromptGroup]:
    """One PromptGroup per problem, each with params.n completions, in one batched generate call.

    `prefills` (one per problem) continues each answer from its own partial text instead, as
    Monte-Carlo step labelling does; completions then start with that text. With `weights`
    (partial rollouts), newer weights published meanwhile are loaded and the call resumes under them
    (sample_resuming); each group then records its tokens' versions.
    """
    start = time.perf_counter()
    prefills = prefills or [prefill] * len(problems)
    enc = encode_prompts(tokenizer, problems, system_prompt, prefills, model.device)
    if weights is None:
        sampled = [(ids, lp, None, stop) for ids, lp, stop in sample_with_logprobs(
            model, tokenizer, shared_prompt_inputs(model, enc, params.n), enc["input_ids"].shape[1],
            len(problems) * params.n, params, params.stop_strings)]
    else:
        sampled = sample_resuming(model, tokenizer, enc, params, weights, check_tokens)
    elapsed = time.perf_counter() - start

    groups = []
    for p_idx, problem in enumerate(problems):
        prompt_ids = enc["input_ids"][p_idx][enc["attention_mask"][p_idx].bool()].tolist()
        rows = sampled[p_idx * params.n:(p_idx + 1) * params.n]
        versions = [v for _, _, v, _ in rows if v is not None]
        groups.append(PromptGroup(
            problem=problem, prompt_ids=prompt_ids, completion_ids=[ids for ids, _, _, _ in rows],
            completions=[prefills[p_idx] + tokenizer.decode(ids, skip_special_tokens=True) for ids, _, _, _ in rows],
            logprobs=[logprobs for _, logprobs, _, _ in rows], truncated=[not stopped for _, _, _, stopped in rows],
            policy_version=min((int(v.min()) for v in versions if len(v)), default=policy_version),
            generate_s=elapsed / len(problems), token_versions=versions,
        ))
    return groups


def hf_turns(model, tokenizer, params: SamplingParams) -> TurnSampler:
    """The HF backend's TurnSampler: the rows left-padded into one batch (sample_with_logprobs)."""
    def sample_turn(rows: list[list[int]], stop_strings: tuple[str, ...]):
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, width - len(row):] = torch.tensor(row)
            attention[i, width - len(row):] = 1
        inputs = {"input_ids": input_ids.to(model.device), "attention_mask": attention.to(model.device)}
        return sample_with_logprobs(model, tokenizer, inputs, width, len(rows), params, stop_strings)
    return sample_turn


class HFSampler(Sampler):
    """An HF model sampling in calls of at most rollout.max_batch_sequences sequences, which bounds the
    KV cache and each step's logits."""

    def __init__(self, cfg: TrainConfig, tokenizer, model):
        super().__init__(cfg, tokenizer)
        self.model = model
        self.released: dict[torch.nn.Parameter, torch.Size] = {}  # each released weight (tied ones once): its shape

    def release(self) -> None:
        """Each weight's storage goes (an empty tensor in its place, the Parameter kept: tied weights stay
        tied); on a GPU, the allocator's cache too."""
        for param in dict.fromkeys(self.model.parameters()):
            self.released[param] = param.shape
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)
        gc.collect()
        if self.model.device.type == "cuda":
            torch.cuda.empty_cache()

    def restore(self) -> None:
        """Memory for every released weight, its values undefined until the next publish loads them."""
        for param, shape in self.released.items():
            param.data = torch.empty(shape, dtype=param.dtype, device=param.device)
        self.released = {}

    def memory_bytes(self) -> int:
        if self.model.device.type == "cuda":
            return torch.cuda.memory_allocated(self.model.device)
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in self.model.parameters()}
        return sum(storages.values())

    def problems_per_call(self, params: SamplingParams) -> int:
        return max(1, self.cfg.rollout.max_batch_sequences // params.n)

    def single_turn_groups(self, problems: list[Problem], params: SamplingParams, policy_version: int,
                           prefills: list[str]) -> list[PromptGroup]:
        if self.weights is not None:  # partial rollouts: the feed knows the version held now
            policy_version = self.weights.version
        return generate_groups(self.model, self.tokenizer, problems, params, policy_version, self.cfg.data.system_prompt,
                               prefills=prefills, weights=self.weights,
                               check_tokens=self.cfg.rollout.partial_check_tokens)

    def turns(self, params: SamplingParams) -> TurnSampler:
        return hf_turns(self.model, self.tokenizer, params)
