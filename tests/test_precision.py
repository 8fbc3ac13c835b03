"""Precision chosen per machine (rl_system/models/precision.py). The hardware is faked where the
test is about a machine this one is not (AVX-512-BF16, AMX, GPUs of each generation): the decision
is a pure function of a few facts, and only those facts are faked. The AVX2 case also runs for real,
in a subprocess told to use AVX2 kernels only, on whatever CPU runs the suite."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rl_system.config import AUTO, ConfigError, RewardModelTrainConfig, SFTConfig, TrainConfig, load_config
from rl_system.models import PrecisionError, TrainingPrecision, describe, publish_dtype, resolve
from rl_system.models.precision import MEASURED_SLOWDOWN, cpu_hardware, cuda_hardware

AVX2 = cpu_hardware("AVX2 CPU", "AVX2", onednn_bf16=False, onednn_fp16=False, bf16_units=False)
AVX512 = cpu_hardware("Skylake", "AVX512", onednn_bf16=True, onednn_fp16=False, bf16_units=False)  # oneDNN emulates bf16
AVX512_BF16 = cpu_hardware("Zen 4", "AVX512", onednn_bf16=True, onednn_fp16=False, bf16_units=True)
AMX = cpu_hardware("Sapphire Rapids", "AVX512", onednn_bf16=True, onednn_fp16=True, bf16_units=True)
V100 = cuda_hardware((7, 0), "V100", bf16_emulated=True)
T4 = cuda_hardware((7, 5), "T4", bf16_emulated=True)
A100 = cuda_hardware((8, 0), "A100", bf16_emulated=True)
H100 = cuda_hardware((9, 0), "H100", bf16_emulated=True)
P40 = cuda_hardware((6, 1), "P40", bf16_emulated=False)


@pytest.mark.parametrize("hardware, auto, bf16, fp16", [
    (AVX2, "float32", "slow", "slow"),
    (AVX512, "float32", "slow", "slow"),
    (AVX512_BF16, "bfloat16", "native", "slow"),
    (AMX, "bfloat16", "native", "native"),
    (V100, "float16", "slow", "native"),
    (T4, "float16", "slow", "native"),
    (A100, "bfloat16", "native", "native"),
    (H100, "bfloat16", "native", "native"),
    (P40, "float32", "unsupported", "slow"),
])
def test_auto_picks_what_the_hardware_computes_natively(hardware, auto, bf16, fp16):
    assert hardware.auto() == auto
    assert (hardware.level("bfloat16"), hardware.level("float16"), hardware.level("float32")) == (bf16, fp16, "native")
    resolved = resolve(AUTO, "rollout.dtype", hardware)
    assert (resolved.dtype, resolved.role, resolved.warning) == (auto, "rollout", "")


def test_auto_never_picks_float16_on_a_cpu():
    assert AMX.level("float16") == "native" and AMX.auto() == "bfloat16"
    no_bf16 = cpu_hardware("fp16 only", "AVX512", onednn_bf16=False, onednn_fp16=True, bf16_units=False)
    assert no_bf16.auto() == "float32"


def test_an_explicit_dtype_is_honoured_and_a_slow_one_says_so_in_one_line():
    slow = resolve("bfloat16", "learner.autocast_dtype", AVX2)
    assert slow.dtype == "bfloat16" and slow.requested == "bfloat16"
    assert "\n" not in slow.warning
    assert slow.warning.startswith("learner.autocast_dtype=bfloat16 on cpu AVX2 CPU (AVX2), which has no native "
                                   "bfloat16: auto would pick float32; ")
    assert MEASURED_SLOWDOWN[("cpu", "bfloat16")] in slow.warning  # the factor measured on such a CPU
    assert "float16" in resolve("bfloat16", "rollout.dtype", V100).warning  # auto's pick on that GPU
    for hardware in (AVX512_BF16, AMX, A100):
        assert resolve("bfloat16", "rollout.dtype", hardware).warning == ""
    assert resolve("float32", "rollout.dtype", H100) .warning == ""  # float32 is never slow, only slower


def test_a_dtype_the_hardware_cannot_run_is_a_one_line_error():
    with pytest.raises(PrecisionError, match=r"^config key 'rollout.dtype': bfloat16 cannot run on cuda P40 "
                                             r"\(sm_61\); use auto \(float32 here\) or float32$"):
        resolve("bfloat16", "rollout.dtype", P40)


def test_training_precision_keeps_fp32_masters_and_scales_float16_losses():
    def of(hardware, dtype, bf16_weights=False):
        return TrainingPrecision.of(resolve(dtype, "learner.autocast_dtype", hardware), bf16_weights)

    fp32 = of(AVX2, AUTO)
    assert (fp32.compute, fp32.weights, fp32.autocast, fp32.loss_scaling) == ("float32", "float32", None, False)
    assert fp32.deepspeed_sections("cpu") == {} and not fp32.grad_scaler("cpu").is_enabled()
    bf16 = of(AVX512_BF16, AUTO)
    assert (bf16.autocast, bf16.weights) == (torch.bfloat16, "float32")
    assert bf16.deepspeed_sections("cpu") == {}  # DeepSpeed leaves a CPU autocast alone
    assert of(H100, AUTO).deepspeed_sections("cuda") == {"torch_autocast": {"enabled": True, "dtype": "bfloat16"}}
    fp16 = of(T4, AUTO)  # no bf16 on the GPU: float16 autocast over fp32 weights, DeepSpeed's loss scaler
    assert (fp16.compute, fp16.weights, fp16.autocast, fp16.loss_scaling) == ("float16", "float32", torch.float16, True)
    assert fp16.deepspeed_sections("cuda") == {"torch_autocast": {"enabled": True, "dtype": "float16"}}
    assert fp16.grad_scaler("cpu").is_enabled()
    assert of(AVX2, "float16").deepspeed_sections("cpu") == {"torch_autocast": {"enabled": True, "dtype": "float16"}}
    half = of(A100, "bfloat16", bf16_weights=True)  # bf16 weights: no autocast, fp32 masters in DeepSpeed's optimizer
    assert (half.weights, half.autocast, half.deepspeed_sections("cuda")) == ("bfloat16", None, {"bf16": {"enabled": True}})


def test_bf16_weights_ask_for_bfloat16_whatever_the_hardware():
    cfg = load_config(None, ["learner.bf16_weights=true"])
    assert cfg.learner.compute_request() == ("bfloat16", "learner.bf16_weights")
    assert resolve(*cfg.learner.compute_request(), AVX2).warning.startswith("learner.bf16_weights=bfloat16 on cpu")
    assert load_config(None, ["learner.bf16_weights=true", "learner.autocast_dtype=bfloat16"])
    with pytest.raises(ConfigError, match=r"'learner.bf16_weights': expected false with learner.autocast_dtype="
                                          r"float16 \(bf16 weights compute in bfloat16\), got True"):
        load_config(None, ["learner.bf16_weights=true", "learner.autocast_dtype=float16"])


def test_every_dtype_key_defaults_to_auto_in_the_code_and_the_shipped_configs():
    cfg = TrainConfig()
    assert {cfg.rollout.dtype, cfg.learner.autocast_dtype, cfg.search.reward_model_dtype, cfg.sft.autocast_dtype,
            SFTConfig().autocast_dtype, RewardModelTrainConfig().autocast_dtype} == {AUTO}
    shipped = [p for p in Path("configs").glob("*.yaml") if "dtype" in p.read_text()]
    assert shipped
    for path in shipped:
        cfg = load_config(path)
        assert (cfg.rollout.dtype, cfg.learner.autocast_dtype) == (AUTO, AUTO), path
        assert all(m.dtype == AUTO for m in cfg.reward.models), path
    with pytest.raises(ConfigError, match="'rollout.dtype': expected auto or one of float32, bfloat16, float16, "
                                          "got 'fp8'"):
        load_config(None, ["rollout.dtype=fp8"])


def test_the_demo_config_resolves_to_float32_on_a_cpu_without_native_bf16():
    """Run as an AVX2 host (oneDNN and ATen told to use AVX2 kernels only: on a host with bf16 units
    this reproduces an AVX2 host's 20x slower bf16, benchmarks/results.md), whatever runs the suite."""
    code = ("import json; from rl_system.config import load_config; from rl_system.models import detect, resolve\n"
            "cfg = load_config('configs/r1_zero.yaml'); hw = detect('cpu')\n"
            "print(json.dumps([hw.level('bfloat16'), resolve(cfg.rollout.dtype, 'rollout.dtype', hw).dtype,"
            " resolve(cfg.learner.autocast_dtype, 'learner.autocast_dtype', hw).dtype]))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == ["slow", "float32", "float32"]


def test_the_run_says_its_precision_per_role_and_node_kind_in_one_line():
    rollout = resolve(AUTO, "rollout.dtype", AVX2).as_dict()
    learner = {**resolve("bfloat16", "learner.autocast_dtype", AVX2).as_dict(), "weights": "float32",
               "reference": "float32"}
    gpu = resolve(AUTO, "rollout.dtype", H100).as_dict()
    line = describe([rollout, rollout, learner, gpu])
    assert line == ("precision: rollout float32 (auto) on cpu AVX2 CPU (AVX2) x2; learner bfloat16 (weights float32, "
                    "reference float32, masters float32) (set) on cpu AVX2 CPU (AVX2); "
                    "rollout bfloat16 (auto) on cuda H100 (sm_90)")
    assert publish_dtype([rollout, rollout, learner]) == "float32"
    assert publish_dtype([gpu, learner]) == "bfloat16"  # the rollout workers' own dtype when they agree
    assert publish_dtype([rollout, gpu]) == "float32"  # mixed nodes: each worker casts from float32


def test_a_float16_learner_trains_with_deepspeeds_loss_scaler_over_fp32_weights(tiny_model_dir):
    """float16 on a CPU is slow, not impossible: the path a GPU without bf16 takes (autocast, the
    GradScaler DeepSpeed's torch_autocast section brings, fp32 master weights) runs for real here."""
    from rl_system.learner import Learner
    from tests.test_policy_updates import batch

    cfg = load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", "prompts_per_step=2", "rollout.group_size=4", "learner.num_ranks=1",
        "learner.micro_batch_size=4", "learner.lr=0.02", "learner.autocast_dtype=float16", "learner.beta=0.1",
        "learner.num_threads=1"])
    rank = Learner(cfg, world_size=1, rank=0)
    assert rank.precision() == {"role": "learner", "key": "learner.autocast_dtype", "requested": "float16",
                                "dtype": "float16", "node_kind": rank.precision_report.node_kind,
                                "weights": "float32", "reference": "float32",
                                **({"warning": rank.precision_report.warning} if rank.precision_report.warning else {})}
    rank.setup_alone("float32")
    scaler = rank.engine.optimizer.torch_autocast_gradscaler  # ZeRO-2's
    assert scaler is not None and scaler.is_enabled()
    before = {n: p.detach().clone() for n, p in rank.engine.module.named_parameters()}
    stats = rank.train(batch(tiny_model_dir, 0))
    assert torch.isfinite(torch.tensor(stats["loss"])) and stats["grad_norm"] > 0
    assert all(p.dtype == torch.float32 for p in rank.engine.module.parameters())
    assert any(not torch.equal(before[n], p) for n, p in rank.engine.module.named_parameters())
    assert scaler.get_scale() > 1  # the loss really went through a scale
    # DeepSpeed keeps a torch_autocast engine's dtype for the life of the process: the next float32 engine
    # in it must not inherit the loss scale (it would skip steps on the scaled gradients).
    fp32 = Learner(load_config("configs/r1_zero.yaml", [f"model.path={tiny_model_dir}", "prompts_per_step=2",
                                                        "learner.num_ranks=1", "learner.autocast_dtype=float32"]),
                   world_size=1, rank=0)
    fp32.setup_alone("float32")
    assert fp32.engine.optimizer.torch_autocast_gradscaler is None

