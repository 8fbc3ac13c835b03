"""TrainConfig, the config of a training run: its sections, its own keys, and the rules that read several keys.

What one key allows is declared beside it (sections.py, and the keys below); _validate checks every
number finite, then every declared rule (sections in order, then the top-level keys), then the rules
that read several keys, as code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rl_system.config.checks import (
    NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, check, check_finite, check_tree, one_of, section, setting,
)
from rl_system.config.choices import AUTO, PROMPT_KINDS, RAY_BUILTIN_RESOURCES
from rl_system.config.jobs import SFTConfig
from rl_system.config.sections import (
    ClusterConfig, CollectConfig, DataConfig, DynamicSamplingConfig, EnvConfig, LearnerConfig, LoggingConfig,
    ModelConfig, R1Config, RejectionConfig, RewardConfig, RolloutConfig, SearchConfig, StarConfig, WeightSyncConfig,
)


@dataclass(frozen=True)
class TrainConfig:
    """The config of `train` and of the commands built on a run's sections (pipeline, star, evaluate, ...)."""
    model: ModelConfig = section(ModelConfig)
    data: DataConfig = section(DataConfig)
    reward: RewardConfig = section(RewardConfig)
    rollout: RolloutConfig = section(RolloutConfig)
    learner: LearnerConfig = section(LearnerConfig)
    cluster: ClusterConfig = section(ClusterConfig)
    collect: CollectConfig = section(CollectConfig)
    rejection: RejectionConfig = section(RejectionConfig)
    star: StarConfig = section(StarConfig)
    sft: SFTConfig = section(SFTConfig, "the SFT stage of STaR and the R1 recipe")
    r1: R1Config = section(R1Config)
    search: SearchConfig = section(SearchConfig)
    dynamic_sampling: DynamicSamplingConfig = section(
        DynamicSamplingConfig, "DAPO: train only on groups whose rewards differ (algorithms/dapo.py)")
    env: EnvConfig = section(EnvConfig)
    logging: LoggingConfig = section(LoggingConfig)
    prompts_per_step: int = setting(4, "prompts per training step; each is sampled rollout.group_size times",
                                    POSITIVE_INT)
    num_steps: int = setting(25, "training steps", POSITIVE_INT)
    mode: str = setting("sync", "sync: each step generates with the newest weights, then trains; async: generation "
                                "runs max_staleness batches ahead of training", one_of(("sync", "async"), "'sync' or 'async'"))
    max_staleness: int = setting(0, "policy versions a group may lag; 0 = strictly on-policy", NON_NEGATIVE_INT)
    buffer_capacity: int = setting(64, "prompt groups held at most", POSITIVE_INT)
    seed: int = setting(0, "seed of sampling and training")
    output_dir: str = setting("runs/r1_zero", "the run directory: checkpoints, metrics, results")
    eval_before: bool = setting(True, "evaluate the held-out split before training")
    eval_after: bool = setting(True, "evaluate the held-out split after training")
    eval_max_new_tokens: int = setting(64, "longest answer in evaluation, in tokens", POSITIVE_INT)
    sync_timeout_s: float = setting(300.0, "deadline on one whole weight publish", POSITIVE)
    weight_sync: WeightSyncConfig = section(WeightSyncConfig)
    checkpoint_every: int = setting(10, "steps between checkpoints (0: only at the end); the last is always saved",
                                    NON_NEGATIVE_INT)

    def __post_init__(self) -> None:
        _validate(self)


def sampling_for(cfg: TrainConfig, section: SearchConfig | CollectConfig) -> TrainConfig:
    """cfg whose rollout workers sample with the section's temperature, top_p and top_k: what evaluate
    (cfg.search) and collect-samples (cfg.collect) start their workers with."""
    rollout = dataclasses.replace(cfg.rollout, temperature=section.temperature, top_p=section.top_p,
                                  top_k=section.top_k)
    return dataclasses.replace(cfg, rollout=rollout)


