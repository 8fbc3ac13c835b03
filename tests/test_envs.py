"""Environments for multi-turn rollouts (rl_system/envs): the tool-call text conventions, the calculator's
safe parser, the python tool's sandbox, EnvConfig's checks and the registry. No Ray, no model; the
python-tool tests start short child processes with 1-2 s limits."""
from __future__ import annotations

import os
import signal
import socket
import time
import tracemalloc
import uuid

import pytest

from rl_system.config import ConfigError, _build
from rl_system.envs import (EnvConfig, StepResult, UnknownEnvironmentError, calculate, format_observation, make_env,
                            parse_tool_call, resolve_env, truncate)
from rl_system.envs.calculator import CalculatorEnv, evaluate
from rl_system.envs.python_tool import PythonEnv, describe, namespaces, run_python, strip_code_fence, unshare_prefix

needs_namespaces = pytest.mark.skipif(unshare_prefix() is None, reason="unshare (user/net/pid namespaces) unavailable")


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
    cfg = _build(EnvConfig, {"name": "calculator", "max_turns": 3, "timeout_s": 2}, "env.")
    assert cfg == EnvConfig(name="calculator", max_turns=3, timeout_s=2.0)
    with pytest.raises(ConfigError, match="config key 'env.max_turns': expected an integer"):
        _build(EnvConfig, {"max_turns": "3"}, "env.")


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

def test_sandbox_report():
    report = namespaces()
    assert report["rlimits"] and report["python_guards"]
    assert report["network_namespace"] == report["pid_namespace"] == (unshare_prefix() is not None)


def test_python_prints_output():
    result = run_python("print('hello', 6 * 7)", timeout_s=5)
    assert result.ok and result.output == "hello 42\n" and not result.timed_out


def test_python_env_step_and_code_fence():
    env = make_env(EnvConfig(name="python", python_enabled=True, timeout_s=5))
    step = env.step("Let me check:\n<tool>\n```python\nprint(sum(range(101)))\n```\n</tool>")
    assert step.observation == "<result>5050</result>" and not step.info["error"] and not step.done
    error = env.step("<tool>1/0</tool>")
    assert "ZeroDivisionError: division by zero" in error.observation and error.info["error"]
    assert "<string>" not in error.observation  # the sandbox's own frames are not shown to the model
    assert strip_code_fence("```\nx = 1\n```") == "x = 1"


def test_python_runs_with_an_empty_environment(monkeypatch):
    monkeypatch.setenv("RL_SYSTEM_TEST_SECRET", "s3cret")
    result = run_python("import os, sys; print(sorted(os.environ)); print(sys.flags.isolated, sys.flags.no_site)")
    names, flags = result.output.splitlines()
    assert "RL_SYSTEM_TEST_SECRET" not in names and "HOME" not in names and "PATH" in names
    assert flags == "1 1"


def test_python_infinite_loop_is_killed_within_its_timeout():
    start = time.monotonic()
    result = run_python("while True: pass", timeout_s=1.0, cpu_s=10)
    assert result.timed_out and not result.ok
    assert time.monotonic() - start < 1.0 + 2.0
    text, error = describe(result, timeout_s=1.0, cpu_s=10, max_output_bytes=100)
    assert error and text == "[killed: time limit of 1 s exceeded]"


def test_python_cpu_limit():
    result = run_python("while True: pass", timeout_s=5.0, cpu_s=1)
    assert not result.timed_out and not result.ok and result.cpu_seconds < 2.5
    assert describe(result, timeout_s=5.0, cpu_s=1, max_output_bytes=100)[0].endswith(
        "[killed: CPU time limit of 1 s exceeded]")


@pytest.mark.parametrize("code", ["print(open('/etc/passwd').read())",
                                  "print(open('../../../../../../etc/passwd').read())",
                                  "import os; fd = os.open('/etc/passwd', os.O_RDONLY); print(os.read(fd, 100))",
                                  "from pathlib import Path; print(Path('/etc/passwd').read_text())",
                                  "import os; os.symlink('/etc/passwd', 'p'); print(open('p').read())",
                                  "import os; print(os.listdir('/etc'))",
                                  "import _io; print(_io.FileIO('/etc/passwd').read())",
                                  "print(open('/proc/self/root/etc/passwd').read())",
                                  # patching what the guard uses does not fool it (it bound them beforehand)
                                  "import builtins; builtins.isinstance = builtins.any = lambda *a: True\n"
                                  "print(open('/etc/passwd').read())",
                                  "import pathlib; pathlib.PurePath.__fspath__ = lambda self: '/etc/passwd'\n"
                                  "print(pathlib.Path('harmless.txt').read_text())"])
