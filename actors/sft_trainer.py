"""`sft` and `distill` on Ray Train: a TorchTrainer whose workers are DeepSpeed ranks."""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import ray
import torch

from actors.scheduling import wait_until_schedulable
from rl_system.learner import deepspeed_config, full_parameters, init_deepspeed
from rl_system.algorithms.sft import check_sft_inputs, collate_sft, encode_chat, load_chat_rows, sft_and_distill_loss
from rl_system.config import SFTConfig
from rl_system.models import TrainingPrecision, announce, detect, load_model, load_tokenizer, resolve
from rl_system.resources import command_stages, local_num_cpus
from rl_system.rundir import swap_in

STATE_FILE = "sft_state.json"


def _train_worker(config: dict) -> None:
    import ray.train

    cfg: SFTConfig = config["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = torch.device(f"cuda:{ctx.get_local_rank()}" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.num_cpus_per_worker)))
    deepspeed = init_deepspeed(device)  # joins Ray Train's process group
    resolved = resolve(cfg.autocast_dtype, "autocast_dtype", detect(device), role="sft")
    precision = TrainingPrecision.of(resolved)
    reports = [None] * world  # every worker's, since workers may sit on different kinds of node
    torch.distributed.all_gather_object(reports, {**resolved.as_dict(), "weights": precision.weights})
    if rank == 0:
        announce(reports)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(cfg.base_model, cfg.trust_remote_code)
    encoded = [encode_chat(tokenizer, row["messages"], cfg.max_length) for row in load_chat_rows(cfg.data)]
    steps_per_epoch = len(encoded) // (world * cfg.micro_batch_size)  # equal on every rank: steps are collective
    model = load_model(cfg.base_model, "float32", device, cfg.trust_remote_code)
    teacher = load_model(cfg.teacher_model, "float32", device, cfg.trust_remote_code).eval() \
        if cfg.teacher_model else None
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=deepspeed_config(
        micro_batch_size=cfg.micro_batch_size, grad_accum=1, world_size=world, grad_clip=cfg.grad_clip,
        zero_stage=cfg.zero_stage, lr=cfg.lr, weight_decay=cfg.weight_decay, overrides=cfg.deepspeed,
        precision=precision.deepspeed_sections(device.type)))
    history, start = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        order = list(range(len(encoded)))
        random.Random(cfg.seed + epoch).shuffle(order)  # the same order on every rank; each takes its slice
        totals: dict[str, float] = {}
        for step in range(steps_per_epoch):
            first = (step * world + rank) * cfg.micro_batch_size
            batch = collate_sft([encoded[i] for i in order[first:first + cfg.micro_batch_size]],
                                tokenizer.pad_token_id, device)
            loss, stats = sft_and_distill_loss(engine, batch, teacher, cfg.temperature, cfg.distill_weight,
                                               precision.autocast)
            engine.backward(loss)
            engine.step()
            for k, v in {"loss": loss.item(), **stats}.items():
                totals[k] = totals.get(k, 0.0) + v
        metrics = {k: v / steps_per_epoch for k, v in totals.items() if k != "tokens"}
        metrics.update(epoch=epoch + 1, seconds=round(time.perf_counter() - start, 1))
        history.append(metrics)
        ray.train.report(metrics)
    with full_parameters(engine, cfg.zero_stage):
        if rank == 0:
            _save(engine.module, tokenizer, cfg, history, len(encoded), reports)


def _save(model, tokenizer, cfg: SFTConfig, history: list[dict], num_rows: int, precision: list[dict]) -> None:
    out = Path(cfg.output_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / STATE_FILE).write_text(json.dumps({"history": history, "rows": num_rows, "precision": precision,
                                                  "config": dataclasses.asdict(cfg)}, indent=2))
    swap_in(partial, out)


def run_sft(cfg: SFTConfig, before_start=lambda: None) -> dict:
    """Trains on Ray Train and returns the saved state (per-epoch losses); the model is at cfg.output_dir.
    `before_start` runs once the cluster is known to fit the workers."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    def absolute(path: str) -> str:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    cfg = dataclasses.replace(cfg, base_model=absolute(cfg.base_model), data=absolute(cfg.data),
                              teacher_model=absolute(cfg.teacher_model), output_dir=str(Path(cfg.output_dir).resolve()))
    check_sft_inputs(cfg)  # models and rows: a bad one fails here, in one line, before any worker starts
    if not ray.is_initialized():
        ray.init(num_cpus=local_num_cpus(cfg, os.cpu_count() or 1), include_dashboard=False)
    wait_until_schedulable(command_stages("sft", cfg), cfg.schedule_timeout_s, timeout_key="schedule_timeout_s")
    before_start()
    trainer = TorchTrainer(
        _train_worker, train_loop_config={"cfg": cfg},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.num_cpus_per_worker}),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        run_config=RunConfig(storage_path=str(Path(cfg.output_dir).parent / "ray_train"),
                             name=f"{Path(cfg.output_dir).name}-{int(time.time())}"),
    )
    trainer.fit()
    return json.loads((Path(cfg.output_dir) / STATE_FILE).read_text())
