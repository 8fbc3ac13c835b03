"""The documentation cannot rot unseen.

- The site builds offline from docs/ with `mkdocs build --strict`: a broken link, a missing anchor
  or a page left out of the nav fails it.
- Every command the README shows (in a shell block, or inline as `make ...`, `ray ...`,
  `python -m ...`) has an entry in COMMANDS saying how the suite exercises it: run here for real
  where that is cheap, otherwise the test that runs it, which is checked to exist and to hold
  the command. A command with no entry fails.
- The README stays short; its links, CONTRIBUTING.md's and every repository path the pages name
  resolve; a config excerpt shown in a page is a true subset of its file; the `python -m
  rl_system` commands in docs/ name real subcommands, flags, config files and keys.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CONTRIBUTING = REPO / "CONTRIBUTING.md"
DOCS = REPO / "docs"
RAY = str(Path(sys.executable).with_name("ray"))
README_MAX_CHARS = 10_500
SHELL_LANGS = {"bash", "sh", "shell", "console"}


# ---------------------------------------------------------------------------------------------
# Reading the pages


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ``` fenced block."""
    return [(m.group(1).strip().lower(), m.group(2))
            for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)]


def shell_commands(text: str) -> list[str]:
    """Every command line of the page's shell blocks: continuations joined, comments dropped."""
    commands = []
    for lang, body in fenced_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


def inline_commands(text: str) -> list[str]:
    """Commands shown inline in prose: code spans that start like one."""
    prose = re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)
    return [span for span in re.findall(r"`([^`\n]+)`", prose)
            if re.match(r"(make|ray|python|pip|source|export) ", span + " ")]


def readme_commands() -> list[str]:
    text = README.read_text()
    return list(dict.fromkeys(shell_commands(text) + inline_commands(text)))