def test_python_cannot_read_outside_its_directory(code):
    result = run_python(code, timeout_s=5)
    assert not result.ok and "PermissionError" in result.output and "root:" not in result.output, result.output


def test_python_writes_inside_its_directory_which_is_removed_afterwards():
    code = ("import os\nos.mkdir('sub')\nopen('sub/a.txt', 'w').write('data')\n"
            "print(open('sub/a.txt').read(), os.getcwd(), sorted(os.listdir('.')))")
    result = run_python(code, timeout_s=5)
    assert result.ok, result.output
    text, workdir, listing = result.output.split(" ", 2)
    assert text == "data" and listing.strip() == "['main.py', 'sub']"
    assert os.path.basename(workdir).startswith("rl_python_tool_") and not os.path.exists(workdir)
    escape = run_python("open('/tmp/rl_python_tool_escape.txt', 'w').write('x')", timeout_s=5)
    assert "PermissionError" in escape.output and not os.path.exists("/tmp/rl_python_tool_escape.txt")


@pytest.fixture
def listener():
    """A server on 127.0.0.1 that a connection would reach if the sandbox let it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


CONNECT = "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint('CONNECTED')"


def test_python_cannot_connect_to_the_network(listener):
    result = run_python(CONNECT.format(port=listener), timeout_s=5)
    assert "CONNECTED" not in result.output and "PermissionError: sandbox: network access is not allowed" in result.output


@needs_namespaces
def test_python_network_namespace_alone_blocks_connections(listener):
    result = run_python(CONNECT.format(port=listener), timeout_s=5, guards=False)
    assert "CONNECTED" not in result.output and "Network is unreachable" in result.output
    # the check above means something: the same program outside the namespace does connect
    assert "CONNECTED" in run_python(CONNECT.format(port=listener), timeout_s=5, guards=False, isolate=False).output


def test_python_fork_bomb_is_contained():
    start = time.monotonic()
    result = run_python("import os\nwhile True:\n    os.fork()", timeout_s=2)
    assert not result.ok and "PermissionError: sandbox: os.fork is not allowed" in result.output
    assert time.monotonic() - start < 2.0 + 2.0
    spawn = run_python("import subprocess\nsubprocess.run(['sh', '-c', 'echo escaped'])", timeout_s=2)
    assert "escaped" not in spawn.output and "PermissionError" in spawn.output


def test_python_huge_allocation_is_contained():
    result = run_python("x = bytearray(10**10)\nprint('allocated')", timeout_s=5, memory_mb=256)
    assert not result.ok and "MemoryError" in result.output and "allocated" not in result.output
    # the limit is the OS's, not the guards'
    assert "MemoryError" in run_python("x = bytearray(10**10)", timeout_s=5, memory_mb=256, guards=False).output


@pytest.mark.parametrize("code", ["print('x' * 10**8)", "import sys\nwhile True:\n    sys.stdout.write('y' * 10**5)"])
def test_python_output_flood_is_truncated_and_memory_bounded(code):
    tracemalloc.start()
    try:
        start = time.monotonic()
        result = run_python(code, timeout_s=5, memory_mb=512, max_output_bytes=1000)
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


@pytest.mark.parametrize("isolate", [True, False])
@pytest.mark.parametrize("tail", ["", "while True: pass"])  # the child exits at once, or is killed at its timeout
def test_python_grandchild_does_not_outlive_the_run(isolate, tail):
    if isolate and unshare_prefix() is None:
        pytest.skip("unshare unavailable")
    token = f"rl-sandbox-{uuid.uuid4().hex}"
    code = GRANDCHILD.format(token=token, setsid=False, tail=tail)
    start = time.monotonic()
    result = run_python(code, timeout_s=1.5, cpu_s=10, guards=False, isolate=isolate)
    assert "spawned" in result.output, result.output
    assert time.monotonic() - start < 1.5 + 2.0
    assert _gone_within(2.0, token=token), "the grandchild outlived the run"
    assert _gone_within(2.0, pgid=result.pid), "a process of the child's group outlived the run"


@needs_namespaces
def test_python_grandchild_that_leaves_the_process_group_dies_with_the_pid_namespace():
    token = f"rl-sandbox-{uuid.uuid4().hex}"
    result = run_python(GRANDCHILD.format(token=token, setsid=True, tail=""), timeout_s=1.5, guards=False)
    assert "spawned" in result.output, result.output
    assert _gone_within(2.0, token=token), "a grandchild in its own session outlived the PID namespace"


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
