"""The `python` tool: model-written code run in a jail, with time, memory, process and output limits.

Off unless `env.python_enabled` is set. By default (`env.python_isolation: jail`) every call runs in
a fresh bubblewrap jail (Debian's `bubblewrap`, `make install` brings it); nothing inside depends on
Python-level checks, only on what the kernel enforces:

- Its own user, mount, PID, network, IPC, UTS and cgroup namespaces. Inside it is uid/gid 65534 with
  no capabilities; bwrap itself is started as uid 65534 when this process is root, so even the
  kernel's view of it outside is an unprivileged user, bound by RLIMIT_NPROC (which the kernel
  ignores for root). No further user namespaces may be made inside (`--disable-userns`).
- A root of its own: the host's `/usr` (the interpreter and its standard library: this Python, or
  /usr/bin/python3 where uid 65534 cannot reach this one, e.g. in /root/.pyenv) read-only, a fresh
  `/proc` that shows only the jail's processes, a minimal `/dev`, and a `/tmp` tmpfs of
  WORKDIR_BYTES, its only writable place and its working directory, where the code is main.py.
  Nothing else of the host is there: no `/etc`, `/home`, run directories, checkpoints or reward code.
- No network: a new network namespace has only a loopback device, down; the seccomp filter refuses
  every socket family but AF_UNIX as well.
- A seccomp filter (built with libseccomp, SECCOMP_POLICY below): the system calls that reach
  other processes (ptrace, process_vm_*), the jail's own mounts and namespaces, and kernel attack
  surface (bpf, io_uring, userfaultfd, keyrings, modules, ...) fail with EPERM; system calls of
  another ABI (e.g. i386's int 0x80) kill the process.
- Resource limits set by the child's first lines (`resource.setrlimit`, before the model's code):
  address space, CPU seconds (SIGXCPU at the limit, SIGKILL a second later), size of a written
  file, open files, processes, no core dumps. A wall-clock timeout kills the jail: killing bwrap
  kills the jail's PID 1 (`--die-with-parent`) and with it every process in its PID namespace.
- Output: stdout and stderr share one pipe, read in chunks up to `max_output_bytes`; past that the
  jail is killed, so a flood costs the parent at most that much memory.

Where the jail cannot start (bubblewrap missing, user namespaces forbidden, libseccomp missing) the
tool refuses with one line naming the missing piece, unless the config asks for the weaker mode,
`env.python_isolation: limits_only`: a child process with the limits above, an empty environment and
a temporary working directory, but the machine's files, processes and network within its reach as
this user's (root's, in a container). The run says so when it starts.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import select
import shutil
import signal
import socket
import stat
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
WORKDIR_BYTES = 64 * 2**20  # the jail's /tmp, its only writable place (a tmpfs: memory)
OPEN_FILES_LIMIT = 64
PROCESS_LIMIT = 16  # RLIMIT_NPROC, the jail's own processes included
JAIL_UID = 65534  # nobody, inside the jail and (when this process is root) outside it
JAIL_WORKDIR = "/tmp"
SYSTEM_PYTHON = "/usr/bin/python3"

# The child's first lines (run with `python -I -S -u -c`): limits, then the model's code from main.py.
# argv: memory bytes, CPU seconds, file-size bytes, open files, processes.
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
    signal.signal(signal.SIGXCPU, out_of_cpu)
def _run():
    _limits(*map(int, sys.argv[1:6]))
    with open("main.py", encoding="utf-8") as f:
        source = f.read()
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

# The seccomp filter: (errno, system calls) refused in the jail; everything else is allowed (as
# Flatpak's and Docker's default profiles do, a list of what has no business in a Python program).
SECCOMP_POLICY = (
    (errno.EPERM, (
        # other processes' memory and descriptors
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        # the jail's own mounts and namespaces
        "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen",
        "fsconfig", "fsmount", "fspick", "mount_setattr",
        # kernel attack surface with a record of privilege escalations
        "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "keyctl", "add_key", "request_key", "personality", "modify_ldt", "uselib",
        # the machine's state
        "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon",
        "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
        "iopl", "ioperm", "sethostname", "setdomainname", "vhangup", "open_by_handle_at", "name_to_handle_at",
        "fanotify_init", "mbind", "migrate_pages", "move_pages", "set_mempolicy")),
    # clone3's flags live in memory a filter cannot read: refused as unknown, libc falls back to clone
    (errno.ENOSYS, ("clone3",)),
)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x00000080)  # CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
TIOCSTI = 0x5412  # pushes characters into a terminal's input


class JailUnavailableError(RuntimeError):
    """The python tool's jail cannot start here; the message is one line naming what is missing."""


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
def seccomp_program() -> bytes:
    """SECCOMP_POLICY compiled to BPF by libseccomp (what `bwrap --seccomp` loads)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, RuntimeError) as e:  # RuntimeError: the package is there, libseccomp.so.2 is not
        raise JailUnavailableError(f"cannot build the seccomp filter: {e} (Debian: apt-get install libseccomp2; "
                                   "pip: pyseccomp)") from None
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    for code, calls in SECCOMP_POLICY:
        for call in calls:
            rules.add_rule(seccomp.ERRNO(code), call)
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    rules.add_rule(seccomp.ERRNO(errno.EPERM), "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        return f.read()


@functools.lru_cache(maxsize=1)
def jail_interpreter() -> tuple[str, tuple[str, ...]]:
    """The Python the jail runs and the directories outside /usr it needs: this interpreter when
    the jail's user can reach its files, else the system's (this one may live in /root/.pyenv, which
    uid 65534 cannot enter)."""
    prefixes = tuple(sorted({p for p in (sys.base_prefix, sys.base_exec_prefix) if not (p + "/").startswith("/usr/")}))
    if all(_searchable_by_anyone(p) for p in prefixes) or not os.path.exists(SYSTEM_PYTHON):
        return os.path.realpath(sys.executable), prefixes
    return SYSTEM_PYTHON, ()


def _searchable_by_anyone(path: str) -> bool:
    """Every directory from / down to `path` lets other users in (the x bit for others)."""
    path = Path(path)
    return all(os.stat(p).st_mode & stat.S_IXOTH for p in (path, *path.parents))


def jail_arguments(bwrap: str, main_fd: int, seccomp_fd: int) -> list[str]:
    """The bwrap command line up to the program: namespaces, the root it sees, the filter."""
    args = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session", "--as-pid-1",
            "--uid", str(JAIL_UID), "--gid", str(JAIL_UID), "--hostname", "jail", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: links into it
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for prefix in jail_interpreter()[1]:
        args += ["--ro-bind", prefix, prefix]
    return args + ["--proc", "/proc", "--dev", "/dev", "--size", str(WORKDIR_BYTES), "--tmpfs", JAIL_WORKDIR,
                   "--file", str(main_fd), f"{JAIL_WORKDIR}/main.py", "--remount-ro", "/dev", "--remount-ro", "/",
                   "--chdir", JAIL_WORKDIR, "--seccomp", str(seccomp_fd), "--"]


@functools.lru_cache(maxsize=1)
def jail_problem() -> str | None:
    """Why the jail cannot run here, in a few words, or None when a program runs in it; probed once."""
    if shutil.which("bwrap", path=MINIMAL_PATH) is None:
        return "bubblewrap is not installed (no bwrap in /usr/bin; Debian: apt-get install bubblewrap)"
    try:
        result = _run("print('jail ok')", timeout_s=30, memory_mb=256, cpu_s=10, max_output_bytes=4096,
                      isolation="jail")
    except (JailUnavailableError, OSError) as e:
        return str(e)
    if result.output == "jail ok\n" and result.ok:
        return None
    said = [line for line in result.output.splitlines() if line.strip()]
    return f"bubblewrap cannot start its jail here: {said[-1] if said else f'exit status {result.exit_code}'}"


def require_jail() -> None:
    """Raises JailUnavailableError (one line) unless the jail works here."""
    problem = jail_problem()
    if problem:
        raise JailUnavailableError(f"env.python_isolation 'jail': {problem}; the python tool runs no model-written "
                                   "code without its jail (env.python_isolation=limits_only accepts the weaker "
                                   "mode: resource limits only)")


LIMITS_ONLY_WARNING = ("warning: env.python_isolation=limits_only: model-written code runs with resource limits only, "
                       "not in a jail; it can read and change every file, process and network this user can reach")


def check_isolation(config) -> None:
    """At a run's start, before any worker: the python tool's jail checked (one line where it cannot
    start), or the weaker mode the config asked for announced."""
    if config.name != "python":
        return
    if config.python_isolation == "jail":
        require_jail()
    else:
        print(LIMITS_ONLY_WARNING, file=sys.stderr, flush=True)


def run_python(code: str, *, timeout_s: float = 5.0, memory_mb: int = 256, cpu_s: int = 2,
               max_output_bytes: int = 4096, isolation: str = "jail") -> PythonResult:
    """Run `code` as a script in a jail (see the module docstring); never raises for anything the code
    does. Raises JailUnavailableError when the jail cannot start here, unless `isolation` is
    "limits_only" (a child process with resource limits only)."""
    if isolation == "jail":
        require_jail()
    return _run(code, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s, max_output_bytes=max_output_bytes,
                isolation=isolation)


def _run(code: str, *, timeout_s: float, memory_mb: int, cpu_s: int, max_output_bytes: int,
         isolation: str) -> PythonResult:
    limits = [memory_mb * 2**20, cpu_s, FILE_SIZE_LIMIT_BYTES, OPEN_FILES_LIMIT, PROCESS_LIMIT]
    python = [os.path.realpath(sys.executable), "-I", "-S", "-u", "-c", PREAMBLE, *map(str, limits)]
    source = code.encode("utf-8", "replace")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if isolation == "jail":
            main_fd, seccomp_fd = _memory_file("main.py", source), _memory_file("seccomp", seccomp_program())
            stack.callback(os.close, main_fd)
            stack.callback(os.close, seccomp_fd)
            bwrap = shutil.which("bwrap", path=MINIMAL_PATH) or "bwrap"
            command = jail_arguments(bwrap, main_fd, seccomp_fd) + [jail_interpreter()[0], *python[1:]]
            where = {"cwd": "/", "pass_fds": (main_fd, seccomp_fd)}
            if os.geteuid() == 0:  # set in the child by _posixsubprocess (C, no Python code: threads are safe)
                where.update(user=JAIL_UID, group=JAIL_UID, extra_groups=[])
        else:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="rl_python_tool_",
                                                                      ignore_cleanup_errors=True))
            Path(workdir, "main.py").write_bytes(source)
            command, where = python, {"cwd": workdir}
        proc = subprocess.Popen(command, env={"PATH": MINIMAL_PATH}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True, **where)
        try:
            output, truncated, timed_out = _read_bounded(proc, start + timeout_s, max_output_bytes)
        finally:
            _kill_group(proc.pid)  # before reaping it: its pid (= the group id) cannot be reused yet
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
            proc.stdout.close()
    exit_code = proc.returncode
    if isolation == "jail" and exit_code is not None and 128 < exit_code < 128 + signal.NSIG:
        exit_code = 128 - exit_code  # bwrap reports a program killed by signal N as exit status 128 + N
    return PythonResult(output.decode("utf-8", "replace"), exit_code, timed_out, truncated,
                        time.monotonic() - start, usage.ru_utime + usage.ru_stime, proc.pid)


def _memory_file(name: str, data: bytes) -> int:
    """A descriptor of an anonymous in-memory file holding `data`, read from its start (bwrap copies it)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_bounded(proc: subprocess.Popen, deadline: float, limit: int) -> tuple[bytes, bool, bool]:
    """Read the child's output until it exits, the deadline passes or `limit` bytes have come.
    Returns (output, truncated, timed_out). Stops at the child's exit even if something it started
    still holds the pipe open (that process is killed with the group); a child that closed its
    output but runs on is waited for (bwrap, the child in a jail, exits only after what it ran)."""
    fd = proc.stdout.fileno()
    exited = os.pidfd_open(proc.pid)  # readable once the child has exited; it stays unreaped, its pid reserved
    try:
        watched, buffer = [fd, exited], bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(buffer), False, True
            ready, _, _ = select.select(watched, [], [], remaining)
            if fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:  # every writer closed the pipe
                    watched = [exited]
                    continue
                room = limit - len(buffer)
                buffer += chunk[:room]
                if len(chunk) > room:
                    return bytes(buffer), True, False
            elif ready:  # the child is gone and nothing is left to read
                return bytes(buffer), False, False
    finally:
        os.close(exited)


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
        if config.python_isolation == "jail":
            require_jail()
        super().__init__(config)

    def run_tool(self, call: str) -> tuple[str, bool]:
        c = self.config
        limit = max(16, c.max_observation_chars - 80)  # room for the line on how it ended
        result = run_python(strip_code_fence(call), timeout_s=c.timeout_s, memory_mb=c.python_memory_mb,
                            cpu_s=c.python_cpu_s, max_output_bytes=limit, isolation=c.python_isolation)
        return describe(result, timeout_s=c.timeout_s, cpu_s=c.python_cpu_s, max_output_bytes=limit)
