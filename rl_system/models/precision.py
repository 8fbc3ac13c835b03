"""Precision chosen for the hardware a role runs on.

Every dtype key of the config takes "auto" (the default) or a dtype name. `resolve` turns it into a
dtype on the device the role was given, in the process that uses it, so each node of a mixed cluster
decides for itself:

- CUDA: bfloat16 where the GPU computes it natively (compute capability 8.0 and newer), else float16
  (trainers add a loss scaler and keep fp32 master weights) where it has tensor cores (7.0+), else
  float32.
- CPU: bfloat16 only where the CPU computes it natively (AVX-512-BF16 or AMX, and oneDNN allowed to
  use them); elsewhere float32, since bf16 there is emulated and training ~20x slower.

An explicit dtype is honoured: one the hardware runs slowly gets a one-line warning with what auto
would pick and the slow-down measured on such hardware; one it cannot run at all is a PrecisionError.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass

import torch

from rl_system.config import AUTO, DTYPES

NATIVE, SLOW, UNSUPPORTED = "native", "slow", "unsupported"
# What auto prefers, among the dtypes a device runs natively. Never float16 on a CPU: it needs a loss
# scale, and no CPU here has shown it faster than float32 (x86 chips with fp16 units have bf16 too).
AUTO_ORDER = {"cuda": ("bfloat16", "float16", "float32"), "cpu": ("bfloat16", "float32")}
# Slow-downs against float32 measured where a dtype is not native, for the warning an explicit choice
# gets (benchmarks/precision.py; benchmarks/results.md (o)).
MEASURED_SLOWDOWN = {
    ("cpu", "bfloat16"): "on a 2-core AMD EPYC with AVX2 only it measured 22x slower than float32 to train and "
                         "2.0x to sample (benchmarks/precision.py, SmolLM2-135M)",
    ("cpu", "float16"): "on a 2-core AMD EPYC with AVX2 only it measured 24x slower than float32 to train and "
                        "1.8x to sample (benchmarks/precision.py, SmolLM2-135M)",
    ("cuda", "bfloat16"): "it is emulated before compute capability 8.0 (not yet measured on such a GPU)",
    ("cuda", "float16"): "there are no tensor cores before compute capability 7.0 (not yet measured on such a GPU)",
}


class PrecisionError(ValueError):
    """A dtype the hardware cannot run; the message is one line naming the config key."""


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype of a resolved dtype name (config.DTYPES), never "auto"."""
    if name not in DTYPES:
        raise ValueError(f"dtype '{name}': expected one of {', '.join(DTYPES)}")
    return getattr(torch, name)


@dataclass(frozen=True)
class Hardware:
    """What one device computes natively: the facts `resolve` decides from."""
    device_type: str  # "cpu" or "cuda"
    kind: str  # the node kind in reports, e.g. "cpu AMD EPYC (AVX2)" or "cuda NVIDIA H200 (sm_90)"
    support: tuple[tuple[str, str], ...]  # (dtype name, NATIVE | SLOW | UNSUPPORTED) for each of DTYPES

    def level(self, dtype: str) -> str:
        return dict(self.support)[dtype]

    def auto(self) -> str:
        return next(d for d in AUTO_ORDER[self.device_type] if self.level(d) == NATIVE)


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor() or platform.machine()


def cpu_flags(names=("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")) -> list[str]:
    """Which of `names` /proc/cpuinfo lists: the chip's own flags (what an emulation does not hide)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [name for name in names if name in flags]


def cpu_hardware(model: str, capability: str, onednn_bf16: bool, onednn_fp16: bool, bf16_units: bool) -> Hardware:
    """A CPU as oneDNN will run it. oneDNN's answers follow ONEDNN_MAX_CPU_ISA (an AVX-512 host run as
    AVX2 says no), which /proc/cpuinfo does not; but an x86 AVX-512 chip without bf16 units says yes
    too (oneDNN emulates bf16 there), so native bf16 also needs the chip's units (`bf16_units`)."""
    bf16 = NATIVE if onednn_bf16 and bf16_units else SLOW
    fp16 = NATIVE if onednn_fp16 else SLOW
    units = ", ".join(u for u, on in (("native bf16", bf16 == NATIVE), ("native fp16", fp16 == NATIVE)) if on)
    return Hardware("cpu", f"cpu {model} ({capability}{', ' + units if units else ''})",
                    (("float32", NATIVE), ("bfloat16", bf16), ("float16", fp16)))


@functools.cache
def this_cpu() -> Hardware:
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return cpu_hardware(cpu_model_name() or platform.machine(), torch.backends.cpu.get_cpu_capability(),
                        torch.ops.mkldnn._is_mkldnn_bf16_supported(), torch.ops.mkldnn._is_mkldnn_fp16_supported(),
                        bf16_units=not x86 or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cuda_hardware(capability: tuple[int, int], name: str, bf16_emulated: bool) -> Hardware:
    """A GPU of compute `capability`: bf16 native from Ampere (8.0), fp16 on tensor cores from Volta (7.0)."""
    bf16 = NATIVE if capability >= (8, 0) else SLOW if bf16_emulated else UNSUPPORTED
    fp16 = NATIVE if capability >= (7, 0) else SLOW
    kind = f"cuda {name} (sm_{capability[0]}{capability[1]})"
    return Hardware("cuda", kind, (("float32", NATIVE), ("bfloat16", bf16), ("float16", fp16)))


def detect(device: torch.device | str) -> Hardware:
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index or 0
        return cuda_hardware(torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index),
                             torch.cuda.is_bf16_supported(including_emulation=True))
    if device.type == "cpu":
        return this_cpu()
    raise PrecisionError(f"device {device}: no precision rules for this kind of device (cpu and cuda have them)")


