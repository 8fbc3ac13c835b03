"""One helper for every role: a placement group, one actor per bundle, calls fanned out to all."""
from __future__ import annotations

import time

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy


class ActorGroup:
    """`n` actors of `actor_cls`, named `{role}-{i}`, each in its own placement-group bundle.

    strategy "PACK"/"STRICT_PACK" keeps ranks together (learners); "SPREAD" spreads them
    (rollout workers). Constructor args are passed to every actor, plus its index.
    """

    def __init__(self, actor_cls, role: str, n: int, *args, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 strategy: str = "PACK", ready_timeout_s: float = 600.0, **kwargs):
        self.role = role
        bundle = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {})}
        self.placement_group = placement_group([bundle] * n, strategy=strategy, name=f"{role}-pg")
        try:
            ray.get(self.placement_group.ready(), timeout=ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"{role}: the cluster could not place {n} x {bundle} within {ready_timeout_s:.0f} s "
                               f"(strategy {strategy}); lower {role}.num_workers / num_cpus or add nodes") from None
        self.actors = [
            actor_cls.options(
                name=f"{role}-{i}", num_cpus=num_cpus, num_gpus=num_gpus,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=i),
            ).remote(*args, i, **kwargs)
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.actors)

    def call(self, method: str, *args, **kwargs) -> list[ray.ObjectRef]:
        """Calls `method` on every actor; returns one ref per actor."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def kill(self) -> None:
        for actor in self.actors:
            ray.kill(actor)
        remove_placement_group(self.placement_group)
        wait_until_gone([f"{self.role}-{i}" for i in range(len(self.actors))])


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
