"""For tests of what a command does before its run: ray.init raises StartedRay instead of starting Ray."""
import pytest


class StartedRay(Exception):
    """Raised in place of ray.init: the command got past every check made before the run."""


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def refuse(*args, **kwargs):
        raise StartedRay("the command got as far as ray.init(): nothing before the run stopped it")

    monkeypatch.setattr(ray, "init", refuse)