def run(args: list[str] | str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def ray_help(*subcommand: str) -> str:
    result = run([RAY, *subcommand, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rl_system_help(*args: str) -> str:
    """`python -m rl_system ARGS --help`, in this process (argparse prints and exits 0)."""
    from rl_system import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        cli.main([*args, "--help"])
    assert exited.value.code == 0, out.getvalue()
    return out.getvalue()


def flags(command: str) -> list[str]:
    return [word.split("=")[0] for word in shlex.split(command) if word.startswith("--") and word != "--"]


def make_dry_run(target: str) -> str:
    result = run(["make", "-n", target])
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def held_by_test(path: str, function: str, *evidence: str) -> None:
    """The test (or its fixture or helper) exists in that file, and the file holds each piece of
    the command it runs."""
    source = (REPO / path).read_text()
    assert re.search(rf"^def {function}\(", source, flags=re.M), f"{path} has no function {function}"
    for piece in evidence:
        assert piece in source, f"{path} no longer holds {piece!r}"


def config_loads(command: str, cls_name: str = "TrainConfig") -> None:
    """The command's --config file and key=value overrides load: every key exists and checks out."""
    import rl_system.config as config

    words = shlex.split(command.replace("$PWD", str(REPO)))
    path = words[words.index("--config") + 1] if "--config" in words else None
    if path:
        assert (REPO / path).is_file(), path
    overrides = [w for w in words if re.match(r"^[A-Za-z_][\w.\[\]]*=", w)]
    config.load_config(str(REPO / path) if path else None, overrides, cls=getattr(config, cls_name))


# ---------------------------------------------------------------------------------------------
# How each README command is exercised


@dataclass(frozen=True)
class Exercised:
    pattern: str  # a regex the whole command must match
    how: str  # how the suite exercises it, in one line
    check: Callable[[str], None]  # runs it here, or checks the test that runs it


def _make_demo(command: str) -> None:
    assert "-m rl_system train --config configs/r1_zero.yaml" in make_dry_run("demo")
    _train_demo_config("python -m rl_system train --config configs/r1_zero.yaml")


def _make_test(command: str) -> None:
    out = make_dry_run("test")
    assert "-m pytest" in out and "tests" in out
    assert re.search(r"^make test$", (REPO / ".ci/run").read_text(), flags=re.M)  # what CI runs


def _make_test_fast(command: str) -> None:
    out = make_dry_run("test-fast")
    assert '-m pytest -q -m "not integration"' in out and "tests/test_config.py" in out


def _make_docs(command: str) -> None:
    assert "-m mkdocs build --strict" in make_dry_run("docs")  # the build itself: test_site_builds_offline


def _train_demo_config(command: str) -> None:
    assert "--config" in rl_system_help("train")
    config_loads(command)
    held_by_test("tests/test_cluster_jobs.py", "test_job_round_trip_succeeds_and_logs_the_final_metrics",
                 '"python -m rl_system train --config configs/r1_zero.yaml"')


def _activate(command: str) -> None:
    assert re.search(r"^VENV\s*:=\s*\.venv$", (REPO / "Makefile").read_text(), flags=re.M)
    activate = Path(sys.prefix, "bin", "activate")  # the venv this suite runs in (make test: .venv)
    result = run(["bash", "-c", f"source {shlex.quote(str(activate))} && command -v ray"])
    assert result.returncode == 0 and result.stdout.strip() == RAY, (result.stdout, result.stderr)


def _auth_token(command: str) -> None:
    assert "--generate" in ray_help("get-auth-token")
    home = Path(tempfile.mkdtemp(prefix="rl_docs_home"))  # never the user's own ~/.ray
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env.update(HOME=str(home), PATH=f"{Path(RAY).parent}{os.pathsep}{env.get('PATH', '')}")
    try:
        result = run(["bash", "-c", command], env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (home / ".ray" / "auth_token").read_text().strip()
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)


def _ray_start(command: str) -> None:
    help_text = ray_help("start")
    for flag in flags(command):
        assert flag in help_text, flag
    held_by_test("tests/cluster_head.py", "start_head", '"start", "--head"', '"--dashboard-host=127.0.0.1"',
                 'f"--num-cpus={num_cpus}"')
    held_by_test("tests/test_cluster_jobs.py", "head", "start_head(num_cpus=6",
                 '"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"')


def _auth_mode(command: str) -> None:
    held_by_test("tests/cluster_head.py", "start_head", '"RAY_AUTH_MODE": "token"')
    assert 'os.environ.setdefault("RAY_AUTH_MODE", "token")' in (REPO / "tests/conftest.py").read_text()


def _config_docs(command: str) -> None:
    result = run([sys.executable, "-m", "rl_system", "config-docs", "--check"])  # writes nothing
    assert result.returncode == 0, result.stdout + result.stderr


def _job_submit(command: str) -> None:
    if command == "ray job submit":  # the inline mention
        return
    help_text = ray_help("job", "submit")
    for flag in flags(command.split(" -- ")[0]):
        assert flag in help_text, flag
    assert (REPO / "clusters/runtime_env.yaml").is_file()
    entrypoint = command.split(" -- ", 1)[1]
    assert entrypoint.startswith("python -m rl_system train --config configs/r1_zero.yaml ")
    config_loads(entrypoint)
    held_by_test("tests/test_docs.py", "test_readme_job_submit_runs_as_written", "readme_job_submit()")


COMMANDS = [
    Exercised(r"make demo", "`make -n demo` runs here; the training command it runs: tests/test_cluster_jobs.py",
              _make_demo),
    Exercised(r"make test", "`make -n test` runs here; CI runs `make test` (.ci/run)", _make_test),
    Exercised(r"make test-fast", "`make -n test-fast` runs here; the files it names run in this suite too",
              _make_test_fast),
    Exercised(r"make docs", "`make -n docs` runs here; test_site_builds_offline runs the build", _make_docs),
    Exercised(r"python -m rl_system train --config configs/r1_zero\.yaml( \S+=\S+)*",
              "config and overrides load here; tests/test_cluster_jobs.py runs train on this config to the end",
              _train_demo_config),
    Exercised(r"python -m rl_system config-docs", "runs here with --check: docs/config.md is what it writes",
              _config_docs),
    Exercised(r"source \.venv/bin/activate", "runs here (the suite's venv)", _activate),
    Exercised(r"ray get-auth-token --generate > /dev/null", "runs here, with HOME in a temporary folder",
              _auth_token),
    Exercised(r"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head .*",
              "flags checked against `ray start --help`; tests/test_cluster_jobs.py starts this head "
              "(tests/cluster_head.py, on free ports)", _ray_start),
    Exercised(r"export RAY_AUTH_MODE=token", "every client in the suite runs with it (tests/conftest.py)", _auth_mode),
    Exercised(r"ray job submit( .*)?",
              "flags checked against `ray job submit --help`; test_readme_job_submit_runs_as_written runs "
              "the README's line (its own head, a tiny model and run)", _job_submit),
]


def entry_for(command: str) -> Exercised | None:
    matches = [e for e in COMMANDS if re.fullmatch(e.pattern, command)]
    assert len(matches) <= 1, (command, [e.pattern for e in matches])
    return matches[0] if matches else None


def test_every_readme_command_says_how_it_is_exercised():
    commands = readme_commands()
    assert {"make demo", "make test"} <= set(commands)
    missing = [c for c in commands if entry_for(c) is None]
    assert not missing, f"README commands with no entry in tests/test_docs.py COMMANDS: {missing}"
    unused = [e.pattern for e in COMMANDS if not any(re.fullmatch(e.pattern, c) for c in commands)]
    assert not unused, f"COMMANDS entries the README no longer shows (remove them): {unused}"


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command(command):
    entry = entry_for(command)
    assert entry is not None, f"no entry in COMMANDS for {command!r}"
    entry.check(command)


def readme_job_submit() -> str:
    [command] = [c for c in shell_commands(README.read_text()) if c.startswith("ray job submit ")]
    return command


@pytest.mark.integration
def test_readme_job_submit_runs_as_written(tiny_model_dir, tmp_path):
    """The README's `ray job submit` line through Ray's own CLI, on a head started as the README
    starts it (free ports and a temp dir of its own instead of the defaults), with the tiny model,
    a temporary run directory and a short run appended as overrides."""
    from tests.cluster_head import start_head

    command = readme_job_submit()
    assert "http://127.0.0.1:8265" in command and "$PWD/models/smollm2-135m-instruct" in command
    run_dir = tmp_path / "job1"
    head = start_head(num_cpus=6, extra_env={"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    try:
        line = (command.replace("http://127.0.0.1:8265", head.dashboard_url)
                .replace("$PWD/models/smollm2-135m-instruct", tiny_model_dir)
                .replace("$PWD/runs/job1", str(run_dir))
                + " num_steps=1 prompts_per_step=2 rollout.group_size=2 rollout.max_new_tokens=8"
                  " learner.num_ranks=1 learner.micro_batch_size=4 rollout.num_workers=1 data.num_eval=2"
                  " eval_max_new_tokens=8")
        started = time.monotonic()
        result = run(["bash", "-c", line], timeout=600, env={**head.env, "RAY_AUTH_MODE": "token"})
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        assert re.search(r"Job '\S+' succeeded", output), output[-4000:]  # what `ray job submit` prints
    finally:
        head.stop()
    assert (run_dir / "checkpoint" / "trainer_state.json").is_file()
    assert (run_dir / "results.json").is_file()
    print(f"\nREADME job submit: {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------------------------------------
# The README's shape, links and paths


def test_readme_is_short_and_shows_the_two_commands():
    text = README.read_text()
    assert len(text) <= README_MAX_CHARS, f"README.md has {len(text)} characters (at most {README_MAX_CHARS})"
    assert "make demo" in text and "make test" in text


def markdown_links(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)
    return re.findall(r"\]\(([^)\s]+)\)", prose)


@pytest.mark.parametrize("page", [README, CONTRIBUTING], ids=lambda p: p.name)
def test_links_resolve(page):
    for target in markdown_links(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        path = target.split("#")[0]
        assert path and (page.parent / path).exists(), f"{page.name} links to {target}, which does not exist"


def named_paths(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w/.-])((?:rl_system|actors|configs|clusters|tests|benchmarks|docs)/[\w./-]*[\w/])",
                          text))


def pages() -> list[Path]:
    return [README, CONTRIBUTING, *sorted(DOCS.glob("*.md"))]


def package_tree_paths() -> set[str]:
    """The paths architecture.md's tree of the core names: `  folder/  ... a.py (...), b.py` is
    rl_system/folder/, rl_system/folder/a.py and rl_system/folder/b.py; `  file.py` lines are
    top-level modules."""
    [tree] = [body for lang, body in fenced_blocks((DOCS / "architecture.md").read_text())
              if body.startswith("rl_system/\n")]
    paths, folder = set(), None
    for line in tree.splitlines()[1:]:
        head = re.match(r"^  (\w+/|\w+\.py)", line)
        if head:
            folder = head.group(1) if head.group(1).endswith("/") else ""
            if folder:
                paths.add(f"rl_system/{folder}")
        for name in re.findall(r"(?<![\w/.])(\w+\.py)\b", line):
            paths.add(f"rl_system/{folder}{name}")
    return paths


def test_every_path_the_pages_name_exists():
    missing = {}
    for page in pages():
        for path in named_paths(page.read_text()):
            if not (REPO / path).exists():
                missing.setdefault(page.name, []).append(path)
    tree_missing = sorted(p for p in package_tree_paths() if not (REPO / p).exists())
    if tree_missing:
        missing["architecture.md (the core's tree)"] = tree_missing
    assert not missing, f"pages name paths that do not exist: {missing}"


def excerpts() -> list[tuple[str, str, str]]:
    """(page, config file, body) of every YAML block that starts `# configs/NAME.yaml (excerpt)`."""
    found = []
    for page in pages():
        for lang, body in fenced_blocks(page.read_text()):
            match = re.match(r"# (configs/[\w.-]+\.yaml) \(excerpt\)\n", body)
            if lang == "yaml" and match:
                found.append((page.name, match.group(1), body))
    return found


def is_subset(part, whole) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and is_subset(v, whole[k]) for k, v in part.items())
    return part == whole


@pytest.mark.parametrize("page, path, body", excerpts(), ids=[f"{page}:{path}" for page, path, _ in excerpts()])
def test_config_excerpts_match_their_files(page, path, body):
    assert is_subset(yaml.safe_load(body), yaml.safe_load((REPO / path).read_text())), \
        f"{page}: the excerpt of {path} differs from the file"


def test_readme_shows_a_config_excerpt():
    assert any(page == "README.md" for page, _, _ in excerpts())


# ---------------------------------------------------------------------------------------------
# The docs pages' own commands, and the site


COMMAND_CONFIG = {"sft": "SFTConfig", "distill": "SFTConfig", "train-orm": "RewardModelTrainConfig",
                  "train-prm": "RewardModelTrainConfig"}


def docs_rl_system_commands() -> list[tuple[str, str]]:
    return [(page.name, c) for page in sorted(DOCS.glob("*.md")) for c in shell_commands(page.read_text())
            if c.startswith("python -m rl_system ")]


@pytest.mark.parametrize("page, command", docs_rl_system_commands())
def test_docs_rl_system_commands_parse(page, command):
    """Subcommand, flags, config file and override keys are real (the command is not run)."""
    words = shlex.split(command)
    subcommand = words[3]
    help_text = rl_system_help(subcommand)
    for flag in flags(command):
        assert flag in help_text, f"{page}: {subcommand} has no {flag}"
    if "--config" in words or any("=" in w and not w.startswith("-") for w in words[4:]):
        config_loads(command, COMMAND_CONFIG.get(subcommand, "TrainConfig"))


class _MkdocsLoader(yaml.SafeLoader):
    pass


_MkdocsLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def nav_pages() -> list[str]:
    def walk(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from walk(value) if isinstance(value, list) else [value]

    return list(walk(yaml.load((REPO / "mkdocs.yml").read_text(), Loader=_MkdocsLoader)["nav"]))


def test_every_docs_page_is_in_the_nav():
    assert sorted(p.name for p in DOCS.glob("*.md")) == sorted(nav_pages())


def test_site_builds_offline(tmp_path):
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    # No network: a theme or plugin that fetched anything at build time would fail here.
    dead = "http://127.0.0.1:9"
    env = {**{k: v for k, v in os.environ.items() if k.lower() != "no_proxy"},
           "http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
           "NO_MKDOCS_2_WARNING": "1"}  # as `make docs`: no end-of-life banner from the theme
    result = run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    for page in nav_pages():
        html = site / (page.removesuffix(".md") + "/index.html" if page != "index.md" else "index.html")
        assert html.is_file(), html
    architecture = (site / "architecture" / "index.html").read_text()
    assert 'class="mermaid"' in architecture  # the dataflow diagram, as a diagram
    assert "Benchmark results" in (site / "results" / "index.html").read_text()  # benchmarks/results.md included
