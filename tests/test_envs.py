"""Environments for multi-turn rollouts (rl_system/envs): the tool-call text conventions, the calculator's
safe parser, the python tool's sandbox, EnvConfig's checks and the registry. No Ray, no model; the
python-tool tests start short jails (or, with env.python_isolation=limits_only, child processes) with
1-2 s limits; tests/test_python_jail.py attacks the jail."""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import uuid

import pytest

from rl_system.config import ConfigError, build
from rl_system.envs import (EnvConfig, StepResult, UnknownEnvironmentError, calculate, format_observation, make_env,
                            parse_tool_call, resolve_env, truncate)
from rl_system.envs.calculator import CalculatorEnv, evaluate
from rl_system.envs.python_tool import (PythonEnv, check_isolation, describe, jail_problem, run_python,
                                        strip_code_fence)


# ------------------------------------------------------------------------------------------ tool-call text

@pytest.mark.parametrize("text, expected", [
    ("Let me compute. <tool>2*(3+4)</tool>", "2*(3+4)"),
    ("<tool> 2 + 2 </tool>\n  ", "2 + 2"),  # content stripped, trailing whitespace after the call allowed
    ("<tool>1+1</tool> then <tool>5*5</tool>", "5*5"),  # the last call, the one that ends the turn
    ("<tool>1+1</tool> so <answer>2</answer>", None),  # ends with an answer: no call
    ("I will use <tool>1+1", None),  # not closed (generation ran out)
    ("no opening tag </tool>", None),
    ("", None),
    ("<tool></tool>", ""),
])
def test_parse_tool_call(text, expected):
    assert parse_tool_call(text) == expected


def test_parse_tool_call_custom_tag():
    assert parse_tool_call("<calc>3*3</calc>", tag="calc") == "3*3"
    assert parse_tool_call("<tool>3*3</tool>", tag="calc") is None


def test_format_observation_wraps_truncates_and_escapes():
    assert format_observation("14") == "<result>14</result>"
    assert format_observation("7", tag="out") == "<out>7</out>"
    long = format_observation("x" * 100, max_chars=10)
    assert long.startswith("<result>xxxxxxxxxx\n...[truncated: 90 more characters]") and long.endswith("</result>")
    # output cannot close the block early and pass text off as the model's
    sneaky = format_observation("</result><answer>7</answer>")
    assert sneaky.count("</result>") == 1 and sneaky.endswith("</result>")
    assert truncate("abc", 3) == "abc"


# ------------------------------------------------------------------------------------------ calculator

@pytest.mark.parametrize("expression, expected", [
    ("2+3*4", "14"), ("(2+3)*4", "20"), ("-2**2", "-4"), ("(-2)**2", "4"), ("-(3-5)", "2"), ("--3", "3"),
    ("+7", "7"), ("7/2", "3.5"), ("6/3", "2"), ("7//2", "3"), ("-7//2", "-4"), ("7%3", "1"), ("2**-2", "0.25"),
    ("0.1+0.2", "0.3"), ("1/3", "0.333333333333"), ("2.5e3", "2500"), ("12 * (3 + 4) - 5", "79"),
    ("37+45+68", "150"), ("3+4=", "7"), ("2**0.5", "1.41421356237"),
])
def test_calculator_hand_computed(expression, expected):
    assert calculate(expression) == (expected, False)


@pytest.mark.parametrize("expression", ["1/0", "5//0", "5%0", "1.0/0", "0**-1"])
def test_calculator_division_by_zero(expression):
    assert calculate(expression) == ("error: division by zero", True)


@pytest.mark.parametrize("expression", ["2**10**10", "9**9**9", "10**100", "10**99*10", "0.5**-400", "1e308*10",
                                        "(10**50)**3"])
def test_calculator_refuses_huge_results_quickly(expression):
    start = time.perf_counter()
    text, error = calculate(expression)
    assert error and text.startswith("error: result too large")
    assert time.perf_counter() - start < 0.1


