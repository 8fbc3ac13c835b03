"""The `python` tool: model-written code run in a child process with time, memory and output limits.

Off unless `env.python_enabled` is set. What applies, from strongest to weakest:

OS-level (real limits, enforced by the kernel):
- A separate process, `python -I -S -u` (no site-packages, no user site, no PYTHON* variables,
  the script's directory not on sys.path; unbuffered, so what it printed before being killed is
  kept), started in a new session with an empty environment (only
  a minimal PATH), stdin from /dev/null, cwd a fresh `tempfile.TemporaryDirectory()` that is
  deleted afterwards.
- Resource limits set in the child before the code runs (`resource.setrlimit`): address space,
  CPU seconds (SIGXCPU at the limit, SIGKILL a second later), size of a written file, open
  files, no core dumps. Set by the
  child's own first lines rather than a `preexec_fn`, which is unsafe in a threaded parent
  (Ray actors are threaded). RLIMIT_NPROC is set too, but the kernel ignores it for root.
- A wall-clock timeout: the whole process group is killed (SIGKILL) when it runs out, and
  always once the program has exited, so nothing it started is left behind.
- Output: stdout and stderr share one pipe, read in chunks up to `max_output_bytes`; past that
  the program is killed, so a flood costs the parent at most that much memory.
- When `unshare` works here (probed once, `namespaces()`): the child runs in new user, network
  and PID namespaces (`unshare --map-root-user --net --pid --fork --kill-child`). No network
  then (only a loopback device, down), it cannot see or signal processes outside, and
  when the timeout kills it the kernel kills every process in its PID namespace, even one that
  left the process group. Without `unshare` none of this holds and only the guards below stop
  network use.

Python-level guards (best effort, NOT a security boundary): an audit hook (PEP 578) installed
before the code runs refuses, with PermissionError: opening, listing or changing into paths
outside the temporary directory (reads of the Python standard library are allowed, for imports),
changing files outside it, symbolic and hard links (so a path's text says where it leads: paths
are checked as text, made absolute against the real current directory), creating sockets,
starting or signalling processes (fork, exec, subprocess, os.system, kill), importing ctypes /
_posixsubprocess, changing resource limits and walking the garbage collector. The hook binds
every function it uses before the model's code runs, so patching builtins or os does not fool it. CPython documents audit hooks as a way to observe, not to
sandbox: a determined program may find a way around them (a bug in an extension module, for
instance). `os.stat` and friends are not audited, so a program can learn whether a path exists.

What is not guaranteed: reading files outside the directory is stopped only by the guards (and
by file permissions, which do not bind root: this machine runs as root); disk use inside the
directory is bounded only by the file-size limit per file and by the wall-clock limit. Run
untrusted training in a container or VM whose user can reach nothing worth protecting.
"""
from __future__ import annotations

import errno
import functools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from rl_system.envs.base import ToolEnvironment

MINIMAL_PATH = "/usr/bin:/bin"
FILE_SIZE_LIMIT_BYTES = 16 * 2**20  # one written file
OPEN_FILES_LIMIT = 64
PROCESS_LIMIT = 16  # RLIMIT_NPROC: enforced for non-root users only
UNSHARE_FLAGS = ("--map-root-user", "--net", "--pid", "--fork", "--kill-child")

