"""Run directories (rl_system/rundir.py): a run writes its marker first, --overwrite replaces only
what a run made, and a run into a new directory deletes nothing. The refusals, each with its line,
are in tests/bad_inputs/cases.yaml (rundir-*)."""
from pathlib import Path

import pytest

from rl_system.rundir import RUN_MARKER, RunDirError, check_run_dir, start_run_dir, swap_in


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_new_run_creates_its_directory_marker_first_and_deletes_nothing(tmp_path):
    (tmp_path / "neighbour").mkdir()
    (tmp_path / "neighbour" / "keep.txt").write_text("mine")
    (tmp_path / "run.partial").mkdir()  # a sibling that looks like a half-written run: not this run's business
    before = tree(tmp_path)
    run = tmp_path / "runs" / "new"
    check_run_dir(run, "output_dir", resume=False, overwrite=False, can_resume=True)
    start_run_dir(run, overwrite=False)
    assert sorted(p.name for p in run.iterdir()) == [RUN_MARKER]
    assert {k: v for k, v in tree(tmp_path).items() if not k.startswith("runs/")} == before


def test_overwrite_replaces_a_run_that_a_run_made(tmp_path):
    run = tmp_path / "run"
    start_run_dir(run, overwrite=False)
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match="already holds a run"):
        check_run_dir(run, "output_dir", resume=False, overwrite=False, can_resume=True)
    check_run_dir(run, "output_dir", resume=False, overwrite=True, can_resume=True)
    start_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == [RUN_MARKER]


def test_overwrite_never_deletes_a_folder_no_run_made_even_if_asked_directly(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match="holds files but no run"):
        check_run_dir(mine, "output_dir", resume=False, overwrite=True, can_resume=True)
    start_run_dir(mine, overwrite=True)  # the last line of defence checks the marker again
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_an_empty_folder_may_be_used_and_a_finished_swap_keeps_the_marker(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    check_run_dir(empty, "output_dir", resume=False, overwrite=True, can_resume=False)
    out, partial = tmp_path / "samples", tmp_path / "samples.partial"
    start_run_dir(out, overwrite=False)
    partial.mkdir()
    (partial / "data.arrow").write_bytes(b"rows")
    swap_in(partial, out)
    assert sorted(p.name for p in out.iterdir()) == [RUN_MARKER, "data.arrow"] and not partial.exists()
    check_run_dir(out, "collect.output_dir", resume=False, overwrite=True, can_resume=False)
