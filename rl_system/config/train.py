"""TrainConfig, the config of a training run: its sections and the rules that read several of them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from rl_system.config.checks import check, check_finite, check_precision, check_sampling
from rl_system.config.choices import (
    ADVANTAGE_ESTIMATORS, ATTN_IMPLEMENTATIONS, AUTO, LOSS_AGG_MODES, PLACEMENT_STRATEGIES, POLICY_LOSSES, PRM_AGGREGATES,
    PROMPT_KINDS, RAY_BUILTIN_RESOURCES, REFERENCE_PLACEMENTS, STEP_SPLITS, TASK_NAME,
)
from rl_system.config.jobs import SFTConfig
from rl_system.config.sections import (
    ClusterConfig, CollectConfig, DataConfig, DynamicSamplingConfig, EnvConfig, LearnerConfig, ModelConfig, R1Config,
    RejectionConfig, RewardConfig, RolloutConfig, SearchConfig, StarConfig,
)


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


def _validate(c: TrainConfig) -> None:
    check_finite(c, "")
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
        check(value > 0, key, "a positive integer", value)
    for key, value in {"learner.lr": c.learner.lr, "reward.timeout_s": c.reward.timeout_s,
                       "sync_timeout_s": c.sync_timeout_s,
                       "cluster.schedule_timeout_s": c.cluster.schedule_timeout_s}.items():
        check(value > 0, key, "a positive number", value)
    check_sampling("rollout", c.rollout.temperature, c.rollout.top_p, c.rollout.top_k)
    check_sampling("collect", c.collect.temperature, c.collect.top_p, c.collect.top_k)
    check(c.max_staleness >= 0, "max_staleness", "an integer >= 0", c.max_staleness)
    check(c.mode in ("sync", "async"), "mode", "'sync' or 'async'", c.mode)
    check(c.model.attn_implementation in ATTN_IMPLEMENTATIONS, "model.attn_implementation",
           f"one of {ATTN_IMPLEMENTATIONS}", c.model.attn_implementation)
    check(c.rollout.backend in ("hf", "vllm"), "rollout.backend", "'hf' or 'vllm'", c.rollout.backend)
    names = [t.name for t in c.data.tasks]
    for task in c.search.tasks:
        check(task in names, "search.tasks", f"names of data.tasks ({', '.join(names) or 'none: not a mixture'})", task)
    check(c.rollout.chunk_prompts >= 0, "rollout.chunk_prompts", "an integer >= 0 (0: chosen per batch)",
           c.rollout.chunk_prompts)
    check(c.rollout.cpu_kv_cache_gib > 0, "rollout.cpu_kv_cache_gib", "a positive integer", c.rollout.cpu_kv_cache_gib)
    check(c.rollout.vllm_max_model_len >= 0, "rollout.vllm_max_model_len", "an integer >= 0 (0: the model's)",
           c.rollout.vllm_max_model_len)
    check(0 < c.rollout.gpu_memory_utilization <= 1, "rollout.gpu_memory_utilization", "a number in (0, 1]",
           c.rollout.gpu_memory_utilization)
    check(c.mode == "sync" or c.max_staleness >= 1, "max_staleness",
           "an integer >= 1 with mode=async (how many batches generation runs ahead)", c.max_staleness)
    check(c.checkpoint_every >= 0, "checkpoint_every", "an integer >= 0", c.checkpoint_every)
    check(c.learner.beta >= 0, "learner.beta", "a number >= 0", c.learner.beta)
    check(not (c.learner.gradient_checkpointing and c.learner.share_prompt), "learner.share_prompt",
           "false with learner.gradient_checkpointing (a checkpointed forward keeps no KV cache to share)",
           c.learner.share_prompt)
    check(c.learner.logprob_chunk_tokens >= 0, "learner.logprob_chunk_tokens", "an integer >= 0 (0: no chunks)",
           c.learner.logprob_chunk_tokens)
    check(c.learner.tis_cap is None or c.learner.tis_cap == 0 or c.learner.tis_cap >= 1, "learner.tis_cap",
           "0 (off), a cap >= 1, or null (2.0 with rollout.backend=vllm, else off)", c.learner.tis_cap)
    check(c.learner.zero_stage in (0, 1, 2, 3), "learner.zero_stage", "0, 1, 2 or 3", c.learner.zero_stage)
    # ZeRO-3 shards each weight across ranks: the merged weights LoRA publishes need every weight whole.
    check(c.learner.lora.r == 0 or c.learner.zero_stage <= 2, "learner.lora.r",
           f"0 (LoRA off) with learner.zero_stage={c.learner.zero_stage}: LoRA needs learner.zero_stage 0, 1 or 2",
           c.learner.lora.r)
    # A rank drives one device, and NCCL wants a GPU of its own per rank: a fraction only for a lone rank.
    check(c.learner.num_gpus in (0, 1) or (0 < c.learner.num_gpus < 1 and c.learner.num_ranks == 1),
           "learner.num_gpus", "0, 1 (a GPU per rank), or a fraction with learner.num_ranks=1", c.learner.num_gpus)
    check(c.learner.advantage in ADVANTAGE_ESTIMATORS, "learner.advantage", f"one of {ADVANTAGE_ESTIMATORS}",
           c.learner.advantage)
    check(c.learner.std_norm or c.learner.advantage == "grpo", "learner.std_norm",
           f"true with learner.advantage={c.learner.advantage} (std_norm switches GRPO's group std)",
           c.learner.std_norm)
    check(c.learner.loss_agg in LOSS_AGG_MODES, "learner.loss_agg", f"one of {LOSS_AGG_MODES}",
           c.learner.loss_agg)
    check(c.learner.reference in REFERENCE_PLACEMENTS, "learner.reference", f"one of {REFERENCE_PLACEMENTS}",
           c.learner.reference)
    check(c.learner.reference in ("auto", "copy") or c.learner.zero_stage == 3, "learner.reference",
           f"'auto' or 'copy' with learner.zero_stage={c.learner.zero_stage} (sharded and offload are ZeRO-3 engines)",
           c.learner.reference)
    check(not c.learner.offload_optimizer or c.learner.zero_stage >= 1, "learner.offload_optimizer",
           "false with learner.zero_stage=0 (DeepSpeed offloads ZeRO's optimizer partitions)", c.learner.offload_optimizer)
    for key in ("ppo_epochs", "mini_batches"):
        check(isinstance(getattr(c.learner, key), int) and getattr(c.learner, key) >= 1, f"learner.{key}",
               "an integer >= 1", getattr(c.learner, key))
    check(c.learner.dual_clip == 0 or c.learner.dual_clip > 1, "learner.dual_clip", "0 (off) or a number > 1",
           c.learner.dual_clip)
    check(c.learner.policy_loss in POLICY_LOSSES, "learner.policy_loss", f"one of {POLICY_LOSSES}",
           c.learner.policy_loss)
    check(c.learner.entropy_coef >= 0, "learner.entropy_coef", "a number >= 0", c.learner.entropy_coef)
    _validate_data(c.data)
    check_precision("rollout.dtype", c.rollout.dtype)
    check_precision("learner.autocast_dtype", c.learner.autocast_dtype)
    check(not c.learner.bf16_weights or c.learner.autocast_dtype in (AUTO, "bfloat16"), "learner.bf16_weights",
           f"false with learner.autocast_dtype={c.learner.autocast_dtype} (bf16 weights compute in bfloat16)",
           c.learner.bf16_weights)
    check(len(c.reward.functions) + len(c.reward.models) > 0, "reward.functions",
           "at least one reward function or reward model", [])
    names = [f.name for f in c.reward.functions] + [m.name for m in c.reward.models]
    check(len(names) == len(set(names)), "reward", "distinct reward names", names)
    for r in (*c.reward.functions, *c.reward.models):
        check(r.applies_to in PROMPT_KINDS, f"reward '{r.name}' applies_to", f"one of {PROMPT_KINDS}", r.applies_to)
    for i, m in enumerate(c.reward.models):
        check(m.kind in ("orm", "prm"), f"reward.models[{i}].kind", "'orm' or 'prm'", m.kind)
        check(m.aggregate in PRM_AGGREGATES, f"reward.models[{i}].aggregate", f"one of {PRM_AGGREGATES}", m.aggregate)
        check(m.replicas > 0 and m.batch_size > 0, f"reward.models[{i}].replicas/batch_size", "positive integers",
               (m.replicas, m.batch_size))
        check_precision(f"reward.models[{i}].dtype", m.dtype)
    check(c.collect.step_split in STEP_SPLITS, "collect.step_split", f"one of {STEP_SPLITS}", c.collect.step_split)
    check(c.collect.mc_rollouts >= 0, "collect.mc_rollouts", "an integer >= 0", c.collect.mc_rollouts)
    check(c.star.iterations > 0, "star.iterations", "a positive integer", c.star.iterations)
    check("{question}" in c.star.hint_template and "{answer}" in c.star.hint_template, "star.hint_template",
           "a template with {question} and {answer}", c.star.hint_template)
    sequences = c.prompts_per_step * c.rollout.group_size
    per_rank = c.learner.num_ranks * c.learner.micro_batch_size
    check(sequences % per_rank == 0, "learner.micro_batch_size",
           f"learner.num_ranks x micro_batch_size to divide prompts_per_step x group_size = {sequences}",
           c.learner.micro_batch_size)
    check(c.learner.mini_batches <= sequences // c.learner.num_ranks, "learner.mini_batches",
           f"at most the sequences per rank ({sequences // c.learner.num_ranks}), each step needs one",
           c.learner.mini_batches)
    _validate_cluster_resources(c)
    _validate_ranges(c)
    check(c.buffer_capacity >= c.prompts_per_step, "buffer_capacity", f">= prompts_per_step ({c.prompts_per_step})",
           c.buffer_capacity)



def _validate_data(d: DataConfig) -> None:
    """Every task's source and columns; a mixture's names, sizes, weights and curriculum levels."""
    for i, t in enumerate(d.task_specs()):
        key = d.task_key(i)
        check(t.source in ("reasoning_gym", "file"), f"{key}.source", "'reasoning_gym' or 'file'", t.source)
        check(t.source != "file" or bool(t.path), f"{key}.path", f"a file path when {key}.source is 'file'", t.path)
        check(t.prompt_column != t.answer_column, f"{key}.answer_column",
               f"a column other than {key}.prompt_column ('{t.prompt_column}')", t.answer_column)
        if not d.tasks:
            continue
        # The name is a metric key's middle part (task/<name>/accuracy); "general" labels data.general_prompts.
        check(bool(TASK_NAME.fullmatch(t.name)) and t.name != "general", f"{key}.name",
               "a name of letters, digits, '_', '-' or '.', other than 'general'", t.name)
        check(t.weight >= 0, f"{key}.weight", "a number >= 0 (0: held out only)", t.weight)
        check(t.num_train > 0, f"{key}.num_train", "a positive integer", t.num_train)
        check(t.num_eval >= 0, f"{key}.num_eval", "an integer >= 0", t.num_eval)
        check(t.weight > 0 or t.num_eval > 0, f"{key}.num_eval", "a positive integer for a task of weight 0 "
               "(it is neither trained on nor evaluated)", t.num_eval)
        check(not t.levels or t.source == "reasoning_gym", f"{key}.levels",
               f"no levels with {key}.source 'file' (a level is a set of reasoning-gym task_args)", list(t.levels))
    names = [t.name for t in d.tasks]
    check(len(names) == len(set(names)), "data.tasks", "distinct task names", names)
    check(not d.tasks or any(t.weight > 0 for t in d.tasks), "data.tasks", "at least one task with weight > 0",
           [t.weight for t in d.tasks])
    check(0 < d.curriculum.threshold <= 1, "data.curriculum.threshold", "an accuracy in (0, 1]",
           d.curriculum.threshold)
    check(d.curriculum.window > 0, "data.curriculum.window", "a positive integer", d.curriculum.window)



def _validate_ranges(c: TrainConfig) -> None:
    """Bounds of the keys the checks above leave open, and options that contradict each other."""
    lc = c.learner
    for key, value in {"learner.weight_decay": lc.weight_decay, "learner.epsilon_low": lc.epsilon_low,
                       "learner.epsilon_high": lc.epsilon_high, "learner.grad_clip": lc.grad_clip,
                       "rollout.num_threads": c.rollout.num_threads, "learner.num_threads": lc.num_threads,
                       "data.general_prompts": c.data.general_prompts, "reward.num_cpus": c.reward.num_cpus,
                       "collect.num_eval_prompts": c.collect.num_eval_prompts,
                       "rejection.max_per_prompt": c.rejection.max_per_prompt}.items():
        check(value >= 0, key, "a number >= 0", value)
    check(lc.epsilon_low < 1, "learner.epsilon_low", "a number in [0, 1) (the ratio's lower clip is 1 - it)",
           lc.epsilon_low)
    check(all(0 <= b < 1 for b in lc.betas), "learner.betas", "two numbers in [0, 1)", list(lc.betas))
    for key, value in {"collect.num_train_prompts": c.collect.num_train_prompts,
                       "collect.mc_max_new_tokens": c.collect.mc_max_new_tokens,
                       "rejection.num_prompts": c.rejection.num_prompts, "star.num_prompts": c.star.num_prompts,
                       "r1.cold_start_prompts": c.r1.cold_start_prompts,
                       "r1.reasoning_rl_steps": c.r1.reasoning_rl_steps, "r1.rejection_prompts": c.r1.rejection_prompts,
                       "r1.all_scenario_rl_steps": c.r1.all_scenario_rl_steps, "r1.hh_rm_epochs": c.r1.hh_rm_epochs,
                       "r1.general_prompts": c.r1.general_prompts}.items():
        check(value > 0, key, "a positive integer", value)
    check(0 <= c.reward.max_failure_fraction <= 1, "reward.max_failure_fraction", "a share in [0, 1] (1: never stop)",
           c.reward.max_failure_fraction)
    check(c.reward.max_failing_steps > 0, "reward.max_failing_steps", "a positive integer", c.reward.max_failing_steps)
    check(0 <= c.reward.overlong_buffer < c.rollout.max_new_tokens, "reward.overlong_buffer",
           f"an integer in [0, rollout.max_new_tokens = {c.rollout.max_new_tokens}) (0: off)", c.reward.overlong_buffer)
    check(c.reward.overlong_penalty >= 0, "reward.overlong_penalty", "a number >= 0", c.reward.overlong_penalty)
    check(c.reward.overlong_buffer == 0 or all(r.name != "overlong" for r in (*c.reward.functions, *c.reward.models)),
           "reward.overlong_buffer", "0 while a reward is named 'overlong' (the penalty logs as reward/overlong)",
           c.reward.overlong_buffer)
    check(c.dynamic_sampling.max_rounds > 0, "dynamic_sampling.max_rounds",
           "a positive integer (generation rounds per step, the first included)", c.dynamic_sampling.max_rounds)
    # Async: refill prompts are drawn after the batches already ahead, and their keys are added first; the
    # buffer's duplicate window (buffer_capacity keys) must still reach back to the batches ahead.
    ahead = c.max_staleness * c.prompts_per_step if c.mode == "async" and c.dynamic_sampling.enabled else 0
    check(c.buffer_capacity >= ahead, "buffer_capacity",
           f">= max_staleness x prompts_per_step ({ahead}) with dynamic_sampling in async mode", c.buffer_capacity)
    for i, m in enumerate(c.reward.models):
        check(m.timeout_s > 0, f"reward.models[{i}].timeout_s", "a positive number", m.timeout_s)
        check(m.num_cpus >= 0 and m.num_gpus >= 0, f"reward.models[{i}].num_cpus/num_gpus", "numbers >= 0",
               (m.num_cpus, m.num_gpus))
    for name, minimum in c.rejection.require.items():
        check(isinstance(minimum, (int, float)) and not isinstance(minimum, bool), f"rejection.require.{name}",
               "a number (the lowest score an answer may have)", minimum)
    from rl_system.rewards.rules import LANGUAGE_SCRIPTS

    check(c.r1.language in LANGUAGE_SCRIPTS, "r1.language", f"one of {', '.join(sorted(LANGUAGE_SCRIPTS))}",
           c.r1.language)


def _validate_cluster_resources(c: TrainConfig) -> None:
    for role, section in (("rollout", c.rollout), ("learner", c.learner), ("reward", c.reward)):
        for key in ("num_cpus", "num_gpus", "memory"):
            value = getattr(section, key, 0.0)  # rule reward workers have no num_gpus
            check(value >= 0, f"{role}.{key}", "a number >= 0", value)
        for name, amount in section.resources.items():
            check(name not in RAY_BUILTIN_RESOURCES, f"{role}.resources", f"custom resource names only "
                   f"({role}.num_cpus / num_gpus / memory set the built-in ones)", name)
            check(isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount >= 0,
                   f"{role}.resources.{name}", "a number >= 0", amount)
    r = c.rollout
    check(r.min_workers >= 0, "rollout.min_workers", "an integer >= 0", r.min_workers)
    check(r.max_workers >= 0, "rollout.max_workers", "an integer >= 0", r.max_workers)
    low, high = r.worker_bounds()
    check(low <= r.num_workers, "rollout.min_workers", f"<= rollout.num_workers ({r.num_workers})", r.min_workers)
    check(r.num_workers <= high, "rollout.max_workers", f">= rollout.num_workers ({r.num_workers})", r.max_workers)
    check(0 <= r.scale_down_below < r.scale_up_above <= 1, "rollout.scale_up_above",
           f"a share in (rollout.scale_down_below = {r.scale_down_below}, 1]", r.scale_up_above)
    check(r.scale_cooldown_steps >= 0, "rollout.scale_cooldown_steps", "an integer >= 0", r.scale_cooldown_steps)
    check(c.learner.placement_strategy in PLACEMENT_STRATEGIES, "learner.placement_strategy",
           f"one of {PLACEMENT_STRATEGIES}", c.learner.placement_strategy)
    check(c.cluster.max_restarts >= 0, "cluster.max_restarts", "an integer >= 0", c.cluster.max_restarts)
    check(0 <= c.cluster.metrics_export_port < 65536, "cluster.metrics_export_port", "a port number (0 = any)",
           c.cluster.metrics_export_port)