# The child's first lines (run with `python -I -S -u -c`): limits, then guards, then the model's code
# from main.py. argv: memory bytes, CPU seconds, file-size bytes, open files, processes, guards 0/1.
PREAMBLE = r'''
import os, resource, signal, sys, traceback
def _limits(memory, cpu, fsize, nofile, nproc):
    for which, soft, hard in ((resource.RLIMIT_AS, memory, memory), (resource.RLIMIT_CPU, cpu, cpu + 1),
                              (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NOFILE, nofile, nofile),
                              (resource.RLIMIT_NPROC, nproc, nproc), (resource.RLIMIT_CORE, 0, 0)):
        resource.setrlimit(which, (soft, hard))
    def out_of_cpu(signum, frame):  # the soft limit; the hard one (SIGKILL) a second later catches C loops
        os.write(2, b"CPU time limit exceeded\n")
        os._exit(128 + signum)
    signal.signal(signal.SIGXCPU, out_of_cpu)  # needed: as PID 1 of a namespace, SIGXCPU's default is ignored
def _guard():
    """An audit hook refusing what the module docstring lists. Everything it uses is bound here,
    before the model's code runs, so patching builtins, os or pathlib later does not change it."""
    import pathlib, posix
    _isinstance, _type, _any, _bool, _str, _bytes, _int, _denied = isinstance, type, any, bool, str, bytes, int, PermissionError
    getcwd, realpath = posix.getcwd, os.path.realpath
    fspath, to_str = pathlib.PurePath.__fspath__, pathlib.PurePath.__str__
    root = realpath(getcwd())
    # The standard library may be read (imports, tracebacks), both as sys.path names it and resolved.
    readable = tuple({q for p in sys.path if p.startswith("/") for q in (p, realpath(p))})
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    refused = frozenset(("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                         "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "os.setsid",
                         "os.symlink", "os.link",  # no links: so a path's text says where it leads
                         "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "resource.setrlimit", "resource.prlimit",
                         "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.chroot", "sys.setprofile"))
    refused_modules = frozenset(("ctypes", "_ctypes", "_posixsubprocess"))
    reads = frozenset(("os.listdir", "os.scandir", "os.chdir"))
    writes = frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.truncate", "os.chmod", "os.chown",
                        "os.utime", "os.mkfifo", "os.mknod"))
    def absolute(path):
        """The absolute, normalised text of a path, or None for a path object that could lie about itself."""
        if _isinstance(path, _bytes):
            path = path.decode("utf-8", "surrogateescape")
        elif not _isinstance(path, _str):
            kind = _type(path)
            if not (_isinstance(path, pathlib.PurePath) and kind.__fspath__ is fspath and kind.__str__ is to_str):
                return None
            path = to_str(path)
        parts = []
        for name in (path if path.startswith("/") else getcwd() + "/" + path).split("/"):
            if name == "..":
                parts = parts[:-1]
            elif name and name != ".":
                parts.append(name)
        return "/" + "/".join(parts)
    def under(path, roots):
        full = absolute(path)
        return full is not None and _any(full == r or full.startswith(r + "/") for r in roots)
    def hook(event, args):
        if event == "open":
            path, mode, flags = args
            if path is None or _isinstance(path, _int):  # an already open descriptor
                return
            write = _bool((flags or 0) & write_flags) or _any(c in (mode or "") for c in "wax+")
            if under(path, (root,)) or (not write and under(path, readable)):
                return
            raise _denied(f"sandbox: open({path!r}) outside the working directory is not allowed")
        if event in refused or event.startswith("socket."):
            raise _denied(f"sandbox: {'network access' if event.startswith('socket.') else event} is not allowed")
        if event == "import" and args[0] in refused_modules:
            raise _denied(f"sandbox: importing {args[0]} is not allowed")
        if event in reads or event in writes:
            roots = (root,) if event in writes else (root,) + readable
            for path in args:
                if path is None or _isinstance(path, _int) or _isinstance(path, tuple):
                    continue  # the current directory, modes, flags, descriptors, times
                if not under(path, roots):
                    raise _denied(f"sandbox: {event}({path!r}) outside the working directory is not allowed")
    sys.addaudithook(hook)
def _run():
    memory, cpu, fsize, nofile, nproc, guards = map(int, sys.argv[1:7])
    _limits(memory, cpu, fsize, nofile, nproc)
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
    if guards:
        _guard()
    try:
        code = compile(source, "main.py", "exec")
        exec(code, {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__})
    except SystemExit:
        raise
    except BaseException as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == "main.py"]
        lines = traceback.format_list(frames) + traceback.format_exception_only(type(e), e)
        sys.stderr.write("".join(["Traceback (most recent call last):\n"] * bool(frames) + lines))  # main.py only
        sys.exit(1)
    finally:
        sys.stdout.flush()
_run()
'''


@dataclass
class PythonResult:
    """One run: the captured output (stdout and stderr interleaved, cut at the byte limit) and how it ended."""
    output: str
    exit_code: int | None  # negative: killed by that signal
    timed_out: bool
    truncated: bool
    seconds: float  # wall clock
    cpu_seconds: float  # user + system time of the child and what it waited for
    pid: int  # the child's process (and process group) id, for checking nothing outlived the run

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.truncated


@functools.lru_cache(maxsize=1)
def unshare_prefix() -> tuple[str, ...] | None:
    """The `unshare ...` command prefix if new user, network and PID namespaces work here, else None."""
    exe = shutil.which("unshare", path=MINIMAL_PATH + ":/usr/sbin:/sbin")
    if exe is None:
        return None
    probe = [exe, *UNSHARE_FLAGS, sys.executable, "-I", "-S", "-c", "pass"]
    try:
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={"PATH": MINIMAL_PATH}, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return (exe, *UNSHARE_FLAGS) if done.returncode == 0 else None


def namespaces() -> dict:
    """Which sandbox mechanisms apply on this machine (for logs and the README)."""
    isolated = unshare_prefix() is not None
    return {"network_namespace": isolated, "pid_namespace": isolated, "rlimits": True,
            "nproc_limit_enforced": os.geteuid() != 0, "python_guards": True}