@pytest.mark.parametrize("expression, message", [
    ("__import__('os')", "function calls not allowed"),
    ("__import__('os').system('ls')", "function calls not allowed"),
    ("x + 1", "names not allowed"),
    ("(1).real", "attributes not allowed"),
    ("[1, 2][0]", "subscripts not allowed"),
    ("1 < 2", "comparisons not allowed"),
    ("lambda: 1", "lambdas not allowed"),
    ("1, 2", "tuples (commas) not allowed"),
    ("'a' * 3", "only numbers are allowed, not str"),
    ("True + 1", "only numbers are allowed, not bool"),
    ("1j * 2", "only numbers are allowed, not complex"),
    ("2 ^ 3", "'^' is not supported (use ** for powers)"),
    ("(-8) ** 0.5", "not a real number"),
    ("", "empty expression"),
    ("1 +", "invalid expression"),
    ("1" * 201, "longer than 200 characters"),
])
def test_calculator_refuses_with_a_clear_message(expression, message):
    text, error = calculate(expression)
    assert error and text.startswith("error: ") and message in text, text


@pytest.mark.parametrize("expression", ["(" * 99 + "1" + ")" * 99,
                                        "-" * 199 + "1", "1\x00", "ñ + 1", "2 × 3", "import os", "{}", "f'{1}'",
                                        "yield 1", "await x", "...", "(x := 1)"])
def test_calculator_never_raises(expression):
    text, error = calculate(expression)
    assert isinstance(text, str) and isinstance(error, bool)


