"""Will a run's actors fit on the cluster? A pure check made before any actor is created.

Each command asks for groups of resource bundles (a role's actors); `plan` packs them onto the
nodes as Ray would (first fit, placement-group strategies respected) three times: on what is free
now, on everything the cluster has, and on that plus the nodes its autoscaler may add. A run that
can never fit stops with one line naming the shortfall and the fix; one that fits only after
scaling (or once other work ends) waits, bounded by cluster.schedule_timeout_s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from rl_system.config import SFTConfig, TrainConfig

# Ray resources a bundle never asks for; node:<ip> and the like are dropped as well.
IGNORED = ("object_store_memory",)


class SchedulingError(RuntimeError):
    """The cluster cannot (or did not in time) give a role its resources; one line with the fix."""


@dataclass(frozen=True)
class Demand:
    """`count` actors of one role, each needing `bundle`; `keys` are the config keys that size it."""
    role: str
    bundle: dict
    count: int
    strategy: str = "SPREAD"  # a placement group's strategy; SPREAD for actors placed one by one
    keys: str = ""  # e.g. "rollout" -> rollout.num_workers / rollout.num_cpus ...


@dataclass(frozen=True)
class NodeType:
    """A node kind the autoscaler may start, at most `max_count` of them (-1: no limit)."""
    name: str
    resources: dict
    max_count: int


@dataclass(frozen=True)
class Verdict:
    fits_now: bool
    fits_eventually: bool
    message: str  # why not now (or never), with the fix; "" when it fits now


def bundle(num_cpus: float, num_gpus: float = 0.0, memory: float = 0.0, resources: dict | None = None) -> dict:
    """What one actor reserves, as Ray's placement groups and autoscaler requests spell it."""
    out = {"CPU": float(num_cpus), **{k: float(v) for k, v in (resources or {}).items()}}
    if num_gpus:
        out["GPU"] = float(num_gpus)
    if memory:
        out["memory"] = float(int(memory))
    return out


def _role(section, role: str, count: int, strategy: str = "SPREAD") -> Demand:
    return Demand(role, bundle(section.num_cpus, getattr(section, "num_gpus", 0.0), section.memory,
                               section.resources), count, strategy, role)


def sampling_demands(cfg: TrainConfig) -> list[Demand]:
    """Rollout workers, rule reward workers and learned-reward replicas (every Ray command has them)."""
    demands = [_role(cfg.rollout, "rollout", cfg.rollout.num_workers),
               _role(cfg.reward, "reward", cfg.reward.num_workers)]
    for i, m in enumerate(cfg.reward.models):
        demands.append(Demand(f"reward-model-{m.name}", bundle(m.num_cpus, m.num_gpus), m.replicas, "SPREAD",
                              f"reward.models[{i}]"))
    if cfg.env.name and cfg.env.num_workers and cfg.env.num_cpus:  # environment workers beside each rollout worker
        demands.append(Demand("env", bundle(cfg.env.num_cpus), cfg.rollout.num_workers * cfg.env.num_workers,
                              "SPREAD", "env"))
    return demands


def train_demands(cfg: TrainConfig) -> list[Demand]:
    learner = _role(cfg.learner, "learner", cfg.learner.num_ranks, cfg.learner.placement_strategy)
    return [learner, *sampling_demands(cfg)]


def search_demands(cfg: TrainConfig) -> list[Demand]:
    s = cfg.search
    pools = [Demand(f"search-{kind}", bundle(s.reward_model_num_cpus), s.reward_model_replicas, "SPREAD",
                    "search.reward_model") for kind in s.reward_models()]
    return [*sampling_demands(cfg), *pools]


def sft_demands(cfg: SFTConfig, prefix: str = "") -> list[Demand]:
    """Ray Train's workers (its controller actor takes no CPU); `prefix` "sft." inside star / pipeline."""
    return [Demand("sft", bundle(cfg.num_cpus_per_worker, 1.0 if cfg.use_gpu else 0.0), cfg.num_workers, "PACK",
                   prefix + SFT_KEYS)]


