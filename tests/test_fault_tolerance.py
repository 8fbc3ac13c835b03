"""Chaos on a real local Ray cluster: rollout and reward worker processes are SIGKILLed 20 times
while GRPO trains. Ray restarts them (a restarted rollout worker loads the newest weights), the
calls they were running are run again, and the buffer's counters prove that every prompt group
generated was trained exactly once: none lost, none twice. After the last kill the run is stopped
as `ray job stop` would (SIGTERM: finish the step, save, return)."""
import json
import os
import random
import signal
import threading
import time

import psutil
import pytest

ray = pytest.importorskip("ray")

from actors.controller import RayWorkers, connect, resolve_paths  # noqa: E402
from rl_system.config import load_config  # noqa: E402
from rl_system.pipeline import r1_zero  # noqa: E402

pytestmark = pytest.mark.integration

KILLS = 20
VICTIMS = ("ray::RolloutWorker", "ray::RuleRewardWorker")  # Ray's process titles for these actors


def busy_worker_processes(kind: str) -> list[tuple[psutil.Process, str]]:
    """This test's own workers of `kind` (the local Ray runs below this process) that are in the
    middle of a call: Ray titles them `ray::Class.method` then."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            title = proc.cmdline()[0] if proc.cmdline() else ""
        except psutil.Error:
            continue
        if title.startswith(kind + "."):
            found.append((proc, title))
    return found


def test_twenty_worker_kills_lose_and_duplicate_no_group(tiny_model_dir, tmp_path):
    # At most; the chaos thread stops the run after its last kill, however slow kills and restarts are.
    steps, prompts = 400, 2
    cfg = resolve_paths(load_config("configs/r1_zero.yaml", [
        f"model.path={tiny_model_dir}", f"output_dir={tmp_path / 'run'}", f"num_steps={steps}",
        f"prompts_per_step={prompts}", "rollout.group_size=4", "rollout.max_new_tokens=8", "rollout.num_workers=2",
        "reward.num_workers=2", "learner.num_ranks=1", "learner.micro_batch_size=4", "cluster.max_restarts=20",
        "eval_before=false", "eval_after=false", "checkpoint_every=0", "data.num_eval=4",
        "cluster.include_dashboard=false",
    ]))
    connect(cfg)
    killed: list[str] = []
    training = threading.Event()

    def chaos():
        pick = random.Random(0)
        while len(killed) < KILLS and training.is_set():
            time.sleep(pick.uniform(0.1, 0.6))
            kind = VICTIMS[len(killed) % 2]  # rollout and reward workers in turn
            victims = busy_worker_processes(kind)
            while not victims and training.is_set():  # calls are short: a slow poll missed most of them
                time.sleep(0.01)
                victims = busy_worker_processes(kind)
            if not victims:
                break
            victim, title = pick.choice(victims)
            try:
                victim.kill()
            except psutil.Error:
                continue
            killed.append(title)
        if len(killed) == KILLS:
            os.kill(os.getpid(), signal.SIGTERM)  # GracefulStop in r1_zero.train: stop after this step

    try:
        workers = RayWorkers(cfg)
        training.set()
        killer = threading.Thread(target=chaos, daemon=True)
        killer.start()
        r1_zero.train(cfg, workers)
        finished_with = len(killed)
        training.clear()
        killer.join()
        stats = workers.buffer_stats()
        reruns = dict(workers.calls_rerun)
        workers.shutdown()
    finally:
        ray.shutdown()

    assert finished_with == KILLS, f"the run ended after only {finished_with} kills"
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained_steps = len(lines)
    assert trained_steps < steps, "the run was not stopped after the last kill"
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.json").is_file()
    assert any(k.startswith(VICTIMS[0]) for k in killed) and any(k.startswith(VICTIMS[1]) for k in killed)
    assert sum(reruns.values()) >= KILLS // 2, reruns  # most kills interrupted a call that then ran again
    assert [m["step"] for m in lines] == list(range(1, trained_steps + 1))
    generated = lines[-1]["groups/generated"]
    assert generated == trained_steps * prompts
    # Every group generated was added once and trained once; nothing dropped, held or in flight.
    assert stats["added"] == stats["sampled"] == stats["trained"] == generated
    assert stats["dropped"] == stats["dropped_duplicate"] == stats["in_flight"] == stats["size"] == 0
    # Restarted rollout workers sampled with the newest weights: no group lagged the learner.
    assert all(m["staleness/max"] == 0 for m in lines)
    print(f"\nchaos: {KILLS} kills of busy workers in {trained_steps} steps: {sorted(set(killed))}, "
          f"calls re-run {reruns}")