def run_python(code: str, *, timeout_s: float = 5.0, memory_mb: int = 256, cpu_s: int = 2,
               max_output_bytes: int = 4096, guards: bool = True, isolate: bool = True) -> PythonResult:
    """Run `code` as a script in a sandboxed child process (see the module docstring); never raises
    for anything the code does. `guards=False` drops the Python-level guards (tests use it to check
    the OS-level limits alone); `isolate=False` skips the namespaces even where they work."""
    prefix = unshare_prefix() if isolate else None
    limits = [memory_mb * 2**20, cpu_s, FILE_SIZE_LIMIT_BYTES, OPEN_FILES_LIMIT, PROCESS_LIMIT, int(guards)]
    command = [*(prefix or ()), sys.executable, "-I", "-S", "-u", "-c", PREAMBLE, *map(str, limits)]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rl_python_tool_", ignore_cleanup_errors=True) as workdir:
        Path(workdir, "main.py").write_bytes(code.encode("utf-8", "replace"))
        proc = subprocess.Popen(command, cwd=workdir, env={"PATH": MINIMAL_PATH}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, truncated, timed_out = _read_bounded(proc, start + timeout_s, max_output_bytes)
        finally:
            _kill_group(proc.pid)  # before reaping it: its pid (= the group id) cannot be reused yet
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            proc.stdout.close()
    if prefix and not truncated:  # unshare's own complaint when its child was SIGKILLed: not the program's output
        head, _, last = output.rstrip(b"\n").rpartition(b"\n")
        if last.startswith(b"unshare: "):
            output = head
    return PythonResult(output.decode("utf-8", "replace"), proc.returncode, timed_out, truncated,
                        time.monotonic() - start, usage.ru_utime + usage.ru_stime, proc.pid)


def _read_bounded(proc: subprocess.Popen, deadline: float, limit: int) -> tuple[bytes, bool, bool]:
    """Read the child's output until it exits, the deadline passes or `limit` bytes have come.
    Returns (output, truncated, timed_out). Stops at the child's exit even if something it started
    still holds the pipe open (that process is killed with the group)."""
    fd = proc.stdout.fileno()
    buffer = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buffer), False, True
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.05))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:  # every writer closed the pipe
                return bytes(buffer), False, False
            room = limit - len(buffer)
            buffer += chunk[:room]
            if len(chunk) > room:
                return bytes(buffer), True, False
        elif _exited(proc.pid):  # nothing left to read and the child is gone
            return bytes(buffer), False, False


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (WNOWAIT keeps its pid reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError as e:
        if e.errno not in (errno.ESRCH, errno.EPERM):
            raise


def describe(result: PythonResult, *, timeout_s: float, cpu_s: int, max_output_bytes: int) -> tuple[str, bool]:
    """The tool's reply to the model: the output plus one line on how the run ended; (text, is_error)."""
    notes = []
    if result.truncated:
        notes.append(f"[output cut at {max_output_bytes} bytes; the program was stopped]")
    elif result.timed_out:
        notes.append(f"[killed: time limit of {timeout_s:g} s exceeded]")
    elif result.exit_code and result.cpu_seconds >= cpu_s - 0.05:
        notes.append(f"[killed: CPU time limit of {cpu_s} s exceeded]")
    elif result.exit_code is not None and result.exit_code < 0:
        number = -result.exit_code
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        notes.append(f"[killed by signal {name}]")
    elif result.exit_code:
        notes.append(f"[exit status {result.exit_code}]")
    text = result.output.rstrip("\n")
    if notes:
        text = f"{text}\n{notes[0]}" if text else notes[0]
    return (text if text else "(no output)"), not result.ok


def strip_code_fence(code: str) -> str:
    """Code as models often write it inside a call, in a ```python fence, without the fence."""
    lines = code.strip().splitlines()
    if len(lines) >= 2 and lines[0].startswith("```") and lines[-1].strip() == "```":
        lines = lines[1:-1]
    return textwrap.dedent("\n".join(lines))


class PythonEnv(ToolEnvironment):
    """`env.name: python` (with `env.python_enabled: true`): `<tool>print(2**10)</tool>` -> `<result>1024</result>`."""

    def __init__(self, config):
        if not config.python_enabled:
            raise ValueError("env.python_enabled: the python tool runs model-written code and is off unless enabled")
        super().__init__(config)

    def run_tool(self, call: str) -> tuple[str, bool]:
        c = self.config
        limit = max(16, c.max_observation_chars - 80)  # room for the line on how it ended
        result = run_python(strip_code_fence(call), timeout_s=c.timeout_s, memory_mb=c.python_memory_mb,
                            cpu_s=c.python_cpu_s, max_output_bytes=limit)
        return describe(result, timeout_s=c.timeout_s, cpu_s=c.python_cpu_s, max_output_bytes=limit)