def command_stages(command: str, cfg) -> list[list[Demand]]:
    """What each stage of a command runs at once; stages run one after another."""
    if command in ("sft", "distill"):
        return [sft_demands(cfg)]
    if command == "train":
        return [train_demands(cfg)]
    if command == "evaluate":
        return [search_demands(cfg)]
    if command == "star":
        return [sampling_demands(cfg), sft_demands(cfg.sft, "sft.")]
    if command == "pipeline":
        return [sft_demands(cfg.sft, "sft."), train_demands(cfg)]
    return [sampling_demands(cfg)]  # collect-samples, rejection-sample


def local_num_cpus(cfg, cores: int) -> int:
    """The logical CPUs of the local Ray a command starts when it joins no cluster: at least this
    machine's `cores`, and enough for every actor at once (cluster.num_cpus, when set, is taken as is)."""
    if isinstance(cfg, SFTConfig):  # Ray Train's workers, and one CPU for its controller
        return max(cores, int(cfg.num_workers * cfg.num_cpus_per_worker) + 1)
    most_rollouts = cfg.rollout.worker_bounds()[1]
    needed = (cfg.learner.num_ranks * cfg.learner.num_cpus + most_rollouts * cfg.rollout.num_cpus
              + cfg.reward.num_workers * cfg.reward.num_cpus + sum(m.replicas * m.num_cpus for m in cfg.reward.models)
              + (most_rollouts * cfg.env.num_workers * cfg.env.num_cpus if cfg.env.name else 0))
    return cfg.cluster.num_cpus or max(math.ceil(needed), cores)


def demand_lines(demands: list[Demand]) -> list[str]:
    """One line per role: how many actors, what each reserves, how they are placed."""
    return [f"{d.role}: {d.count} x {_bundle_text(d.bundle)}, placed {d.strategy}" for d in demands if d.count]


def plan(demands: list[Demand], free: list[dict], total: list[dict], node_types: list[NodeType],
         autoscaler: str = "none") -> Verdict:
    """`free` / `total`: each live node's free and total resources. `node_types`: what the
    autoscaler can add. `autoscaler`: "none" (a fixed cluster), "known" (its node types are
    `node_types`) or "unknown" (Ray's v1 autoscaler, whose node types the driver cannot read)."""
    if _place(demands, free) is None:
        return Verdict(True, True, "")
    extra = _possible_nodes(node_types, sum(d.count for d in demands))
    blocked = _place(demands, [*total, *extra])
    waiting = f"waiting for resources: this run asks for {_asked_text(demands)}; "
    if blocked is None and _place(demands, total) is None:
        return Verdict(False, True, waiting + "other actors or jobs hold part of the cluster now")
    if blocked is None:
        return Verdict(False, True, waiting + "the autoscaler has to add nodes ("
                       + ", ".join(t.name for t in node_types) + ")")
    if autoscaler == "unknown":
        return Verdict(False, True, waiting + "the cluster has too little now, and its autoscaler may add nodes")
    return Verdict(False, False, _never_message(demands, blocked, [*total, *extra], autoscaler == "known",
                                                len(total)))


def request_bundles(demands: list[Demand]) -> list[dict]:
    """The demands as autoscaler requests: a STRICT_PACK group as one bundle, so the autoscaler
    starts a node that holds all of it, as placement needs."""
    bundles = []
    for d in demands:
        bundles += [_times(d.bundle, d.count)] if d.strategy == "STRICT_PACK" else [dict(d.bundle)] * d.count
    return bundles


def _place(demands: list[Demand], nodes: list[dict]) -> Demand | None:
    """Packs every demand's bundles first fit; returns the first demand that does not fit, or None."""
    left = [dict(n) for n in nodes]
    for d in demands:
        if d.strategy == "STRICT_PACK":  # the whole group on one node
            whole = _times(d.bundle, d.count)
            i = _first_fit(left, whole)
            if i is None:
                return d
            _take(left[i], whole)
            continue
        used: set[int] = set()
        for _ in range(d.count):
            i = _first_fit(left, d.bundle, exclude=used if d.strategy == "STRICT_SPREAD" else set())
            if i is None:
                return d
            _take(left[i], d.bundle)
            used.add(i)
    return None


