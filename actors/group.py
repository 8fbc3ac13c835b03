"""Actor groups for every role: a fixed group in a placement group (learners, reward workers) and an
elastic group that grows with the cluster (rollout workers); calls fan out to all members."""
from __future__ import annotations

import os
import time

import ray
from ray.autoscaler.sdk import request_resources
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rl_system.models import visible_gpu_index
from rl_system.resources import SchedulingError, bundle as resource_bundle


class ActorGroup:
    """`n` actors of `actor_cls`, named `{role}-{i}`, each in its own placement-group bundle.

    strategy "PACK"/"STRICT_PACK" keeps ranks together (learners); "SPREAD" spreads them
    (reward workers). Constructor args are passed to every actor, plus its index.
    """

    def __init__(self, actor_cls, role: str, n: int, *args, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 memory: float = 0.0, resources: dict | None = None, strategy: str = "PACK",
                 max_restarts: int = 0, max_task_retries: int = 0, ready_timeout_s: float = 600.0,
                 shared_placement=None, **kwargs):
        """`shared_placement`: a placement group of `n` bundles made by the caller (shared_bundles), whose
        bundle i actor i shares with another role's; by default the group makes and owns its own."""
        self.role = role
        self.owns_placement = shared_placement is None
        self.placement_group = shared_placement or ready_placement_group(
            [resource_bundle(num_cpus, num_gpus, memory, resources)] * n, role, strategy, ready_timeout_s,
            f"lower {role}.num_workers / num_cpus or add nodes")
        self.actors = [
            actor_cls.options(
                name=f"{role}-{i}", max_restarts=max_restarts, max_task_retries=max_task_retries,
                **actor_options(num_cpus, num_gpus, memory, resources),
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=i),
            ).remote(*args, i, **kwargs)
            for i in range(n)
        ]

    @property
    def names(self) -> list[str]:
        return [f"{self.role}-{i}" for i in range(len(self.actors))]

    def __len__(self) -> int:
        return len(self.actors)

    def member(self, name: str):
        """The actor called `name`, or None."""
        index = member_index(self.role, name)
        return self.actors[index] if index is not None and index < len(self.actors) else None

    def call(self, method: str, *args, **kwargs) -> list[ray.ObjectRef]:
        """Calls `method` on every actor; returns one ref per actor."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        if self.owns_placement:
            remove_placement_group(self.placement_group)
        wait_until_gone(self.names)


def ready_placement_group(bundles: list[dict], name: str, strategy: str, ready_timeout_s: float, fix: str):
    """A placement group of `bundles`, once the cluster has placed it; a SchedulingError naming `fix` otherwise."""
    group = placement_group(bundles, strategy=strategy, name=f"{name}-pg")
    try:
        ray.get(group.ready(), timeout=ready_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        raise SchedulingError(f"{name}: the cluster could not place {len(bundles)} x {bundles[0]} within "
                              f"{ready_timeout_s:.0f} s (cluster.schedule_timeout_s, strategy {strategy}); {fix}") from None
    return group


def shared_bundles(n: int, roles: list[dict], ready_timeout_s: float):
    """cluster.colocate: n bundles, each holding one actor of every role in `roles` (their role_resources
    summed: on GPUs, fractions of one device); actor i of each role goes to bundle i."""
    merged: dict[str, float] = {}
    for role in roles:
        for key, value in resource_bundle(**role).items():
            merged[key] = merged.get(key, 0.0) + value
    return ready_placement_group([merged] * n, "colocated", "PACK", ready_timeout_s,
                                 "lower learner.num_ranks or the roles' num_cpus / num_gpus, or add nodes")


class ElasticActorGroup:
    """Actors of one role whose number changes during a run, between steps.

    Each actor is scheduled on its own with Ray's SPREAD strategy (no placement group, so one can
    come or go alone). A started actor waits in Ray's queue until some node has its resources
    (with `request_nodes`, the autoscaler is asked for them), and joins the group only once its
    constructor has run. Retiring ends the newest actors first; nodes they leave idle are then
    removed by the autoscaler.
    """

    def __init__(self, actor_cls, role: str, n: int, *args, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 memory: float = 0.0, resources: dict | None = None, request_nodes: bool = False,
                 max_restarts: int = 0, ready_timeout_s: float = 600.0, shared_placement=None, **kwargs):
        """`shared_placement` (cluster.colocate, a fixed size): actor i goes to its bundle i, not anywhere."""
        self.actor_cls, self.role, self.args, self.kwargs = actor_cls, role, args, kwargs
        self.shared_placement = shared_placement
        self.options = {**actor_options(num_cpus, num_gpus, memory, resources), "max_restarts": max_restarts}
        self.bundle = resource_bundle(num_cpus, num_gpus, memory, resources)
        self.request_nodes = request_nodes
        self.members: dict[int, ray.actor.ActorHandle] = {}  # index -> ready actor
        self.pending: dict[int, tuple[ray.actor.ActorHandle, ray.ObjectRef]] = {}  # index -> (actor, ready ref)
        self.resize(n)
        try:
            ray.get([ready for _, ready in self.pending.values()], timeout=ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.kill()
            raise SchedulingError(f"{role}: the cluster could not place {n} x {self.bundle} within "
                                  f"{ready_timeout_s:.0f} s (cluster.schedule_timeout_s); lower {role}.num_workers / "
                                  f"resources or add nodes") from None
        self.admit_ready()

    @property
    def actors(self) -> list:
        return [self.members[i] for i in sorted(self.members)]

    @property
    def names(self) -> list[str]:
        return [f"{self.role}-{i}" for i in sorted(self.members)]

    @property
    def size(self) -> int:
        """Ready and starting actors: what the group is heading for."""
        return len(self.members) + len(self.pending)

    def __len__(self) -> int:
        return len(self.members)

    def member(self, name: str):
        """The ready actor called `name`, or None (retired, or never there)."""
        index = member_index(self.role, name)
        return None if index is None else self.members.get(index)

    def call(self, method: str, *args, **kwargs) -> list[ray.ObjectRef]:
        """Calls `method` on every ready actor; returns one ref per actor."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def resize(self, target: int) -> None:
        """Starts or retires actors until `target` are ready or starting."""
        if self.request_nodes:  # a floor for the autoscaler, kept until the next call replaces it
            request_resources(bundles=[self.bundle] * target)
        while self.size < target:
            index = next(i for i in range(self.size + 1) if i not in self.members and i not in self.pending)
            where = "SPREAD" if self.shared_placement is None else PlacementGroupSchedulingStrategy(
                self.shared_placement, placement_group_bundle_index=index)
            actor = self.actor_cls.options(name=f"{self.role}-{index}", scheduling_strategy=where,
                                           **self.options).remote(*self.args, index, **self.kwargs)
            self.pending[index] = (actor, actor.__ray_ready__.remote())
        while self.size > target:  # the not-yet-ready first, then the newest ready
            index = max(self.pending) if self.pending else max(self.members)
            actor = self.pending.pop(index)[0] if index in self.pending else self.members.pop(index)
            ray.kill(actor)
            wait_until_gone([f"{self.role}-{index}"])

    def admit_ready(self, prepare=None) -> list[str]:
        """Moves started actors whose constructor has run into the group. `prepare(actor)` returns a
        ref to wait on first (e.g. loading the current weights). Returns the names admitted."""
        if not self.pending:
            return []
        refs = [ready for _, ready in self.pending.values()]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
        ready = [i for i, (_, ref) in self.pending.items() if ref in done]
        ray.get([self.pending[i][1] for i in ready])  # raises if a constructor failed
        if prepare is not None:
            ray.get([prepare(self.pending[i][0]) for i in ready])
        for i in ready:
            self.members[i] = self.pending.pop(i)[0]
        return [f"{self.role}-{i}" for i in ready]

    def kill(self) -> None:
        names = [f"{self.role}-{i}" for i in [*self.members, *self.pending]]
        for actor in [*self.members.values(), *(a for a, _ in self.pending.values())]:
            ray.kill(actor)
        self.members, self.pending = {}, {}
        if self.request_nodes:
            request_resources(bundles=[])  # drop the floor: idle nodes may go
        wait_until_gone(names)


