"""The Ray side of the driver: starts (or joins) Ray, creates every worker group, and implements
the Workers protocol of rl_system/pipeline with ObjectRefs as the handles."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.util.placement_group import remove_placement_group

from actors.generation_queue import GenerationQueue
from actors.group import (
    ActorGroup, ElasticActorGroup, role_resources, shared_bundles, wait_until_alive, wait_until_gone,
)
from actors.learner import LearnerRank
from actors.metrics import RunMetrics
from actors.replay_buffer import ReplayBuffer
from actors.reward import ModelRewardPool, RuleRewardWorker
from actors.rollout import WEIGHT_STORE, RolloutWorker, WeightStore
from rl_system.checkpoints import TRAINING_STATE_DIR, load_rollout_rng, save_rollout_rng
from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.elastic import RolloutScaler
from rl_system.models import announce, publish_dtype
from rl_system.resources import local_num_cpus
from rl_system.training import merge_stats, shard_bounds
from rl_system.weights import WeightSyncError


@dataclass
class ActorCall:
    """One submitted actor call, kept until it finished so that it can run again if its actor dies."""
    name: str  # the actor's name
    method: str
    args: tuple
    num_returns: int
    groups: list  # the refs of its results
    receipt: ray.ObjectRef  # its last return, small: fetched to learn how the call ended
    submitted: float
    attempt: int


def connect(cfg: TrainConfig) -> None:
    """A fresh local Ray (dashboard on 127.0.0.1) or an existing cluster (`cluster.address=auto`, or
    the cluster a `ray job submit` runs us on)."""
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))}}
    address = cfg.cluster.address or os.environ.get("RAY_ADDRESS", "")  # `ray job submit` sets RAY_ADDRESS
    if address:
        ray.init(address=address, namespace=cfg.cluster.namespace)  # the job's runtime env applies
        return
    ray.init(num_cpus=local_num_cpus(cfg, os.cpu_count() or 1),
             include_dashboard=cfg.cluster.include_dashboard, dashboard_host=cfg.cluster.dashboard_host,
             namespace=cfg.cluster.namespace, runtime_env=env,
             _metrics_export_port=cfg.cluster.metrics_export_port or None)


def chunk_size(remaining: int, problems: int, workers: int, samples_per_problem: int, rc, depth: int) -> int:
    """Problems in the next generate call of a request for `problems` problems, `remaining` of them
    not yet handed out: rollout.chunk_prompts if set. Otherwise, when an equal share per worker fits
    one generation batch (rollout.max_batch_sequences), that share: one batched call per worker. A
    larger request goes in guided chunks, the remaining problems over the queue's slots (depth x
    workers) and at most one generation batch, so the chunks shrink toward the end of the request
    and the last calls of a step are short (guided self-scheduling)."""
    if rc.chunk_prompts:
        return rc.chunk_prompts
    batch = max(1, rc.max_batch_sequences // samples_per_problem)
    share = -(-problems // max(1, workers))
    return share if share <= batch else min(batch, -(-remaining // (depth * max(1, workers))))


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Absolute paths, since actors do not share the driver's working directory."""
    def absolute(path: str) -> str:
        return str(Path(path).resolve()) if Path(path).exists() else path

    models = tuple(dataclasses.replace(m, path=absolute(m.path)) for m in cfg.reward.models)
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, path=absolute(cfg.model.path)),
        reward=dataclasses.replace(cfg.reward, models=models),
        collect=dataclasses.replace(cfg.collect, output_dir=str(Path(cfg.collect.output_dir).resolve())),
        output_dir=str(Path(cfg.output_dir).resolve()))


