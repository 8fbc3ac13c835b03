"""The configs of the jobs that run outside a training run: SFT / distillation, reward-model training."""
from __future__ import annotations

from dataclasses import dataclass, field

from rl_system.config.checks import check, check_finite, check_precision


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
        check_finite(self, "")
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        check(self.grad_clip >= 0, "grad_clip", "a number >= 0 (0: no clipping)", self.grad_clip)
        check(self.schedule_timeout_s > 0, "schedule_timeout_s", "a positive number", self.schedule_timeout_s)
        check(self.num_cpus_per_worker >= 0, "num_cpus_per_worker", "a number >= 0", self.num_cpus_per_worker)
        for key in ("epochs", "micro_batch_size", "max_length", "num_workers"):
            check(getattr(self, key) > 0, key, "a positive integer", getattr(self, key))
        check(self.lr > 0, "lr", "a positive number", self.lr)
        check(self.temperature > 0, "temperature", "a positive number", self.temperature)
        check(0 <= self.distill_weight <= 1, "distill_weight", "a number in [0, 1]", self.distill_weight)
        check(self.zero_stage in (0, 1, 2, 3), "zero_stage", "0, 1, 2 or 3", self.zero_stage)
        check_precision("autocast_dtype", self.autocast_dtype)


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
        check_finite(self, "")
        check(self.kind in ("orm", "prm"), "kind", "'orm' or 'prm'", self.kind)
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0", self.weight_decay)
        check(self.num_threads >= 0, "num_threads", "an integer >= 0 (0: all cores)", self.num_threads)
        for key in ("epochs", "batch_size", "max_length"):
            check(getattr(self, key) > 0, key, "a positive integer", getattr(self, key))
        check(self.lr > 0, "lr", "a positive number", self.lr)
        check_precision("autocast_dtype", self.autocast_dtype)