@dataclass(frozen=True)
class Resolved:
    """One role's precision on one device: what was asked, what it runs in, and why it is worth a warning."""
    role: str  # "rollout", "learner", "reward_model:<name>", "sft", ...
    key: str  # the config key that asked
    requested: str  # "auto" or a dtype name
    dtype: str  # what the role computes in
    node_kind: str  # Hardware.kind
    warning: str = ""  # one line, for an explicit dtype the hardware runs slowly
    weights: str = ""  # trainers: the parameters' dtype in the engine (master weights are float32)
    reference: str = ""  # the learner: the reference policy's weights

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v != ""}


def resolve(requested: str, key: str, hardware: Hardware, role: str = "") -> Resolved:
    """`requested` ("auto" or a dtype name, from config key `key`) on `hardware`."""
    role = role or key.split(".")[0]
    if requested == AUTO:
        return Resolved(role, key, requested, hardware.auto(), hardware.kind)
    level = hardware.level(requested)
    if level == UNSUPPORTED:
        raise PrecisionError(f"config key '{key}': {requested} cannot run on {hardware.kind}; "
                             f"use auto ({hardware.auto()} here) or float32")
    warning = ""
    if level == SLOW:
        factor = MEASURED_SLOWDOWN.get((hardware.device_type, requested), "")
        warning = (f"{key}={requested} on {hardware.kind}, which has no native {requested}: auto would pick "
                   f"{hardware.auto()}" + (f"; {factor}" if factor else ""))
    return Resolved(role, key, requested, requested, hardware.kind, warning)


@dataclass(frozen=True)
class TrainingPrecision:
    """How a trainer runs a resolved compute dtype. Master weights are always float32: the weights
    themselves under autocast, or the optimizer's copy when the weights are bf16."""
    compute: str  # what matmuls run in
    weights: str  # the parameters' dtype in the engine: float32, or bfloat16 (learner.bf16_weights)

    @classmethod
    def of(cls, resolved: Resolved, bf16_weights: bool = False) -> "TrainingPrecision":
        """`bf16_weights`: the parameters and gradients in bf16 (resolved asked for bfloat16: see
        LearnerConfig.compute_request), fp32 masters in DeepSpeed's optimizer (its bf16 section)."""
        return cls(resolved.dtype, "bfloat16" if bf16_weights else "float32")

    @property
    def loss_scaling(self) -> bool:
        """float16's narrow range needs a dynamic loss scale; bf16 has float32's range."""
        return self.compute == "float16"

    @property
    def autocast(self) -> torch.dtype | None:
        """torch.autocast's dtype; None where the weights already compute in the compute dtype."""
        return None if self.compute == self.weights else dtype_from_name(self.compute)

    def deepspeed_sections(self, device_type: str) -> dict:
        """DeepSpeed config sections for this precision: bf16 (bf16 weights, fp32 masters), or
        torch_autocast. The latter on CUDA, where DeepSpeed 0.19 turns an autocast the caller opened off
        inside the engine's forward unless asked (seen on an H200), and for float16 anywhere, where it
        brings the GradScaler that scales the loss (dynamically) and unscales it before the step."""
        if self.weights == "bfloat16":
            return {"bf16": {"enabled": True}}
        if self.autocast is not None and (device_type == "cuda" or self.loss_scaling):
            return {"torch_autocast": {"enabled": True, "dtype": self.compute}}
        return {}

    def grad_scaler(self, device_type: str):
        """A plain torch trainer's loss scaler: torch.amp's GradScaler for float16, else one that does nothing."""
        return torch.amp.GradScaler(device_type, enabled=self.loss_scaling)


def describe(reports: list[dict]) -> str:
    """One line from Resolved.as_dict reports of every actor: per role and node kind, what each runs in
    (workers that agree counted once, `x N`)."""
    counted: dict[tuple, int] = {}
    for r in reports:
        extra = [f"{name} {r[name]}" for name in ("weights", "reference") if name in r]
        if "weights" in r:
            extra.append("masters float32")
        label = (r["role"], r["node_kind"], r["dtype"] + (f" ({', '.join(extra)})" if extra else "")
                 + (" (auto)" if r["requested"] == AUTO else " (set)"))
        counted[label] = counted.get(label, 0) + 1
    parts = [f"{role} {what} on {kind}" + (f" x{n}" if n > 1 else "") for (role, kind, what), n in counted.items()]
    return "precision: " + "; ".join(parts)


def publish_dtype(reports: list[dict]) -> str:
    """The dtype weights are published in: the rollout workers' when they all agree (a load is then a
    pointer swap), else float32, which each worker casts from."""
    rollout = {r["dtype"] for r in reports if r["role"] == "rollout"}
    return rollout.pop() if len(rollout) == 1 else "float32"


def announce(reports: list[dict], log=print) -> None:
    """The run's precision in one line (describe), then each distinct warning of the reports once."""
    log(describe(reports))
    for warning in dict.fromkeys(r["warning"] for r in reports if r.get("warning")):
        log(f"warning: {warning}")