def _validate(c: TrainConfig) -> None:
    check_finite(c, "")
    check_tree(c, "")
    names = [t.name for t in c.data.tasks]
    for task in c.search.tasks:
        check(task in names, "search.tasks", f"names of data.tasks ({', '.join(names) or 'none: not a mixture'})", task)
    check(c.mode == "sync" or c.max_staleness >= 1, "max_staleness",
           "an integer >= 1 with mode=async (how many batches generation runs ahead)", c.max_staleness)
    partial = c.rollout.partial_rollout
    check(not partial or c.mode == "async", "rollout.partial_rollout",
           "false with mode=sync (partial rollouts resume generations across async mode's weight updates)", partial)
    check(not partial or c.rollout.backend == "hf", "rollout.partial_rollout",
           "false with rollout.backend=vllm (partial rollouts need rollout.backend=hf for now)", partial)
    check(not partial or not c.env.name, "rollout.partial_rollout",
           "false with env.name set (partial rollouts resume single-turn generations only)", partial)
    check(not (c.learner.gradient_checkpointing and c.learner.share_prompt), "learner.share_prompt",
           "false with learner.gradient_checkpointing (a checkpointed forward keeps no KV cache to share)",
           c.learner.share_prompt)
    # ZeRO-3 shards each weight across ranks: the merged weights LoRA publishes need every weight whole.
    check(c.learner.lora.r == 0 or c.learner.zero_stage <= 2, "learner.lora.r",
           f"0 (LoRA off) with learner.zero_stage={c.learner.zero_stage}: LoRA needs learner.zero_stage 0, 1 or 2",
           c.learner.lora.r)
    # A rank drives one device, and NCCL wants a GPU of its own per rank: a fraction only for a lone rank, or
    # colocated (each rank's bundle is one GPU, shared with a rollout worker only).
    check(c.learner.num_gpus in (0, 1) or (0 < c.learner.num_gpus < 1 and (c.learner.num_ranks == 1
                                                                            or c.cluster.colocate)),
           "learner.num_gpus", "0, 1 (a GPU per rank), or a fraction with learner.num_ranks=1 or cluster.colocate",
           c.learner.num_gpus)
    check(c.learner.std_norm or c.learner.advantage == "grpo", "learner.std_norm",
           f"true with learner.advantage={c.learner.advantage} (std_norm switches GRPO's group std)",
           c.learner.std_norm)
    check(c.learner.reference in ("auto", "copy") or c.learner.zero_stage == 3, "learner.reference",
           f"'auto' or 'copy' with learner.zero_stage={c.learner.zero_stage} (sharded and offload are ZeRO-3 engines)",
           c.learner.reference)
    check(not c.learner.offload_optimizer or c.learner.zero_stage >= 1, "learner.offload_optimizer",
           "false with learner.zero_stage=0 (DeepSpeed offloads ZeRO's optimizer partitions)", c.learner.offload_optimizer)
    _validate_data(c.data)
    check(not c.learner.bf16_weights or c.learner.autocast_dtype in (AUTO, "bfloat16"), "learner.bf16_weights",
           f"false with learner.autocast_dtype={c.learner.autocast_dtype} (bf16 weights compute in bfloat16)",
           c.learner.bf16_weights)
    _validate_rewards(c)
    sequences = c.prompts_per_step * c.rollout.group_size
    per_rank = c.learner.num_ranks * c.learner.micro_batch_size
    check(sequences % per_rank == 0, "learner.micro_batch_size",
           f"learner.num_ranks x micro_batch_size to divide prompts_per_step x group_size = {sequences}",
           c.learner.micro_batch_size)
    check(c.learner.mini_batches <= sequences // c.learner.num_ranks, "learner.mini_batches",
           f"at most the sequences per rank ({sequences // c.learner.num_ranks}), each step needs one",
           c.learner.mini_batches)
    _validate_cluster_resources(c)
    _validate_colocation(c)
    check(c.buffer_capacity >= c.prompts_per_step, "buffer_capacity", f">= prompts_per_step ({c.prompts_per_step})",
           c.buffer_capacity)
    # Async: refill prompts are drawn after the batches already ahead, and their keys are added first; the
    # buffer's duplicate window (buffer_capacity keys) must still reach back to the batches ahead.
    ahead = c.max_staleness * c.prompts_per_step if c.mode == "async" and c.dynamic_sampling.enabled else 0
    check(c.buffer_capacity >= ahead, "buffer_capacity",
           f">= max_staleness x prompts_per_step ({ahead}) with dynamic_sampling in async mode", c.buffer_capacity)
    for name, minimum in c.rejection.require.items():
        check(isinstance(minimum, (int, float)) and not isinstance(minimum, bool), f"rejection.require.{name}",
               "a number (the lowest score an answer may have)", minimum)


def _validate_colocation(c: TrainConfig) -> None:
    """cluster.colocate pairs rollout worker i with learner rank i on one bundle and takes turns on it;
    weight_sync.method=broadcast's group is fixed when the run starts."""
    check(c.weight_sync.method == "shared_memory" or c.rollout.worker_bounds() == (c.rollout.num_workers,) * 2,
           "rollout.max_workers", "0 with weight_sync.method=broadcast (its group is fixed when the run starts)",
           c.rollout.max_workers)
    if not c.cluster.colocate:
        return
    check(c.mode == "sync", "mode", "sync with cluster.colocate (the roles take turns on each device)", c.mode)
    check(c.rollout.num_workers == c.learner.num_ranks, "rollout.num_workers",
           f"learner.num_ranks ({c.learner.num_ranks}) with cluster.colocate: one worker per shared bundle",
           c.rollout.num_workers)
    check(c.rollout.worker_bounds() == (c.rollout.num_workers,) * 2, "rollout.max_workers",
           "0 with cluster.colocate (a fixed pool, one worker per shared bundle)", c.rollout.max_workers)
    shares = c.learner.num_gpus + c.rollout.num_gpus
    check((c.learner.num_gpus > 0) == (c.rollout.num_gpus > 0) and shares <= 1, "rollout.num_gpus",
           f"a fraction with learner.num_gpus ({c.learner.num_gpus}) of at most 1 together with cluster.colocate "
           "(both 0 on CPU)", c.rollout.num_gpus)
    check(c.rollout.backend == "hf" or c.rollout.num_gpus > 0, "rollout.backend",
           "hf with cluster.colocate on CPU (vLLM's sleep mode needs a GPU)", c.rollout.backend)
    check(c.weight_sync.method == "shared_memory" or c.rollout.num_gpus == 0, "weight_sync.method",
           "shared_memory with cluster.colocate on GPUs (NCCL cannot pair two ranks on one GPU)", c.weight_sync.method)