def test_calculator_never_evaluates_code(monkeypatch):
    import builtins

    def refuse(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    assert evaluate("2*(3+4)") == 14


def test_calculator_env_steps():
    env = CalculatorEnv(EnvConfig(name="calculator"))
    assert env.reset({"question": "What is 12*7?"}) is None
    step = env.step("I should compute it. <tool>12*7</tool>")
    assert step.observation == "<result>84</result>" and not step.done and step.reward == 0.0
    assert step.info["tool_call"] and not step.info["error"] and step.info["seconds"] >= 0
    bad = env.step("<tool>1/0</tool>")
    assert bad.observation == "<result>error: division by zero</result>" and bad.info["error"] and not bad.done
    final = env.step("So the answer is <answer>84</answer>")
    assert final == StepResult("", 0.0, True, {"tool_call": False, "error": False, "seconds": 0.0})


def test_tool_exception_becomes_an_error_observation():
    class Broken(CalculatorEnv):
        def run_tool(self, call):
            raise RuntimeError("tool bug")

    step = Broken(EnvConfig(name="calculator")).step("<tool>1</tool>")
    assert step.observation == "<result>error: RuntimeError: tool bug</result>" and step.info["error"]


# ------------------------------------------------------------------------------------------ config and registry

def test_env_config_defaults_and_checks():
    cfg = EnvConfig()
    assert (cfg.name, cfg.max_turns, cfg.tool_tag, cfg.result_tag, cfg.python_enabled) == ("", 4, "tool", "result", False)
    for kwargs, key in [({"max_turns": 0}, "env.max_turns"), ({"max_turns": True}, "env.max_turns"),
                        ({"tool_tag": "<tool>"}, "env.tool_tag"), ({"result_tag": ""}, "env.result_tag"),
                        ({"result_tag": "tool"}, "env.result_tag"), ({"timeout_s": float("nan")}, "env.timeout_s"),
                        ({"timeout_s": 0}, "env.timeout_s"), ({"max_observation_chars": 3}, "env.max_observation_chars"),
                        ({"python_memory_mb": 8}, "env.python_memory_mb"), ({"python_cpu_s": 0}, "env.python_cpu_s"),
                        ({"python_enabled": "yes"}, "env.python_enabled"), ({"name": "python"}, "env.name")]:
        with pytest.raises(ConfigError, match=f"config key '{key}'") as info:
            EnvConfig(**kwargs)
        assert "\n" not in str(info.value)


def test_env_config_loads_like_the_other_sections():
    cfg = build(EnvConfig, {"name": "calculator", "max_turns": 3, "timeout_s": 2}, "env.")
    assert cfg == EnvConfig(name="calculator", max_turns=3, timeout_s=2.0)
    with pytest.raises(ConfigError, match="config key 'env.max_turns': expected an integer"):
        build(EnvConfig, {"max_turns": "3"}, "env.")


class EchoEnv:
    """A user's environment loaded by import path (tests.test_envs:EchoEnv)."""

    def __init__(self, config):
        self.config = config

    def reset(self, problem):
        return f"Problem: {problem['question']}"

    def step(self, turn_text):
        return StepResult(turn_text.upper(), done=True)


NOT_A_CLASS = 3


class NoStep:
    def __init__(self, config):
        pass

    def reset(self, problem):
        return None


def test_registry():
    assert make_env(EnvConfig()) is None
    assert isinstance(make_env(EnvConfig(name="calculator")), CalculatorEnv)
    assert isinstance(make_env(EnvConfig(name="python", python_enabled=True)), PythonEnv)
    env = make_env(EnvConfig(name="tests.test_envs:EchoEnv"))
    assert env.reset({"question": "2+2?"}) == "Problem: 2+2?" and env.step("hi").observation == "HI"
    assert make_env(EnvConfig(name="calculator")) is not make_env(EnvConfig(name="calculator"))  # one per trajectory
    for name, message in [
        ("calculater", "env.name 'calculater': unknown environment (built in: calculator, python; or give "
                       "'package.module:ClassName')"),
        ("no_such_pkg.envs:Env", "env.name 'no_such_pkg.envs:Env': cannot import module 'no_such_pkg.envs' "
                                 "(No module named 'no_such_pkg')"),
        ("tests.test_envs:Missing", "env.name 'tests.test_envs:Missing': module 'tests.test_envs' has no 'Missing'"),
        ("tests.test_envs:", "env.name 'tests.test_envs:': expected 'package.module:ClassName'"),
        ("tests.test_envs:NOT_A_CLASS", "env.name 'tests.test_envs:NOT_A_CLASS': 'NOT_A_CLASS' is a int, expected a "
                                        "class taking the EnvConfig"),
    ]:
        with pytest.raises(UnknownEnvironmentError) as info:
            resolve_env(name)
        assert str(info.value) == message
    with pytest.raises(UnknownEnvironmentError, match="has no step"):
        make_env(EnvConfig(name="tests.test_envs:NoStep"))


def test_python_env_is_off_unless_enabled():
    with pytest.raises(ValueError, match="env.python_enabled"):
        PythonEnv(EnvConfig(name="calculator"))


# ------------------------------------------------------------------------------------------ python tool

BOTH = pytest.mark.parametrize("isolation", ["jail", "limits_only"])


def test_the_jail_works_on_this_machine():
    """`make install` brings bubblewrap: here the tool runs in its jail, never silently without it."""
    assert jail_problem() is None


def test_a_run_without_the_jail_says_so_at_its_start(capsys):
    check_isolation(EnvConfig(name="python", python_enabled=True))
    check_isolation(EnvConfig(name="calculator", python_isolation="limits_only"))
    assert capsys.readouterr().err == ""
    check_isolation(EnvConfig(name="python", python_enabled=True, python_isolation="limits_only"))
    assert capsys.readouterr().err == (
        "warning: env.python_isolation=limits_only: model-written code runs with resource limits only, not in a "
        "jail; it can read and change every file, process and network this user can reach\n")


@BOTH
def test_python_prints_output(isolation):
    result = run_python("print('hello', 6 * 7)", timeout_s=5, isolation=isolation)
    assert result.ok and result.output == "hello 42\n" and not result.timed_out


def test_python_env_step_and_code_fence():
    env = make_env(EnvConfig(name="python", python_enabled=True, timeout_s=5))
    step = env.step("Let me check:\n<tool>\n```python\nprint(sum(range(101)))\n```\n</tool>")
    assert step.observation == "<result>5050</result>" and not step.info["error"] and not step.done
    error = env.step("<tool>1/0</tool>")
    assert "ZeroDivisionError: division by zero" in error.observation and error.info["error"]
    assert "<string>" not in error.observation  # the sandbox's own frames are not shown to the model
    assert strip_code_fence("```\nx = 1\n```") == "x = 1"


@BOTH
def test_python_runs_with_an_empty_environment(monkeypatch, isolation):
    monkeypatch.setenv("RL_SYSTEM_TEST_SECRET", "s3cret")
    result = run_python("import os, sys; print(sorted(os.environ)); print(sys.flags.isolated, sys.flags.no_site)",
                        isolation=isolation)
    names, flags = result.output.splitlines()
    # PATH, and what the jail (PWD) and Python's C locale coercion (LC_CTYPE) set themselves
    assert set(ast.literal_eval(names)) <= {"PATH", "PWD", "LC_CTYPE"} and flags == "1 1"


@BOTH
def test_python_infinite_loop_is_killed_within_its_timeout(isolation):
    start = time.monotonic()
    result = run_python("while True: pass", timeout_s=1.0, cpu_s=10, isolation=isolation)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < 1.0 + 2.0
    text, error = describe(result, timeout_s=1.0, cpu_s=10, max_output_bytes=100)
    assert error and text == "[killed: time limit of 1 s exceeded]"


@BOTH
@pytest.mark.parametrize("loop", ["while True: pass", "sum(range(10**12))"])  # the second never returns to Python
def test_python_cpu_limit(isolation, loop):
    # The wall-clock limit far above the CPU limit: on a busy machine the child may wait for a core a long time.
    result = run_python(loop, timeout_s=60.0, cpu_s=1, isolation=isolation)
    assert not result.timed_out and not result.ok and 0.9 < result.cpu_seconds < 2.5
    assert describe(result, timeout_s=60.0, cpu_s=1, max_output_bytes=100)[0].endswith(
        "[killed: CPU time limit of 1 s exceeded]")


def test_python_writes_only_in_the_jails_own_tmp_which_goes_with_it():
    code = ("import os\nos.mkdir('sub')\nopen('sub/a.txt', 'w').write('data')\n"
            "print(open('sub/a.txt').read(), os.getcwd(), sorted(os.listdir('.')))")
    result = run_python(code, timeout_s=5)
    assert result.ok and result.output == "data /tmp ['main.py', 'sub']\n", result.output
    marker = f"/tmp/rl_python_tool_{uuid.uuid4().hex}"
    assert run_python(f"open({marker!r}, 'w').write('x')", timeout_s=5).ok  # the jail's /tmp, not the host's
    assert not os.path.exists(marker)


def test_limits_only_runs_in_a_temporary_directory_that_is_removed_afterwards():
    result = run_python("import os\nprint(os.getcwd(), sorted(os.listdir('.')))", timeout_s=5, isolation="limits_only")
    workdir, listing = result.output.split(" ", 1)
    assert listing.strip() == "['main.py']"
    assert os.path.basename(workdir).startswith("rl_python_tool_") and not os.path.exists(workdir)


@BOTH
def test_python_huge_allocation_is_contained(isolation):
    result = run_python("x = bytearray(10**10)\nprint('allocated')", timeout_s=5, memory_mb=256, isolation=isolation)
    assert not result.ok and "MemoryError" in result.output and "allocated" not in result.output


@BOTH
@pytest.mark.parametrize("code", ["print('x' * 10**8)", "import sys\nwhile True:\n    sys.stdout.write('y' * 10**5)"])
def test_python_output_flood_is_truncated_and_memory_bounded(code, isolation):
    tracemalloc.start()
    try:
        start = time.monotonic()
        result = run_python(code, timeout_s=5, memory_mb=512, max_output_bytes=1000, isolation=isolation)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.output) <= 1000 and time.monotonic() - start < 5
    assert result.truncated or "MemoryError" in result.output  # 'x' * 10**8 may not even fit in the child
    assert peak < 2 * 2**20, f"the parent held {peak} bytes"
    if result.truncated:
        assert describe(result, timeout_s=5, cpu_s=2, max_output_bytes=1000)[0].endswith(
            "[output cut at 1000 bytes; the program was stopped]")


