"""A new run never lands silently on an earlier one: a run directory that holds anything is
refused unless the user asks to continue it (--resume) or to replace it (--overwrite)."""
from __future__ import annotations

import shutil
from pathlib import Path


class RunDirError(ValueError):
    """A run directory that is already in use; one line with the three ways out."""


def check_run_dir(path: str | Path, key: str, resume: bool, overwrite: bool, can_resume: bool) -> None:
    """Raises unless `path` is free, or the user said what to do with what is there. Changes nothing:
    an --overwrite takes effect in `replace_run_dir`, once every other check has passed."""
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite: give one (continue the run, or replace it)")
    path = Path(path)
    if resume or overwrite or not path.exists():
        return
    if not path.is_dir():
        raise RunDirError(f"{key} '{path}': a file is there, not a run directory; choose another {key}")
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        ways = "--resume to continue it, " if can_resume else ""
        raise RunDirError(f"{key} '{path}' already holds a run ({shown}): use {ways}--overwrite to replace it, "
                          f"or another {key}")


def replace_run_dir(path: str | Path, overwrite: bool) -> None:
    """With --overwrite, the earlier run goes just before the new one starts writing."""
    if overwrite and Path(path).is_dir():
        shutil.rmtree(path)
