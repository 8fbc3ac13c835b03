"""Online difficulty filtering (data.difficulty_filter): each training problem's pass rate (the share
of its group's samples that were right) in the last groups drawn from it. A problem that every sample
solved recently, or none did, gives a group without reward spread, so no GRPO signal: when it is drawn
again it is skipped, and the sampler takes the next problem of its task. A skipped problem is let
through again after `retry_after` skips, to measure it anew under the policy that has moved on."""
from __future__ import annotations

from rl_system.config import DifficultyFilterConfig
from rl_system.metrics import mean


class DifficultyFilter:
    def __init__(self, cfg: DifficultyFilterConfig, state: dict | None = None):
        self.cfg = cfg
        state = state or {}
        # JSON keys: problem ids as text
        self.pass_rates: dict[str, list[float]] = {k: list(v) for k, v in state.get("pass_rates", {}).items()}
        self.skips_in_a_row: dict[str, int] = dict(state.get("skips_in_a_row", {}))
        self.skipped = dict(state.get("skipped", {"too_easy": 0, "too_hard": 0}))

    def verdict(self, problem_id: int) -> str | None:
        """'too_easy' or 'too_hard' when the problem's recent pass rate is at or past a bound, else None."""
        recent = self.pass_rates.get(str(problem_id), [])
        if len(recent) < self.cfg.min_groups:
            return None
        rate = mean(recent)
        return "too_easy" if rate >= self.cfg.high else "too_hard" if rate <= self.cfg.low else None

    def admit(self, problem_id: int) -> bool:
        """Whether a drawn problem is trained on now; a skip is counted."""
        key, verdict = str(problem_id), self.verdict(problem_id)
        if verdict is None or self.skips_in_a_row.get(key, 0) >= self.cfg.retry_after:
            self.skips_in_a_row.pop(key, None)
            return True
        self.skips_in_a_row[key] = self.skips_in_a_row.get(key, 0) + 1
        self.skipped[verdict] += 1
        return False

    def observe(self, summaries: list[dict]) -> None:
        """One step's scored groups (group_summary dicts): each problem's pass rate joins its history."""
        for s in summaries:
            if s["correct"]:
                key = str(s["problem_id"])
                self.pass_rates[key] = (self.pass_rates.get(key, []) + [mean(s["correct"])])[-self.cfg.window:]

    def metrics(self) -> dict[str, float]:
        """Skips so far (cumulative) and the problems with a history."""
        return {"filter/skipped_too_easy": self.skipped["too_easy"], "filter/skipped_too_hard": self.skipped["too_hard"],
                "filter/problems_seen": len(self.pass_rates)}

    def state(self) -> dict:
        """What a checkpoint keeps (JSON)."""
        return {"pass_rates": {k: list(v) for k, v in self.pass_rates.items()},
                "skips_in_a_row": dict(self.skips_in_a_row), "skipped": dict(self.skipped)}