def _validate_data(d: DataConfig) -> None:
    """Every task's source and columns; a mixture's names and weights (each task's own keys are its rules)."""
    for i, t in enumerate(d.task_specs()):
        key = d.task_key(i)
        check(t.source in ("reasoning_gym", "file"), f"{key}.source", "'reasoning_gym' or 'file'", t.source)
        check(t.source != "file" or bool(t.path), f"{key}.path", f"a file path when {key}.source is 'file'", t.path)
        check(t.prompt_column != t.answer_column, f"{key}.answer_column",
               f"a column other than {key}.prompt_column ('{t.prompt_column}')", t.answer_column)
        if not d.tasks:
            continue
        check(t.weight > 0 or t.num_eval != 0, f"{key}.num_eval", "a positive integer for a task of weight 0 "
               "(it is neither trained on nor evaluated)", t.num_eval)
        check(not t.levels or t.source == "reasoning_gym", f"{key}.levels",
               f"no levels with {key}.source 'file' (a level is a set of reasoning-gym task_args)", list(t.levels))
    names = [t.name for t in d.tasks]
    check(len(names) == len(set(names)), "data.tasks", "distinct task names", names)
    check(not d.tasks or any(t.weight > 0 for t in d.tasks), "data.tasks", "at least one task with weight > 0",
           [t.weight for t in d.tasks])
    f = d.difficulty_filter
    check(f.low < f.high, "data.difficulty_filter.low", f"less than data.difficulty_filter.high ({f.high})", f.low)


def _validate_rewards(c: TrainConfig) -> None:
    """The rewards as a whole, and the keys of a reward checked together."""
    check(len(c.reward.functions) + len(c.reward.models) > 0, "reward.functions",
           "at least one reward function or reward model", [])
    names = [f.name for f in c.reward.functions] + [m.name for m in c.reward.models]
    check(len(names) == len(set(names)), "reward", "distinct reward names", names)
    for r in (*c.reward.functions, *c.reward.models):
        check(r.applies_to in PROMPT_KINDS, f"reward '{r.name}' applies_to", f"one of {PROMPT_KINDS}", r.applies_to)
    for i, m in enumerate(c.reward.models):
        check(m.replicas > 0 and m.batch_size > 0, f"reward.models[{i}].replicas/batch_size", "positive integers",
               (m.replicas, m.batch_size))
        check(m.num_cpus >= 0 and m.num_gpus >= 0, f"reward.models[{i}].num_cpus/num_gpus", "numbers >= 0",
               (m.num_cpus, m.num_gpus))
    check(0 <= c.reward.overlong_buffer < c.rollout.max_new_tokens, "reward.overlong_buffer",
           f"an integer in [0, rollout.max_new_tokens = {c.rollout.max_new_tokens}) (0: off)", c.reward.overlong_buffer)
    check(c.reward.overlong_buffer == 0 or all(r.name != "overlong" for r in (*c.reward.functions, *c.reward.models)),
           "reward.overlong_buffer", "0 while a reward is named 'overlong' (the penalty logs as reward/overlong)",
           c.reward.overlong_buffer)


def _validate_cluster_resources(c: TrainConfig) -> None:
    for role, part in (("rollout", c.rollout), ("learner", c.learner), ("reward", c.reward)):
        for name, amount in part.resources.items():
            check(name not in RAY_BUILTIN_RESOURCES, f"{role}.resources", f"custom resource names only "
                   f"({role}.num_cpus / num_gpus / memory set the built-in ones)", name)
            check(isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount >= 0,
                   f"{role}.resources.{name}", "a number >= 0", amount)
    r = c.rollout
    low, high = r.worker_bounds()
    check(low <= r.num_workers, "rollout.min_workers", f"<= rollout.num_workers ({r.num_workers})", r.min_workers)
    check(r.num_workers <= high, "rollout.max_workers", f">= rollout.num_workers ({r.num_workers})", r.max_workers)
    check(0 <= r.scale_down_below < r.scale_up_above <= 1, "rollout.scale_up_above",
           f"a share in (rollout.scale_down_below = {r.scale_down_below}, 1]", r.scale_up_above)