def _first_fit(nodes: list[dict], need: dict, exclude: set[int] = frozenset()) -> int | None:
    eps = 1e-9
    for i, node in enumerate(nodes):
        if i not in exclude and all(node.get(k, 0.0) + eps >= v for k, v in need.items() if v > 0):
            return i
    return None


def _take(node: dict, need: dict) -> None:
    for k, v in need.items():
        node[k] = node.get(k, 0.0) - v


def _times(b: dict, n: int) -> dict:
    return {k: v * n for k, v in b.items()}


def _possible_nodes(node_types: list[NodeType], most: int) -> list[dict]:
    """The nodes the autoscaler could add; an unlimited type counts as enough for every bundle."""
    nodes = []
    for t in node_types:
        nodes += [dict(t.resources)] * (most if t.max_count < 0 else min(t.max_count, most))
    return nodes


def _number(x: float) -> str:
    return f"{x:g}" if x < 1e6 else f"{x / 2**30:.1f} GiB"


def _bundle_text(b: dict) -> str:
    return "{" + ", ".join(f"{k}: {_number(v)}" for k, v in b.items() if v) + "}"


def _asked_text(demands: list[Demand]) -> str:
    return ", ".join(f"{d.role} {d.count} x {_bundle_text(d.bundle)}" for d in demands if d.count)


def _never_message(demands: list[Demand], blocked: Demand, nodes: list[dict], autoscaler: bool,
                   live_nodes: int) -> str:
    where = "the cluster and what its autoscaler can add" if autoscaler else "the cluster (no autoscaler to add nodes)"
    asked = {}
    for d in demands:
        for k, v in d.bundle.items():
            asked[k] = asked.get(k, 0.0) + v * d.count
    has = {k: sum(n.get(k, 0.0) for n in nodes) for k in asked}
    short = [k for k in asked if asked[k] > has[k] + 1e-9]
    if not short:  # enough in all, but not on the nodes the strategy allows
        largest = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in blocked.bundle}
        fix = (f"set {blocked.keys}.placement_strategy=PACK" if blocked.strategy.startswith("STRICT")
               else f"ask less per actor ({blocked.keys}.num_cpus / num_gpus / memory)")
        return (f"this run can never be scheduled: {blocked.role} needs {blocked.count} x "
                f"{_bundle_text(blocked.bundle)} placed {blocked.strategy}, and no node of {where} is large "
                f"enough (largest: {_bundle_text(largest)}); use bigger nodes, or {fix}")
    k = short[0]
    users = [d for d in demands if d.bundle.get(k, 0.0) > 0 and d.count]
    parts = ", ".join(f"{d.role} {d.count} x {_number(d.bundle[k])}" for d in users)
    keys = " / ".join(_resource_key(d, k) for d in users)
    if k == "CPU" and live_nodes == 1 and not autoscaler:
        fix = f"start the head with `ray start --head --num-cpus {math.ceil(asked[k])}` (logical CPUs), or lower {keys}"
    elif k == "CPU":
        fix = f"add nodes (or raise the autoscaler's max_workers), or lower {keys}"
    elif k == "GPU":
        fix = f"add GPU nodes (or an autoscaler node type with GPUs), or lower {keys}"
    elif k == "memory":
        fix = f"lower {keys}, or add nodes with more memory"
    else:
        fix = (f"start nodes with `ray start --resources='{{\"{k}\": {math.ceil(asked[k])}}}'` (or an autoscaler "
               f"node type with it), or drop '{k}' from {keys}")
    return (f"this run can never be scheduled: it asks for {k} {_number(asked[k])} ({parts}), {where} "
            f"{'has' if has[k] else 'has no'} {k}{' ' + _number(has[k]) if has[k] else ''}; {fix}")


SFT_KEYS = "<sft>"  # a Ray Train worker's keys differ from an actor role's


def _resource_key(d: Demand, k: str) -> str:
    if d.keys.endswith(SFT_KEYS):
        prefix = d.keys.removesuffix(SFT_KEYS)
        return prefix + {"CPU": "num_cpus_per_worker", "GPU": "use_gpu"}.get(k, "num_workers")
    if d.keys == "search.reward_model":
        return "search.reward_model_num_cpus"
    field_ = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}.get(k, f"resources.{k}")
    return f"{d.keys}.{field_}"
