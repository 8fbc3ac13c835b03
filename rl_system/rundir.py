"""A new run never lands silently on an earlier one: a run directory that holds anything is
refused unless the user asks to continue it (--resume) or to replace it (--overwrite).

--overwrite deletes, so it replaces only a directory a run made: every run writes RUN_MARKER into its
directory before anything else, and a directory without one is never removed. Nor is the filesystem
root, the home or current directory or a folder above them, nor a folder that holds one of the run's
own inputs (model, data, reward models and plug-ins): each refusal is one line saying why."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

RUN_MARKER = ".rl_system_run"


class RunDirError(ValueError):
    """A run directory that is already in use, or may not be replaced; one line with the ways out."""


def check_run_dir(path: str | Path, key: str, resume: bool, overwrite: bool, can_resume: bool,
                  inputs: dict[str, str] | None = None) -> None:
    """Raises unless `path` is free, or the user said what to do with what is there and may. Changes
    nothing: an --overwrite takes effect in `start_run_dir`, once every other check has passed.
    `inputs`: config key -> a path the run reads (a run directory never holds one)."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite: give one (continue the run, or replace it)")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{key} '{path}': a file is there, not a run directory; choose another {key}")
    if overwrite and path.exists():
        _check_replaceable(path, key, inputs or {})
    if resume or overwrite or not path.exists():
        return
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if p.name != RUN_MARKER)
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        ways = "--resume to continue it, " if can_resume else ""
        raise RunDirError(f"{key} '{path}' already holds a run ({shown}): use {ways}--overwrite to replace it, "
                          f"or another {key}")


def _check_replaceable(path: Path, key: str, inputs: dict[str, str]) -> None:
    """What --overwrite may delete: a directory a run made, and nothing the machine or the run needs."""
    refuse = f"--overwrite: {key} '{path}'"
    if path.is_symlink():
        raise RunDirError(f"{refuse} is a symbolic link; give the run directory itself")
    target = path.resolve()
    for name, place in (("the filesystem root", Path("/")), ("the home directory", Path.home()),
                        ("the current directory", Path.cwd())):
        place = place.resolve()
        if target == place or target in place.parents:
            raise RunDirError(f"{refuse} is {name}{' or above it' if target != place else ''}, never a run "
                              f"directory: choose another {key}")
    for input_key, input_path in inputs.items():
        held = Path(input_path).resolve()
        if held == target or target in held.parents:
            raise RunDirError(f"{refuse} holds {input_key} '{input_path}', an input of this run: choose another {key}")
    if any(path.iterdir()) and not (path / RUN_MARKER).is_file():
        raise RunDirError(f"{refuse} holds files but no run (no {RUN_MARKER}, which every run writes first), so it "
                          f"is not deleted: remove it yourself or choose another {key}")


def start_run_dir(path: str | Path, overwrite: bool) -> None:
    """Just before a run writes: with --overwrite the earlier run goes (only if a run made it); then
    the directory exists and holds RUN_MARKER, first of all."""
    path = Path(path)
    if overwrite and (path / RUN_MARKER).is_file():
        shutil.rmtree(path)
    mark_run_dir(path)


def mark_run_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).write_text("made by rl_system; `--overwrite` may replace this directory\n")


def swap_in(partial: Path, out: Path) -> None:
    """`partial`, written whole beside `out`, takes its place (a crash before this keeps the old one),
    marked as a run's so that a later --overwrite may replace it."""
    mark_run_dir(partial)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(partial, out)
