"""The one place a rollout becomes single- or multi-turn: a backend samples turns (and, single-turn,
whole groups); Sampler.sample wraps either in the multi-turn tool loop when env.name is set."""
from __future__ import annotations

from typing import Protocol

from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.envs.runner import EnvRunner, LocalEnvs
from rl_system.rollout.multiturn import TurnSampler, generate_multiturn_groups
from rl_system.rollout.params import SamplingParams, sampling_params
from rl_system.types import PromptGroup


class WeightFeed(Protocol):
    """Partial rollouts (rollout.partial_rollout): the policy versions published while a call
    generates, as the rollout worker sees them (actors/rollout.py's PublishedWeights)."""
    version: int  # the version the sampler's model holds now

    def newer(self) -> bool: ...  # is a newer version published?
    def load(self) -> None: ...  # load the newest into the sampler's model; `version` follows


class Sampler:
    """A rollout backend (rollout/hf.py, rollout/vllm.py) holding one generation copy of the policy."""

    def __init__(self, cfg: TrainConfig, tokenizer):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.weights: WeightFeed | None = None  # set with partial rollouts: calls resume under newer weights

    def sample(self, problems: list[Problem], policy_version: int, greedy: bool = False,
               max_new_tokens: int | None = None, n: int | None = None, prefills: list[str] | None = None,
               stop_strings: tuple[str, ...] | None = None, envs: EnvRunner | None = None) -> list[PromptGroup]:
        """generate with the run's sampling settings; any argument given overrides its setting."""
        return self.generate(problems, sampling_params(self.cfg, greedy, max_new_tokens, n, stop_strings), policy_version,
                             prefills, envs)

    def generate(self, problems: list[Problem], params: SamplingParams, policy_version: int,
                 prefills: list[str] | None = None, envs: EnvRunner | None = None) -> list[PromptGroup]:
        """One group of params.n samples per problem, in calls of problems_per_call problems. With
        env.name, multi-turn trajectories whose environments run on `envs` (an EnvRunner; by default
        in this process). `prefills` (one per problem) continues each answer from its own text
        instead of data.prefill."""
        prefills = prefills or [self.cfg.data.prefill] * len(problems)
        if self.cfg.env.name:
            envs = envs or LocalEnvs(self.cfg.env)
        step = self.problems_per_call(params) or len(problems) or 1
        groups = []
        for i in range(0, len(problems), step):
            part, pre = problems[i:i + step], prefills[i:i + step]
            if self.cfg.env.name:
                groups += generate_multiturn_groups(self.turns(params), self.tokenizer, part, params, policy_version,
                                                    envs, self.cfg.data.system_prompt, prefills=pre)
            else:
                groups += self.single_turn_groups(part, params, policy_version, pre)
        return groups

    def release(self) -> None:
        """Frees this copy's device memory for the learner beside it (cluster.colocate): the weights and
        any cache go; `restore` gives the weights their memory back, and the next publish fills it."""
        raise NotImplementedError

    def restore(self) -> None:
        """Undoes `release`; nothing to do where nothing was released."""
        raise NotImplementedError

    def memory_bytes(self) -> int:
        """What this copy holds now: its device's allocated bytes on a GPU, its weights' bytes on the CPU."""
        raise NotImplementedError

    def problems_per_call(self, params: SamplingParams) -> int:
        """Problems generated together; 0: all of a request at once."""
        return 0

    def single_turn_groups(self, problems: list[Problem], params: SamplingParams, policy_version: int,
                           prefills: list[str]) -> list[PromptGroup]:
        """Single-turn: one PromptGroup of params.n completions per problem."""
        raise NotImplementedError

    def turns(self, params: SamplingParams) -> TurnSampler:
        """Multi-turn: how this backend samples one model turn of many trajectories."""
        raise NotImplementedError
