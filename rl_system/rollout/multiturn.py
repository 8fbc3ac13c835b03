"""Multi-turn rollouts with a tool (`env.name`, rl_system/envs): the model writes until it closes a
tool call or its answer, the environment's reply is appended as tokens, and so on for at most
env.max_turns model turns. A trajectory is kept as token ids with a loss mask (1: sampled by the
model, 0: written by the tool) and the behaviour log-prob of every sampled token. Nothing is decoded
and encoded again between turns: the next turn continues from the ids themselves, so the learner
trains on exactly the tokens that were sampled (a chat template never re-renders earlier turns).
Both backends share this loop; they differ only in how one turn is sampled (a TurnSampler)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from rl_system.data import Problem
from rl_system.envs.runner import EnvRunner
from rl_system.rollout.params import SamplingParams, prompt_token_ids
from rl_system.types import PromptGroup, logprob_array, mask_array, token_array

# One model turn for each row of token ids, given the stop strings: (ids, their log-probs, stopped) per row,
# ids and log-probs as arrays or lists: each backend's Sampler.turns (rollout/hf.py, rollout/vllm.py).
TurnSampler = Callable[[list[list[int]], tuple[str, ...]], list[tuple[np.ndarray, np.ndarray, bool]]]


@dataclass
class Trajectory:
    """Python lists while it grows (the next turn's row is prompt_ids + ids, and vLLM takes lists);
    the PromptGroup gets them as arrays, converted once when the trajectory is done."""
    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)  # everything after the prompt: model and tool tokens
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # 0.0 for tool tokens
    stats: dict[str, float] = field(default_factory=lambda: {"turns": 0, "tool_calls": 0, "tool_errors": 0,
                                                             "tool_s": 0.0})
    done: bool = False
    truncated: bool = False  # its last turn ran out of tokens before a stop

    def append(self, ids, logprobs) -> None:
        """Sampled ids with their log-probs (in the loss), or a tool's ids (`logprobs` None: masked out);
        lists or arrays."""
        ids = np.asarray(ids).tolist()
        self.ids += ids
        self.loss_mask += [0 if logprobs is None else 1] * len(ids)
        self.logprobs += [0.0] * len(ids) if logprobs is None else np.asarray(logprobs).tolist()


def generate_multiturn_groups(sample_turn: TurnSampler, tokenizer, problems: list[Problem], params: SamplingParams,
                              policy_version: int, envs: EnvRunner, system_prompt: str = "",
                              prefill: str = "<think>", prefills: list[str] | None = None) -> list[PromptGroup]:
    """generate_groups with an environment: one PromptGroup per problem, params.n trajectories each.
    Each model turn may write params.max_new_tokens tokens; a trajectory ends when a turn calls no
    tool (it answered), its environment says done, a turn runs out of tokens (truncated), or after
    env.max_turns turns. `envs` runs the environments (rl_system/envs/runner.py)."""
    start = time.perf_counter()
    env_cfg = envs.config
    prefills = prefills or [prefill] * len(problems)
    prompts = prompt_token_ids(tokenizer, problems, system_prompt, prefills)
    trajectories = [Trajectory(ids) for ids in prompts for _ in range(params.n)]
    firsts = envs.reset([{"question": p.question, "answer": p.answer, **p.columns}
                         for p in problems for _ in range(params.n)])
    for t, first in zip(trajectories, firsts):
        if first:
            t.append(tokenizer.encode(first, add_special_tokens=False), None)
    stops = (*params.stop_strings, f"</{env_cfg.tool_tag}>")
    for _ in range(env_cfg.max_turns):
        active = [i for i, t in enumerate(trajectories) if not t.done]
        if not active:
            break
        turns = {}
        for i, (ids, logprobs, stopped) in zip(active, sample_turn([trajectories[i].prompt_ids + trajectories[i].ids
                                                                    for i in active], stops)):
            t = trajectories[i]
            t.append(ids, logprobs)
            t.stats["turns"] += 1
            if stopped:
                turns[i] = tokenizer.decode(ids, skip_special_tokens=True)
            else:
                t.done = t.truncated = True
        for i, result in envs.step(turns).items():
            t = trajectories[i]
            t.stats["tool_calls"] += bool(result.info.get("tool_call"))
            t.stats["tool_errors"] += bool(result.info.get("error"))
            t.stats["tool_s"] += float(result.info.get("seconds", 0.0))
            if result.done or not result.observation:
                t.done = True
            else:  # the tool's reply as tokens, never re-encoding what the model wrote
                t.append(tokenizer.encode(result.observation, add_special_tokens=False), None)
    # A trajectory still open after env.max_turns called a tool in its last turn: it ends unanswered.
    elapsed = time.perf_counter() - start
    groups = []
    for k, (p, pre, ids) in enumerate(zip(problems, prefills, prompts)):
        row = trajectories[k * params.n:(k + 1) * params.n]
        groups.append(PromptGroup(
            problem=p, prompt_ids=ids, completion_ids=[token_array(t.ids) for t in row],
            completions=[pre + tokenizer.decode(t.ids, skip_special_tokens=True) for t in row],
            logprobs=[logprob_array(t.logprobs) for t in row], truncated=[t.truncated for t in row],
            policy_version=policy_version, generate_s=elapsed / len(problems),
            loss_masks=[mask_array(t.loss_mask) for t in row],
            env_stats={key: sum(t.stats[key] for t in row) for key in row[0].stats}))
    return groups
