"""R1-Zero: GRPO with rule rewards only. The driver loop, written against the Workers protocol.

actors/controller.py supplies the Ray implementation (rollout, reward, buffer and learner
actor groups); this file never sees Ray and reads as one program.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from rl_system.config import TrainConfig, to_dict
from rl_system.data import Problem, PromptSampler, load_splits
from rl_system.metrics import MetricsWriter, StepTimer, mean, pearson
from rl_system.shutdown import GracefulStop


class Workers(Protocol):
    """What the driver needs from the cluster. Handles are opaque (ObjectRefs under Ray)."""

    def generate(self, problems: list[Problem]) -> list[Any]: ...
    def wait(self, handles: list[Any]) -> None: ...
    def score(self, rollouts: list[Any]) -> tuple[list[Any], list[dict]]: ...
    def buffer_add(self, scored: list[Any], summaries: list[dict]) -> None: ...
    def buffer_sample(self, n: int, learner_version: int) -> tuple[list[Any], list[int]]: ...
    def train(self, batch: list[Any]) -> dict: ...
    def sync_weights(self, version: int) -> None: ...
    def evaluate(self, problems: list[Problem], max_new_tokens: int) -> list[dict]: ...
    def buffer_stats(self) -> dict: ...
    def save(self, path: str) -> None: ...
    def step_done(self, step: int, metrics: dict) -> dict: ...  # export metrics, resize; extra metrics


def train(cfg: TrainConfig, workers: Workers) -> dict:
    run_dir = Path(cfg.output_dir)
    writer = MetricsWriter(run_dir)
    train_set, eval_set = load_splits(cfg.data)
    sampler = PromptSampler(train_set, cfg.seed)
    results = {}
    if cfg.eval_before:
        results["before"] = evaluate(workers, eval_set, cfg)
        print(results_table(results), flush=True)
    version, generated, scored_total = 0, 0, 0

    # `ray job stop` (SIGTERM) or Ctrl-C: finish the step, keep a checkpoint, return normally.
    with GracefulStop() as stop:
        for step in tqdm(range(1, cfg.num_steps + 1), desc="GRPO", unit="step", dynamic_ncols=True):
            timer = StepTimer()
            with timer("step"):
                with timer("generate"):
                    rollouts = workers.generate(sampler.next_batch(cfg.prompts_per_step))
                    workers.wait(rollouts)
                with timer("score"):
                    scored, summaries = workers.score(rollouts)
                    workers.buffer_add(scored, summaries)
                batch, lags = workers.buffer_sample(cfg.prompts_per_step, version)
                with timer("train"):
                    learner_stats = workers.train(batch)
                    version += 1
                with timer("weight_sync"):
                    workers.sync_weights(version)
            generated, scored_total = generated + len(rollouts), scored_total + len(scored)
            metrics = step_metrics(summaries, learner_stats, timer.seconds, lags, workers.buffer_stats())
            metrics.update({"groups/generated": generated, "groups/scored": scored_total})
            metrics.update(learned_reward_correlations(summaries, [m.name for m in cfg.reward.models]))
            metrics.update(workers.step_done(step, metrics))
            writer.log(step, metrics)
            tqdm.write(f"step {step:3d}  reward {metrics['reward/total']:.3f}  acc {metrics['accuracy']:.2f}  "
                       f"format {metrics['format_rate']:.2f}  loss {metrics['loss']:+.4f}  {metrics['time/step']:.1f}s")
            if stop.requested or step == cfg.num_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                save_checkpoint(cfg, workers, run_dir / "checkpoint", step=step, version=version,
                                data_cursor=sampler.cursor)
            if stop.requested:
                print(f"{stop.signal_name}: stopped after step {step}, checkpoint saved in {run_dir / 'checkpoint'}",
                      flush=True)
                break

    if cfg.eval_after and not stop.requested:
        results["after"] = evaluate(workers, eval_set, cfg)
    writer.close()
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    if results:
        print(results_table(results))
    return results


def evaluate(workers: Workers, problems: list[Problem], cfg: TrainConfig) -> dict:
    """Greedy accuracy and strict format rate on held-out problems."""
    summaries = workers.evaluate(problems, cfg.eval_max_new_tokens)
    return {
        "accuracy": mean(c for s in summaries for c in s["correct"]),
        "format_rate": mean(f for s in summaries for f in s["formatted"]),
        "mean_length": mean(s["mean_length"] for s in summaries),
        "num_problems": len(summaries),
    }


def step_metrics(summaries: list[dict], learner: dict, seconds: dict, lags: list[int], buffer: dict) -> dict:
    m: dict[str, float] = {}
    for name in summaries[0]["rewards"]:
        m[f"reward/{name}"] = mean(s["rewards"][name] for s in summaries)
    m["reward/total"] = mean(s["total_reward"] for s in summaries)
    m["accuracy"] = mean(c for s in summaries for c in s["correct"])
    m["format_rate"] = mean(f for s in summaries for f in s["formatted"])
    m["completion_length"] = mean(s["mean_length"] for s in summaries)
    m["truncated_rate"] = mean(s["truncated"] for s in summaries)
    m["zero_std_groups"] = mean(float(s["reward_std"] == 0) for s in summaries)
    m["reward_failures"] = sum(sum(s["reward_failures"].values()) for s in summaries)
    tokens = learner["tokens"]
    m["loss"] = learner["loss"]
    m["clip_fraction"] = learner["clipped_tokens"] / max(tokens, 1)
    m["behaviour_logprob_abs_diff"] = learner["behaviour_logprob_abs_diff"] / max(tokens, 1)
    if "kl" in learner:
        m["kl"] = learner["kl"] / max(tokens, 1)
    m["grad_norm"] = learner["grad_norm"]
    m["staleness/max"] = max(lags) if lags else 0
    m["staleness/mean"] = mean(lags)
    for phase, value in seconds.items():
        m[f"time/{phase}"] = value
    generated = sum(s["completion_tokens"] for s in summaries)
    m["tokens_per_s/generate"] = generated / max(seconds["generate"], 1e-9)
    m["tokens_per_s/step"] = generated / max(seconds["step"], 1e-9)
    m.update({f"buffer/{k}": v for k, v in buffer.items()})
    return m


def learned_reward_correlations(summaries: list[dict], names: list[str]) -> dict:
    """Correlation of each learned reward with rule accuracy per sample: a drop shows reward hacking."""
    correct = [c for s in summaries for c in s["correct"]]
    out = {}
    for name in names:
        scores = [v for s in summaries for v in s["scores"][name]]
        if len(scores) == len(correct):
            out[f"reward_corr/{name}"] = pearson(scores, correct)
    return out


def save_checkpoint(cfg: TrainConfig, workers: Workers, path: Path, **state) -> None:
    """An HF `save_pretrained` directory plus trainer_state.json (step, version, data cursor, config).

    Written beside the previous one and swapped in, so a crash mid-save keeps the last good one.
    """
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    workers.save(str(partial))
    (partial / "trainer_state.json").write_text(json.dumps({**state, "config": to_dict(cfg)}, indent=2, default=str))
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def results_table(results: dict) -> str:
    cols = [c for c in ("before", "after") if c in results]
    rows = [("greedy accuracy", "accuracy", "{:.1%}"), ("strict format rate", "format_rate", "{:.1%}"),
            ("mean completion tokens", "mean_length", "{:.1f}")]
    lines = ["", f"Held-out evaluation ({results[cols[0]]['num_problems']} problems)",
             "| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(results[c][key]) for c in cols) + " |")
    return "\n".join(lines)