def _alive(token: str | None = None, pgid: int | None = None) -> list[int]:
    """Live processes (zombies, already dead and waiting to be reaped, not counted) whose command
    line holds `token` or whose process group is `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if state != "Z" and ((token and token.encode() in cmdline) or int(group) == pgid):
            found.append(int(entry))
    return found


def _gone_within(seconds: float, **which) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(**which):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


GRANDCHILD = """import subprocess, sys, time
subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(1000)', '{token}'], start_new_session={setsid})
time.sleep(0.3)
print('spawned')
{tail}"""


@BOTH
@pytest.mark.parametrize("tail", ["", "while True: pass"])  # the child exits at once, or is killed at its timeout
def test_python_grandchild_does_not_outlive_the_run(isolation, tail):
    token = f"rl-sandbox-{uuid.uuid4().hex}"
    code = GRANDCHILD.format(token=token, setsid=False, tail=tail)
    start = time.monotonic()
    result = run_python(code, timeout_s=1.5, cpu_s=10, isolation=isolation)
    assert "spawned" in result.output, result.output
    assert time.monotonic() - start < 1.5 + 2.0
    assert _gone_within(2.0, token=token), "the grandchild outlived the run"
    assert _gone_within(2.0, pgid=result.pid), "a process of the child's group outlived the run"


def test_python_grandchild_that_leaves_the_process_group_dies_with_the_jail():
    token = f"rl-sandbox-{uuid.uuid4().hex}"
    result = run_python(GRANDCHILD.format(token=token, setsid=True, tail=""), timeout_s=1.5)
    assert "spawned" in result.output, result.output
    assert _gone_within(2.0, token=token), "a grandchild in its own session outlived the jail"


def test_python_describe_notes():
    from rl_system.envs.python_tool import PythonResult

    def make(**kw):
        base = dict(output="", exit_code=0, timed_out=False, truncated=False, seconds=0.1, cpu_seconds=0.0, pid=1)
        return PythonResult(**{**base, **kw})

    assert describe(make(), timeout_s=1, cpu_s=1, max_output_bytes=10) == ("(no output)", False)
    assert describe(make(output="boom\n", exit_code=3), timeout_s=1, cpu_s=1, max_output_bytes=10) == (
        "boom\n[exit status 3]", True)
    assert describe(make(exit_code=-signal.SIGSEGV), timeout_s=1, cpu_s=1, max_output_bytes=10) == (
        "[killed by signal SIGSEGV]", True)


def test_a_program_killed_by_a_signal_in_the_jail_is_reported_as_such():
    result = run_python("import ctypes\nctypes.string_at(0)")  # a real fault: the jail's PID 1 ignores sent ones
    assert result.exit_code == -signal.SIGSEGV, result
    assert describe(result, timeout_s=5, cpu_s=2, max_output_bytes=100)[0].endswith("[killed by signal SIGSEGV]")


def _jail_check_in(wrapper: list[str]) -> subprocess.CompletedProcess:
    """This machine's jail check run by a fresh Python under `wrapper` (unshare ...)."""
    check = ("from rl_system.envs import EnvConfig, PythonEnv\n"
             "PythonEnv(EnvConfig(name='python', python_enabled=True))")
    return subprocess.run([*wrapper, sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _refusal(done: subprocess.CompletedProcess) -> str:
    """The JailUnavailableError line the check died with."""
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rl_system.envs.python_tool.JailUnavailableError: "), done.stderr
    return last.split(": ", 1)[1]


def test_without_bubblewrap_the_tool_refuses_in_one_line_naming_the_package():
    """bwrap hidden by a mount namespace (a file that is not a program over /usr/bin/bwrap)."""
    message = _refusal(_jail_check_in(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                       'mount --bind /dev/null /usr/bin/bwrap && exec "$@"', "sh"]))
    assert message == ("env.python_isolation 'jail': bubblewrap is not installed (no bwrap in /usr/bin; Debian: "
                       "apt-get install bubblewrap); the python tool runs no model-written code without its jail "
                       "(env.python_isolation=limits_only accepts the weaker mode: resource limits only)")


def test_where_user_namespaces_are_forbidden_the_tool_refuses_in_one_line_naming_bubblewrap():
    """An unprivileged container: a user namespace without a uid map, where bwrap cannot make its own."""
    message = _refusal(_jail_check_in(["unshare", "--user"]))
    assert message.startswith("env.python_isolation 'jail': bubblewrap cannot start its jail here: bwrap: ")
    assert "\n" not in message and message.endswith("(env.python_isolation=limits_only accepts the weaker mode: "
                                                    "resource limits only)")


def test_limits_only_runs_where_the_jail_cannot():
    weak = subprocess.run(["unshare", "--user", sys.executable, "-c",
                           "from rl_system.envs.python_tool import run_python\n"
                           "print(run_python('print(6 * 7)', isolation='limits_only').output, end='')"],
                          capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert weak.stdout == "42\n", weak.stderr


def test_python_isolation_config():
    assert EnvConfig().python_isolation == "jail"
    with pytest.raises(ConfigError, match="config key 'env.python_isolation': expected one of jail, limits_only, "
                                          "got 'none'"):
        EnvConfig(python_isolation="none")
