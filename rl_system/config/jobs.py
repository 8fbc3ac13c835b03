"""The configs of the jobs that run outside a training run: SFT / distillation, reward-model training.

Each is a whole config of its own (its keys have no prefix): `python -m rl_system sft key=value`.
"""
from __future__ import annotations

from dataclasses import dataclass

from rl_system.config.checks import (
    NON_NEGATIVE, POSITIVE, POSITIVE_INT, PRECISION, ZERO_STAGE, Rule, check_section, one_of, setting,
)


@dataclass(frozen=True)
class SFTConfig:
    """`sft` / `distill`: supervised fine-tuning on chat data on Ray Train (DeepSpeed on N workers)."""
    base_model: str = setting("models/smollm2-135m-instruct", "the model trained (the student when distilling)")
    data: str = setting("runs/sft_data", "a datasets directory or json/jsonl/parquet with a `messages` column")
    output_dir: str = setting("runs/sft", "where the fine-tuned model is written")
    teacher_model: str = setting("", "distillation: the teacher whose token distribution the student follows")
    distill_weight: float = setting(1.0, "with a teacher: 1 = pure forward KL, 0 = plain cross-entropy",
                                    Rule(lambda v: 0 <= v <= 1, "a number in [0, 1]"))
    temperature: float = setting(1.0, "distillation temperature (the KL term is scaled by T^2)", POSITIVE)
    epochs: int = setting(2, "passes over the data", POSITIVE_INT)
    lr: float = setting(1e-5, "learning rate (AdamW)", POSITIVE)
    weight_decay: float = setting(0.0, "AdamW weight decay", NON_NEGATIVE)
    micro_batch_size: int = setting(8, "sequences per worker per step", POSITIVE_INT)
    max_length: int = setting(512, "longest training sequence, in tokens", POSITIVE_INT)
    grad_clip: float = setting(1.0, "gradient-norm clip; 0 = none", Rule(lambda v: v >= 0, "a number >= 0 (0: no clipping)"))
    num_workers: int = setting(2, "Ray Train workers = DeepSpeed ranks", POSITIVE_INT)
    zero_stage: int = setting(2, "DeepSpeed ZeRO stage", ZERO_STAGE)
    deepspeed: dict = setting({}, "merged over the generated DeepSpeed JSON")
    autocast_dtype: str = setting("auto", "as learner.autocast_dtype, resolved on each worker's device", PRECISION)
    num_cpus_per_worker: float = setting(1.0, "CPUs reserved per worker", NON_NEGATIVE)
    use_gpu: bool = setting(False, "one GPU per worker")
    seed: int = setting(0, "seed of the data order and initialisation")
    trust_remote_code: bool = setting(False, "let transformers run the model directory's own code")
    schedule_timeout_s: float = setting(600.0, "as cluster.schedule_timeout_s, for `sft` / `distill` on their own",
                                        POSITIVE)

    def __post_init__(self) -> None:
        check_section(self, "")


@dataclass(frozen=True)
class RewardModelTrainConfig:
    """`train-orm` / `train-prm`: a scalar head on a causal LM, trained on collect-samples output."""
    base_model: str = setting("models/smollm2-135m-instruct", "the causal LM the scalar head goes on")
    samples: str = setting("runs/samples", "a datasets directory from collect-samples")
    output_dir: str = setting("runs/orm", "where the reward model is written")
    kind: str = setting("orm", "orm or prm: set by the command", one_of(("orm", "prm"), "'orm' or 'prm'"))
    epochs: int = setting(2, "passes over the samples", POSITIVE_INT)
    lr: float = setting(2e-5, "learning rate (AdamW)", POSITIVE)
    batch_size: int = setting(8, "samples per step", POSITIVE_INT)
    max_length: int = setting(512, "longest sample, in tokens", POSITIVE_INT)
    weight_decay: float = setting(0.0, "AdamW weight decay", NON_NEGATIVE)
    autocast_dtype: str = setting("auto", "as learner.autocast_dtype; float16 trains with torch.amp's loss scaler",
                                  PRECISION)
    seed: int = setting(0, "seed of the data order and the head's initialisation")
    num_threads: int = setting(0, "torch threads; 0 = all cores", Rule(lambda v: v >= 0, "an integer >= 0 (0: all cores)"))
    trust_remote_code: bool = setting(False, "let transformers run the model directory's own code")

    def __post_init__(self) -> None:
        check_section(self, "")
