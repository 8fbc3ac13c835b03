"""Training and evaluating outcome (ORM) and process (PRM) reward models; single process, pure torch.

ORM: binary cross-entropy of the sequence logit against the rule grader's 0/1 label.
PRM: binary cross-entropy of the token logit at each step's last token against the step's
soft Monte-Carlo label (the fraction of continuations from that step that were correct).
"""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rl_system.config import RewardModelTrainConfig
from rl_system.data.sources import DatasetError, read_datasets_dir
from rl_system.models import TrainingPrecision, announce, check_model_dir, detect, load_tokenizer, resolve
from rl_system.rewards.learned import METADATA_FILE, LearnedReward, aggregate_steps, encode
from rl_system.rundir import swap_in

REQUIRED_COLUMNS = {"orm": ("question", "completion", "label", "split"),
                    "prm": ("question", "completion", "label", "split", "step_labels")}


def read_samples(path: str | Path, kind: str) -> list[dict]:
    """Every row of a collect-samples dataset, with its columns checked."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"samples '{path}': not found; write it with `python -m rl_system collect-samples`")
    table = read_datasets_dir(path, "samples")
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in table.columns]
    if missing:
        hint = " (collect with collect.mc_rollouts=K for PRM step labels)" if "step_labels" in missing else ""
        raise DatasetError(f"samples '{path}': missing column(s) {', '.join(missing)}{hint}")
    return table.rows


def load_samples(path: str | Path, kind: str, split: str) -> list[dict]:
    """Rows of a collect-samples dataset for one split, with its columns checked."""
    return _one_split(read_samples(path, kind), path, split)


def _one_split(rows: list[dict], path: str | Path, split: str) -> list[dict]:
    chosen = [r for r in rows if r["split"] == split]
    if not chosen:
        raise DatasetError(f"samples '{Path(path)}': no rows with split == '{split}'")
    return chosen


def check_reward_model_inputs(cfg: RewardModelTrainConfig) -> tuple[list[dict], list[dict]]:
    """What `train-orm` / `train-prm` read, checked before anything is written: the base model, and the
    train rows and the eval rows (returned; eval rows are optional). Raises one line naming the config key."""
    check_model_dir(cfg.base_model, "base_model")
    rows = read_samples(cfg.samples, cfg.kind)
    return _one_split(rows, cfg.samples, "train"), [r for r in rows if r["split"] == "eval"]


def _step_targets(rows: list[dict], positions: list[list[int]]) -> list[list[float]]:
    """Step labels aligned with the step positions that survived truncation (the last ones)."""
    return [r["step_labels"][len(r["step_labels"]) - len(pos):] for r, pos in zip(rows, positions)]


def reward_model_loss(model, tokenizer, rows: list[dict], kind: str, step_split: str | None, max_length: int,
                      autocast: torch.dtype | None) -> torch.Tensor:
    enc, positions = encode(tokenizer, [r["question"] for r in rows], [r["completion"] for r in rows],
                            step_split, max_length)
    with torch.autocast(model.device.type, dtype=autocast, enabled=autocast is not None):
        logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits.float().squeeze(-1)
    if kind == "orm":
        labels = torch.tensor([float(r["label"]) for r in rows], device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, labels)
    targets = _step_targets(rows, positions)
    picked = torch.cat([logits[i, pos] for i, pos in enumerate(positions)])
    labels = torch.tensor([t for row in targets for t in row], device=logits.device)
    return F.binary_cross_entropy_with_logits(picked, labels)


def train_reward_model(cfg: RewardModelTrainConfig, log=print, before_start=lambda: None) -> Path:
    """Fine-tunes `base_model` with a fresh one-logit head and saves an HF directory + reward_model.json.
    `before_start` runs once the inputs are checked, before anything is trained or written."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    rows, eval_rows = check_reward_model_inputs(cfg)
    before_start()
    torch.manual_seed(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    samples_meta = json.loads((Path(cfg.samples) / "info.json").read_text()) \
        if (Path(cfg.samples) / "info.json").is_file() else {}
    step_split = samples_meta.get("step_split", "sentences") if cfg.kind == "prm" else None
    tokenizer = load_tokenizer(cfg.base_model, cfg.trust_remote_code)
    cls = AutoModelForSequenceClassification if cfg.kind == "orm" else AutoModelForTokenClassification
    model = cls.from_pretrained(cfg.base_model, num_labels=1, dtype=torch.float32,
                                trust_remote_code=cfg.trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    resolved = resolve(cfg.autocast_dtype, "autocast_dtype", detect(device), role=f"train-{cfg.kind}")
    precision = TrainingPrecision.of(resolved)  # fp32 weights: autocast over them, float16 loss-scaled
    announce([resolved.as_dict()], log)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = precision.grad_scaler(device.type)
    order_rng = random.Random(cfg.seed)
    start, losses = time.perf_counter(), []
    model.train()
    for epoch in range(cfg.epochs):
        order = list(range(len(rows)))
        order_rng.shuffle(order)
        epoch_losses = []
        for i in range(0, len(order), cfg.batch_size):
            batch = [rows[j] for j in order[i:i + cfg.batch_size]]
            loss = reward_model_loss(model, tokenizer, batch, cfg.kind, step_split, cfg.max_length, precision.autocast)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # the clip sees the true gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            epoch_losses.append(loss.item())
        losses.extend(epoch_losses)
        log(f"{cfg.kind} epoch {epoch + 1}/{cfg.epochs}: mean loss {sum(epoch_losses) / len(epoch_losses):.4f}")

    out = Path(cfg.output_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    meta = {
        "kind": cfg.kind, "step_split": step_split, "base_model": str(cfg.base_model),
        "samples": str(cfg.samples), "num_samples": len(rows), "epochs": cfg.epochs,
        "final_loss": losses[-1] if losses else None, "train_seconds": round(time.perf_counter() - start, 1),
        "precision": resolved.as_dict(),
        "version": f"{cfg.kind}-{int(time.time())}",
    }
    (partial / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    if eval_rows:  # scored by the saved model, as eval-rm would score it (it reads the metadata just written)
        del model, optimizer  # frees their memory before the saved copy is loaded
        meta["eval"] = score_reward_model(partial, cfg.kind, eval_rows, batch_size=cfg.batch_size)
        (partial / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        for line in metrics_lines(f"{cfg.kind} eval", meta["eval"]):
            log(line)
    swap_in(partial, out)
    return out


def auroc(scores: list[float], labels: list[int]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None
    (undefined) when the labels hold one class only."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def classifier_metrics(scores: list[float], labels: list[int]) -> dict:
    """How well scores separate the rule grader's 0/1 labels: AUROC, and accuracy at score >= 0.5."""
    return {"num_samples": len(labels), "positive_rate": sum(labels) / len(labels), "auroc": auroc(scores, labels),
            "accuracy": sum((s >= 0.5) == bool(y) for s, y in zip(scores, labels)) / len(labels)}


def metrics_by_task(tasks: list[str], scores: list[float], labels: list[int]) -> dict[str, dict]:
    """classifier_metrics of each task's rows, in first-seen order; {} unless the rows come from more
    than one task (a data.tasks mixture). Rows without a task count only in the overall figures."""
    names = [t for t in dict.fromkeys(tasks) if t]
    if len(names) < 2:
        return {}
    return {name: classifier_metrics([s for s, t in zip(scores, tasks) if t == name],
                                     [y for y, t in zip(labels, tasks) if t == name]) for name in names}


def metrics_lines(name: str, metrics: dict) -> list[str]:
    """classifier_metrics as readable lines, `<name>: auroc ...`, then `<name> task <task>: auroc ...` each."""
    def figures(m: dict) -> str:
        score = "n/a (one label class)" if m["auroc"] is None else f"{m['auroc']:.3f}"
        return (f"auroc {score}  accuracy {m['accuracy']:.1%}  "
                f"({m['num_samples']} samples, {m['positive_rate']:.1%} correct)")
    return [f"{name}: {figures(metrics)}",
            *(f"{name} task {task}: {figures(m)}" for task, m in metrics.get("tasks", {}).items())]


def score_reward_model(model_path: str | Path, kind: str, rows: list[dict], aggregate: str = "min",
                       batch_size: int = 16) -> dict:
    """A reward model's classifier_metrics on sample rows, against their rule-grader labels, with a
    `tasks` entry of per-task metrics when the rows come from a task mixture."""
    scorer = LearnedReward(model_path, kind, aggregate=aggregate, batch_size=batch_size,
                           device="cuda" if torch.cuda.is_available() else "cpu")
    step_scores = scorer.step_scores([r["question"] for r in rows], [r["completion"] for r in rows])
    scores = [aggregate_steps(s, aggregate) for s in step_scores]
    labels = [int(r["label"]) for r in rows]
    by_task = metrics_by_task([r.get("task") or "" for r in rows], scores, labels)  # sample dirs may lack the column
    return {"kind": kind, "aggregate": aggregate if kind == "prm" else None, **classifier_metrics(scores, labels),
            **({"tasks": by_task} if by_task else {})}


def evaluate_reward_model(model_path: str | Path, kind: str, samples: str | Path, aggregate: str = "min",
                          batch_size: int = 16) -> dict:
    """score_reward_model on a collect-samples directory's held-out (eval) rows."""
    return {"kind": kind, "path": str(model_path),
            **score_reward_model(model_path, kind, load_samples(samples, "orm", "eval"), aggregate, batch_size)}
