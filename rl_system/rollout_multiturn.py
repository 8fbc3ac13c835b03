"""Multi-turn rollouts with a tool (`env.name`, rl_system/envs): the model writes until it closes a
tool call or its answer, the environment's reply is appended as tokens, and so on for at most
env.max_turns model turns. A trajectory is kept as token ids with a loss mask (1: sampled by the
model, 0: written by the tool) and the behaviour log-prob of every sampled token. Nothing is decoded
and encoded again between turns: the next turn continues from the ids themselves, so the learner
trains on exactly the tokens that were sampled (a chat template never re-renders earlier turns)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from rl_system.data import Problem
from rl_system.envs import EnvConfig, Environment, StepResult, make_env
from rl_system.rollout import SamplingParams, encode_prompts, sample_with_logprobs
from rl_system.types import PromptGroup


@dataclass
class Trajectory:
    prompt_ids: list[int]
    env: Environment
    ids: list[int] = field(default_factory=list)  # everything after the prompt: model and tool tokens
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # 0.0 for tool tokens
    stats: dict[str, float] = field(default_factory=lambda: {"turns": 0, "tool_calls": 0, "tool_errors": 0,
                                                             "tool_s": 0.0})
    done: bool = False
    truncated: bool = False  # its last turn ran out of tokens before a stop

    def append(self, ids: list[int], logprobs: list[float] | None) -> None:
        """Sampled ids with their log-probs (in the loss), or a tool's ids (`logprobs` None: masked out)."""
        self.ids += ids
        self.loss_mask += [0 if logprobs is None else 1] * len(ids)
        self.logprobs += [0.0] * len(ids) if logprobs is None else logprobs


def env_step(env: Environment, turn_text: str) -> StepResult:
    """The environment's answer to a turn; one that raises is the tool's error, shown to the model."""
    try:
        return env.step(turn_text)
    except Exception as e:
        return StepResult(f"error: the environment failed: {type(e).__name__}: {e}",
                          info={"tool_call": True, "error": True, "seconds": 0.0})


def sample_turn(model, tokenizer, rows: list[list[int]], params: SamplingParams,
                stop_strings: tuple[str, ...]) -> list[tuple[list[int], list[float], bool]]:
    """One model turn for each row of ids, left-padded into one batch (sample_with_logprobs)."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row):] = torch.tensor(row)
        attention[i, width - len(row):] = 1
    inputs = {"input_ids": input_ids.to(model.device), "attention_mask": attention.to(model.device)}
    return sample_with_logprobs(model, tokenizer, inputs, width, len(rows), params, stop_strings)


def generate_multiturn_groups(model, tokenizer, problems: list[Problem], params: SamplingParams, policy_version: int,
                              env_cfg: EnvConfig, system_prompt: str = "", prefill: str = "<think>",
                              prefills: list[str] | None = None) -> list[PromptGroup]:
    """generate_groups with an environment: one PromptGroup per problem, params.n trajectories each.
    Each model turn may write params.max_new_tokens tokens; a trajectory ends when a turn calls no
    tool (it answered), its environment says done, a turn runs out of tokens (truncated), or after
    env.max_turns turns."""
    start = time.perf_counter()
    prefills = prefills or [prefill] * len(problems)
    enc = encode_prompts(tokenizer, problems, system_prompt, prefills)
    groups_of = []
    for p, ids, mask in zip(problems, enc["input_ids"], enc["attention_mask"]):
        row = [Trajectory(ids[mask.bool()].tolist(), make_env(env_cfg)) for _ in range(params.n)]
        for t in row:
            first = t.env.reset({"question": p.question, "answer": p.answer, **p.columns})
            if first:
                t.append(tokenizer.encode(first, add_special_tokens=False), None)
        groups_of.append(row)
    stops = (*params.stop_strings, f"</{env_cfg.tool_tag}>")
    for _ in range(env_cfg.max_turns):
        active = [t for row in groups_of for t in row if not t.done]
        if not active:
            break
        for t, (ids, logprobs, stopped) in zip(active, sample_turn(model, tokenizer, [t.prompt_ids + t.ids for t in active],
                                                                    params, stops)):
            t.append(ids, logprobs)
            t.stats["turns"] += 1
            if not stopped:
                t.done = t.truncated = True
                continue
            result = env_step(t.env, tokenizer.decode(ids, skip_special_tokens=True))
            t.stats["tool_calls"] += bool(result.info.get("tool_call"))
            t.stats["tool_errors"] += bool(result.info.get("error"))
            t.stats["tool_s"] += float(result.info.get("seconds", 0.0))
            if result.done or not result.observation:
                t.done = True
            else:  # the tool's reply as tokens, never re-encoding what the model wrote
                t.append(tokenizer.encode(result.observation, add_special_tokens=False), None)
    # A trajectory still open after env.max_turns called a tool in its last turn: it ends unanswered.
    elapsed = time.perf_counter() - start
    return [PromptGroup(
        problem=p, prompt_ids=row[0].prompt_ids, completion_ids=[t.ids for t in row],
        completions=[pre + tokenizer.decode(t.ids, skip_special_tokens=True) for t in row],
        logprobs=[t.logprobs for t in row], truncated=[t.truncated for t in row], policy_version=policy_version,
        generate_s=elapsed / len(problems), loss_masks=[t.loss_mask for t in row],
        env_stats={k: sum(t.stats[k] for t in row) for k in row[0].stats})
        for p, pre, row in zip(problems, prefills, groups_of)]