def member_index(role: str, name: str) -> int | None:
    """i for an actor named `{role}-{i}`, as both groups name theirs; O(1), as calls go out per chunk."""
    prefix, _, index = name.rpartition("-")
    return int(index) if prefix == role and index.isdigit() else None


def actor_options(num_cpus: float, num_gpus: float, memory: float, resources: dict | None) -> dict:
    return {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": int(memory) or None,
            "resources": dict(resources or {})}


def role_resources(section) -> dict:
    """The resource keyword arguments of a group from a role's config section."""
    return {"num_cpus": section.num_cpus, "num_gpus": getattr(section, "num_gpus", 0.0), "memory": section.memory,
            "resources": dict(section.resources)}


def assigned_gpu_index() -> int:
    """Inside an actor: the index of the GPU Ray assigned it among those it can see (0 without one)."""
    return visible_gpu_index(ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))


def wait_until_alive(actor, timeout_s: float = 300.0) -> None:
    """Returns once `actor` answers. Ray refuses calls to a restarting actor (ActorUnavailableError)
    until its constructor has run again; a dead one for good raises ActorDiedError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=max(0.1, deadline - time.monotonic()))
            return
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_until_gone(names: list[str], timeout_s: float = 30.0) -> None:
    """Blocks until killed named actors are released, so a next stage can reuse the names."""
    deadline = time.monotonic() + timeout_s
    for name in names:
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name)
            except ValueError:
                break
            time.sleep(0.05)