class RayWorkers:
    """Every worker group of a run. `with_learner=False` starts only rollout and reward workers
    (sample collection, evaluation). `rollout_cls(cfg, *rollout_args, index)` replaces the rollout
    actor (benchmarks/rollout_scaling.py simulates generation with it)."""

    def __init__(self, cfg: TrainConfig, with_learner: bool = True, rollout_cls=RolloutWorker,
                 rollout_args: tuple = ()):
        self.cfg = cfg
        rc, lc, wc = cfg.rollout, cfg.learner, cfg.reward
        timeout = cfg.cluster.schedule_timeout_s
        self.learners = None
        # cluster.colocate: rollout worker i and learner rank i share bundle i, taking turns (train, sync_weights)
        self.colocated = with_learner and cfg.cluster.colocate
        self.shared_placement = shared_bundles(lc.num_ranks, [role_resources(lc), role_resources(rc)],
                                               timeout) if self.colocated else None
        if with_learner:
            self.learners = ActorGroup(LearnerRank, "learner", lc.num_ranks, cfg, lc.num_ranks,
                                       **role_resources(lc), strategy=lc.placement_strategy, ready_timeout_s=timeout,
                                       shared_placement=self.shared_placement)
        self.metrics = RunMetrics()
        self.scaler = RolloutScaler.from_config(rc)
        self.weight_store = WeightStore.options(name=WEIGHT_STORE).remote()
        restarts = cfg.cluster.max_restarts
        self.rollouts = ElasticActorGroup(rollout_cls, "rollout", rc.num_workers, cfg, *rollout_args, **role_resources(rc),
                                          request_nodes=self.scaler.elastic, max_restarts=restarts,
                                          ready_timeout_s=timeout, shared_placement=self.shared_placement)
        self.rewards = ActorGroup(RuleRewardWorker, "reward", wc.num_workers, cfg, **role_resources(wc),
                                  strategy="SPREAD", max_restarts=restarts, ready_timeout_s=timeout)
        self.reward_models = [ModelRewardPool(m, f"reward.models[{i}].dtype", max_restarts=restarts)
                              for i, m in enumerate(wc.models)]
        self.buffer = ReplayBuffer.options(name="replay-buffer").remote(cfg.buffer_capacity, cfg.max_staleness)
        for pool in self.reward_models:
            pool.health()  # every replica loaded its model
        self.precision_reports = self._precision_reports()
        if self.learners:
            addr, port = ray.get(self.learners.actors[0].master_address.remote())
            ray.get(self.learners.call("setup", addr, port, publish_dtype(self.precision_reports)))  # collective
        self.broadcast = with_learner and cfg.weight_sync.method == "broadcast"
        if self.broadcast:
            self._open_weight_broadcast()
        self.phase_memory: dict[str, float] = {}  # cluster.colocate: the rollout copies' GiB in each phase
        self._next_reward = 0
        self._generating: dict[ray.ObjectRef, ActorCall] = {}  # group ref -> its unfinished generate call
        self._scoring: dict[ray.ObjectRef, tuple[ActorCall, int]] = {}  # group ref -> (its score call, index)
        # The queue's lock guards _generating, _scoring and the reward pools, which its thread uses too.
        self.queue = GenerationQueue(self._submit_generate, lambda: self.rollouts.names)
        self.calls_rerun: Counter = Counter()  # by method: calls run again after their actor died
        self._loads: tuple[int, list] | None = None  # (version, [(worker, its load ref)]) not yet checked

    def _open_weight_broadcast(self) -> None:
        """Learner rank 0 and every rollout worker join one sync group (weight_broadcast.py), all at once."""
        host, port = ray.get(self.learners.actors[0].master_address.remote())
        world_size = 1 + len(self.rollouts.actors)
        joins = self.learners.call("open_weight_broadcast", host, port, world_size) + [
            worker.join_weight_broadcast.remote(host, port, 1 + i, world_size)
            for i, worker in enumerate(self.rollouts.actors)]
        ray.get(joins, timeout=self.cfg.sync_timeout_s + 30)  # each join has the deadline itself

    def _precision_reports(self) -> list[dict]:
        """What every actor resolved its dtype keys to on its own node (rl_system/models/precision.py);
        said once in one line, and each distinct warning once."""
        groups = [g for g in (self.learners, self.rollouts) if g] + [pool.replicas for pool in self.reward_models]
        reports = [r for group in groups for r in ray.get(group.call("precision"))]
        announce(reports, log=lambda line: print(line, flush=True))
        self.metrics.precision_reports = reports
        return reports

    def precision(self) -> list[dict]:
        return self.precision_reports

    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None,
                 n: int | None = None, prefills: list[str] | None = None,
                 stop_strings: tuple[str, ...] | None = None, score: bool = False) -> list:
        """One handle per problem, in the order given; `wait` (or `score`, `fetch`) finishes them. The
        problems go in chunks (chunk_size) to whichever rollout worker is free (GenerationQueue).
        `stop_strings` overrides rollout.stop_strings. With `score`, each call's groups go to the
        reward workers as soon as the call ends, and `score` collects them."""
        samples, rc = n or self.cfg.rollout.group_size, self.cfg.rollout

        def args(part: slice) -> tuple:
            return problems[part], greedy, max_new_tokens, n, prefills[part] if prefills else None, stop_strings

        def chunk(remaining: int, workers: int) -> int:
            return chunk_size(remaining, len(problems), workers, samples, rc, self.queue.depth)

        return self.queue.put(args, len(problems), chunk, self._score_generated if score else self._generated)

    def _submit_generate(self, name: str, args: tuple, count: int) -> ActorCall:
        """GenerationQueue's way to start a chunk on worker `name` (under its lock)."""
        call = self._submit(self.rollouts, name, "generate", args, num_returns=count + 1)
        for ref in call.groups:
            self._generating[ref] = call
        return call

    def _generated(self, call: ActorCall) -> None:
        """GenerationQueue's on_done (its thread, under its lock): the call's latency, as it ends."""
        self.metrics.actor_call(call.name, call.method, time.monotonic() - call.submitted)

    def _score_generated(self, call: ActorCall) -> None:
        """As _generated, and a call that ended well has its groups scored at once, while the rest of
        the batch still generates. A failed call's groups are scored by `score`, after `wait` re-ran it."""
        self._generated(call)
        try:
            ray.get(call.receipt)
        except ray.exceptions.RayError:
            return
        scoring = self._submit_scoring(call.groups)
        for i, ref in enumerate(call.groups):
            self._scoring[ref] = (scoring, i)

    def wait(self, handles: list) -> list:
        """Finishes the generate calls behind `handles`. A call whose rollout worker died runs again
        (on the restarted worker, which has caught up with the newest weights); returns the
        handles, as refs, with such calls' new refs in place."""
        handles = self.queue.resolve(handles)
        with self.queue.lock:
            calls = list({id(c): c for h in handles if isinstance(h, ray.ObjectRef)
                          and (c := self._generating.get(h)) is not None}.values())
        self.queue.wait_ended([c.receipt for c in calls])
        finished = self._finish(calls, self.rollouts, timed=False)  # _generated timed them as they ended
        replaced = {}
        with self.queue.lock:
            for old, new in zip(calls, finished):
                for ref in old.groups:
                    del self._generating[ref]
                replaced.update(zip(old.groups, new.groups))
        return [replaced.get(h, h) if isinstance(h, ray.ObjectRef) else h for h in handles]

    def score(self, rollouts: list) -> tuple[list, list[dict]]:
        """Rule and learned rewards run at the same time; each group travels rollout worker ->
        object store -> reward workers, and the rule worker merges the learned scores. Groups
        generated with `score=True` are already being scored; the others go out now, in one call
        per rule reward worker."""
        rollouts = self.wait(rollouts)
        with self.queue.lock:
            placed = [self._scoring.pop(r, None) if isinstance(r, ray.ObjectRef) else None for r in rollouts]
            rest = [i for i, p in enumerate(placed) if p is None]
            size = max(1, -(-len(rest) // len(self.rewards)))
            for start in range(0, len(rest), size):
                part = rest[start:start + size]
                scoring = self._submit_scoring([rollouts[i] for i in part])
                for j, i in enumerate(part):
                    placed[i] = (scoring, j)
        calls = list({id(c): c for c, _ in placed}.values())
        finished = {id(old): new for old, new in zip(calls, self._finish(calls, self.rewards))}
        summaries = dict(zip(finished, ray.get([c.receipt for c in finished.values()])))
        return ([finished[id(c)].groups[j] for c, j in placed], [summaries[id(c)][j] for c, j in placed])

    def _submit_scoring(self, groups: list) -> ActorCall:
        """One rule reward call for `groups` (refs or groups), with the learned rewards' refs for each;
        the next rule worker in turn takes it. Returns (*scored groups, their summaries)."""
        learned = [pool.score(groups) for pool in self.reward_models]
        name = self.rewards.names[self._next_reward % len(self.rewards)]
        self._next_reward += 1
        args = ([[refs[i] for refs in learned] for i in range(len(groups))], *groups)
        return self._submit(self.rewards, name, "score", args, len(groups) + 1)

    def _submit(self, group, name: str, method: str, args: tuple, num_returns: int, attempt: int = 0) -> ActorCall:
        """Calls `method` on the member called `name` (or, once that one is retired, another member);
        its last return is the receipt."""
        actor = group.member(name) or group.actors[attempt % len(group)]
        if attempt:
            wait_until_alive(actor)  # a rerun waits for the restart
        out = list(getattr(actor, method).options(num_returns=num_returns).remote(*args))
        return ActorCall(name, method, args, num_returns, out[:-1], out[-1], time.monotonic(), attempt)

    def _finish(self, calls: list[ActorCall], group, timed: bool = True) -> list[ActorCall]:
        """Waits for every call's receipt, recording each call's latency in `rl_actor_call_seconds`
        (with `timed`; a re-run always). A call whose actor died runs again, up to
        cluster.max_restarts times; returns the calls that finished, in the order given."""
        finished = list(calls)
        pending = {c.receipt: i for i, c in enumerate(calls)}
        while pending:
            ray.wait(list(pending), num_returns=1, fetch_local=False)
            ended, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0, fetch_local=False)
            for receipt in ended:  # all that ended by now, not one per wait: O(calls) waits, not O(calls^2)
                i = pending.pop(receipt)
                call = finished[i]
                try:
                    ray.get(receipt)
                except ray.exceptions.RayActorError:
                    if call.attempt >= self.cfg.cluster.max_restarts:
                        raise
                    self.calls_rerun[call.method] += 1
                    finished[i] = self._submit(group, call.name, call.method, call.args, call.num_returns,
                                               call.attempt + 1)
                    pending[finished[i].receipt] = i
                    continue
                if timed or call.attempt:
                    self.metrics.actor_call(call.name, call.method, time.monotonic() - call.submitted)
        return finished

    def buffer_add(self, keys: list[int], scored: list, summaries: list[dict]) -> None:
        ray.get([self.buffer.add.remote(key, summary["policy_version"], [ref])
                 for key, ref, summary in zip(keys, scored, summaries)])

    def buffer_sample(self, n: int, learner_version: int) -> tuple[list, list[int]]:
        """A leased batch, [(key, [group ref])], and each group's lag in versions."""
        return ray.get(self.buffer.sample.remote(n, learner_version))

    def train(self, batch: list) -> dict:
        """One update on the leased batch: each rank gets the refs of its share of the groups only
        (shard_bounds) and fetches just those; with learner.max_tokens_per_micro_batch every rank
        gets them all and keeps its token-balanced share (Learner.shard). Acknowledged when every
        rank is done, released on failure."""
        keys, groups = [key for key, _ in batch], [ref for _, [ref] in batch]
        if self.colocated:  # generation is done: its memory goes to the learner until sync_weights
            held = ray.get(self.rollouts.call("release"))
            self.phase_memory.update({"memory/rollout_generate_gib": max(h["generate"] for h in held) / 2**30,
                                      "memory/rollout_released_gib": max(h["released"] for h in held) / 2**30})
        ranks = self.learners.actors
        start = time.monotonic()
        whole_batch = self.cfg.learner.max_tokens_per_micro_batch > 0
        refs = [rank.train.remote(groups if whole_batch else groups[slice(*shard_bounds(len(groups), i, len(ranks)))])
                for i, rank in enumerate(ranks)]
        try:
            per_rank = ray.get(refs)
            for name in self.learners.names:
                self.metrics.actor_call(name, "train", time.monotonic() - start)
        except BaseException:
            ray.get(self.buffer.release.remote(keys))
            raise
        ray.get(self.buffer.acknowledge.remote(keys))
        stats: dict = {}
        for rank_stats in per_rank:
            merge_stats(stats, rank_stats)
        stats["grad_norm"] = per_rank[0]["grad_norm"]  # a global quantity, the same on every rank
        return stats

    def sync_weights(self, version: int, wait: bool = True) -> None:
        """One publish into the object store, every rollout worker loads it; one deadline for all.

        With `wait=False` (async mode) the loads queue behind each worker's current generate call
        and are checked at the next sync: a worker runs its calls in order, so every batch
        submitted after this call is sampled with `version`."""
        deadline = self.cfg.sync_timeout_s
        start = time.monotonic()
        if self.colocated:  # the learner is done with the device: the generation copies get their memory back
            restored = ray.get(self.rollouts.call("restore"), timeout=deadline)
            self.phase_memory["memory/rollout_restored_gib"] = max(restored) / 2**30
        if self.broadcast:
            self._broadcast_weights(version, max(0.0, deadline - (time.monotonic() - start)))
            return
        try:
            self._check_loads(deadline)
            packed = next(r for r in ray.get(self.learners.call("publish"), timeout=deadline) if r)
            ray.get(self.weight_store.put.remote(version, packed))  # first: a worker restarted from now on loads it
            self._loads = (version, [(actor, actor.load_weights.remote(version, packed)) for actor in self.rollouts.actors])
            if wait:
                self._check_loads(max(0.0, deadline - (time.monotonic() - start)))
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncError(f"weight sync to version {version} exceeded sync_timeout_s={deadline}") from None

    def _broadcast_weights(self, version: int, timeout_s: float) -> None:
        """weight_sync.method=broadcast: learner rank 0 sends, every rollout worker receives and loads;
        both sides hold the deadline themselves (weight_broadcast.py), the wait here is a backstop."""
        sends = self.learners.call("broadcast_weights")
        loads = self.rollouts.call("receive_weights", version)
        try:
            sent = next(r for r in ray.get(sends, timeout=timeout_s + 30) if r)
            loaded = ray.get(loads, timeout=timeout_s + 30)
        except ray.exceptions.GetTimeoutError:
            raise WeightSyncError(f"weight broadcast of version {version} exceeded sync_timeout_s="
                                  f"{self.cfg.sync_timeout_s}") from None
        if loaded != [version] * len(loaded):
            raise WeightSyncError(f"rollout workers hold versions {loaded}, expected {version}")
        self.phase_memory.update({"weight_sync/broadcast_s": sent["seconds"], "weight_sync/buckets": sent["buckets"],
                                  "weight_sync/gib": sent["bytes"] / 2**30})

    def _check_loads(self, timeout_s: float) -> None:
        if self._loads is None:
            return
        version, loads = self._loads
        self._loads = None
        loaded = []
        for actor, ref in loads:
            try:
                loaded.append(ray.get(ref, timeout=timeout_s))
            except ray.exceptions.RayActorError:  # died on the way; restarted, it loads the store's weights
                wait_until_alive(actor, timeout_s)
                loaded.append(ray.get(actor.version.remote(), timeout=timeout_s))
        if loaded != [version] * len(loads):
            raise WeightSyncError(f"rollout workers hold versions {loaded}, expected {version}")

    def step_done(self, step: int, metrics: dict) -> dict:
        """After each training step: rollout workers started earlier that are now up load the current
        weights and join; the pool is resized for the step's share of generation; the step's metrics
        go to Prometheus. Returns the pool size and the calls re-run so far for metrics.jsonl."""
        self.rollouts.admit_ready(self._load_current_weights)
        target = self.scaler.decide(step, metrics, pending=len(self.rollouts.pending))
        if target != self.rollouts.size:
            self._check_loads(self.cfg.sync_timeout_s)  # no load left pending on a worker about to retire
            with self.queue.lock:  # no chunk handed to a worker while it retires
                self.rollouts.resize(target)
        self.metrics.record(step, metrics)
        self.metrics.rollout_pool(len(self.rollouts), target)
        return {"rollout/workers": len(self.rollouts), "rollout/target_workers": target,
                "faults/generate_reruns": self.calls_rerun["generate"], "faults/score_reruns": self.calls_rerun["score"],
                **self.phase_memory}

    def _load_current_weights(self, worker) -> ray.ObjectRef:
        version, packed = ray.get(self.weight_store.latest.remote())
        return worker.load_weights.remote(version, packed) if packed else worker.version.remote()

    def evaluate(self, problems: list[Problem], max_new_tokens: int) -> list[dict]:
        rollouts = self.generate(problems, greedy=True, max_new_tokens=max_new_tokens, score=True)
        return self.score(rollouts)[1]

    def fetch(self, handles: list) -> list:
        return ray.get(self.wait(handles))

    def buffer_stats(self) -> dict:
        return ray.get(self.buffer.stats.remote())

    def save(self, path: str) -> None:
        """The HF model directory, plus what an exact resume needs: DeepSpeed's training state
        (optimizer included) and each rollout worker's sampling RNG."""
        ray.get(self.learners.call("save", path))
        ray.get(self.learners.call("save_training_state", str(Path(path) / TRAINING_STATE_DIR)))
        save_rollout_rng(path, dict(zip(self.rollouts.names, ray.get(self.rollouts.call("rng_state")))))

    def restore(self, path: str, version: int) -> None:
        """Learners load a checkpoint's training state; rollout workers its weights and RNG states."""
        versions = ray.get(self.learners.call("load_training_state", str(Path(path) / TRAINING_STATE_DIR)))
        if versions != [version] * len(versions):
            raise WeightSyncError(f"checkpoint {path}: learner ranks restored versions {versions}, expected {version}")
        self.sync_weights(version)
        rng = load_rollout_rng(path)
        ray.get([actor.set_rng_state.remote(rng[name])
                 for name, actor in zip(self.rollouts.names, self.rollouts.actors) if name in rng])

    def rollout_versions(self) -> list[int]:
        return ray.get(self.rollouts.call("version"))

    def learner_checksum(self) -> float:
        return ray.get(self.learners.call("parameter_checksum"))[0]  # collective under ZeRO-3

    def shutdown(self) -> None:
        self.queue.close()
        ray.get(self.rewards.call("close"))
        for group in [self.learners, self.rollouts, self.rewards, *self.reward_models]:
            if group is not None:
                group.kill()
        if self.shared_placement is not None:
            remove_placement_group(self.shared_placement)
        ray.kill(self.buffer)
        ray.kill(self.weight_store)
        wait_until_gone(["replay-buffer", WEIGHT_STORE])
