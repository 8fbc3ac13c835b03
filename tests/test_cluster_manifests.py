"""The cluster files: launcher YAMLs against Ray's own ray-schema.json, KubeRay manifests through
Ray's own KubeRay config reader, and the Grafana dashboard against the exported metric names."""
import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr
from ray.autoscaler._private.util import fillout_defaults, validate_config

from actors.metrics import PROMETHEUS_NAMES
from rl_system.config import load_config

ROLES = ("rollout", "learner", "reward")
RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
CLUSTER_CONFIG = load_config("configs/r1_zero_cluster.yaml")
KUBERAY = Path("clusters/kuberay")


def role_requests(cfg) -> dict[str, dict]:
    """Per role, the custom resources one actor asks for."""
    return {"rollout": cfg.rollout.resources, "learner": cfg.learner.resources, "reward": cfg.reward.resources}


def check_node_types_serve_roles(node_types: dict, cfg) -> None:
    """Each role's actors fit the node type named after it, which has at least one node, and the
    rollout type can grow to host rollout.max_workers."""
    for role, requested in role_requests(cfg).items():
        assert requested, f"{role} asks for no custom resource: the autoscaler could not tell its node type"
        offered = node_types[role]["resources"]
        assert all(offered.get(name, 0) >= amount for name, amount in requested.items()), (role, offered)
        assert 1 <= node_types[role]["min_workers"] <= node_types[role]["max_workers"]
    per_node = min(node_types["rollout"]["resources"][n] // a for n, a in cfg.rollout.resources.items())
    assert per_node * node_types["rollout"]["max_workers"] >= cfg.rollout.worker_bounds()[1]
    learner_slots = min(node_types["learner"]["resources"][n] // a for n, a in cfg.learner.resources.items())
    assert learner_slots >= cfg.learner.num_ranks  # STRICT_PACK: all ranks on one learner node


@pytest.mark.parametrize("path", ["clusters/aws.yaml", "clusters/gcp.yaml"])
def test_launcher_config_is_valid_for_ray_and_has_a_node_type_per_role(path):
    config = yaml.safe_load(Path(path).read_text())
    jsonschema.validate(config, RAY_SCHEMA)
    validate_config(fillout_defaults(config))  # the launcher's own checks: head type, min <= global max
    types = config["available_node_types"]
    assert set(types) == {config["head_node_type"], *ROLES}
    check_node_types_serve_roles(types, CLUSTER_CONFIG)
    assert any("pip install" in c and "~/rl_system" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/rl_system"] == "."  # the package the setup commands install
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--autoscaling-config" in head_start and "--dashboard-host=127.0.0.1" in head_start
    assert all("RAY_AUTH_MODE=token" in " ".join(config[k]) for k in ("head_start_ray_commands",
                                                                       "worker_start_ray_commands"))


@pytest.mark.parametrize("breakage", [
    lambda c: c["available_node_types"]["rollout"].update(min_workers="one"),
    lambda c: c["provider"].pop("type"),
    lambda c: c.update(idle_timeout_minutes=-1),
])
def test_schema_check_rejects_a_broken_config(breakage):
    config = yaml.safe_load(Path("clusters/aws.yaml").read_text())
    breakage(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, RAY_SCHEMA)


def kuberay(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def check_ray_cluster_spec(spec: dict) -> dict:
    """Required fields (as KubeRay's CRD requires them), in-tree autoscaling and token auth on;
    returns the autoscaler config Ray's KubeRay integration derives from it."""
    assert spec["rayVersion"] == ray.__version__
    assert spec["enableInTreeAutoscaling"] is True and spec["authOptions"]["mode"] == "token"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        containers = group["template"]["spec"]["containers"]
        assert containers and all(c["name"] and c["image"] for c in containers)
        assert {"cpu", "memory"} <= set(containers[0]["resources"]["limits"])
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    autoscaling = _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": "rl-system", "namespace": "default"}, "spec": spec})  # validates ray-schema.json too
    jsonschema.validate(autoscaling, RAY_SCHEMA)
    return autoscaling


def test_raycluster_manifest_autoscales_one_group_per_role():
    cluster = kuberay("raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"], cluster["metadata"]["name"]) == ("ray.io/v1", "RayCluster",
                                                                                      "rl-system")
    autoscaling = check_ray_cluster_spec(cluster["spec"])
    assert set(autoscaling["available_node_types"]) == {"headgroup", *ROLES}
    check_node_types_serve_roles(autoscaling["available_node_types"], CLUSTER_CONFIG)
    assert autoscaling["idle_timeout_minutes"] == cluster["spec"]["autoscalerOptions"]["idleTimeoutSeconds"] / 60


def test_rayjob_runs_training_on_the_same_cluster_spec():
    job, cluster = kuberay("rayjob.yaml"), kuberay("raycluster.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]  # one cluster shape, kept in step
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "rl_system", "train"]
    config_path = argv[argv.index("--config") + 1]
    cfg = load_config(config_path, [a for a in argv[4:] if "=" in a and not a.startswith("--")])
    autoscaling = check_ray_cluster_spec(job["spec"]["rayClusterSpec"])
    check_node_types_serve_roles(autoscaling["available_node_types"], cfg)
    assert int(yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 60


def test_kuberay_pods_use_the_dockerfile_image_and_existing_claims():
    dockerfile = (KUBERAY / "Dockerfile").read_text()
    tag = re.search(r"-t (\S+) \.", dockerfile).group(1)
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile and "pip install" in dockerfile
    claims = {kuberay("storage.yaml")["metadata"]["name"]}
    spec = kuberay("raycluster.yaml")["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        assert {c["image"] for c in pod["containers"]} == {tag}
        for volume in pod.get("volumes", []):
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def grafana_metric_names() -> dict[str, set[str]]:
    dashboard = json.loads(Path("clusters/grafana/rl_system.json").read_text())
    return {p["title"]: {n for t in p["targets"] for n in re.findall(r"\bray_rl_[a-z_]+", t["expr"])}
            for p in dashboard["panels"]}


def test_grafana_dashboard_charts_exactly_the_exported_metrics():
    panels = grafana_metric_names()
    assert all(panels.values()), [title for title, names in panels.items() if not names]
    charted = set().union(*panels.values())
    assert charted <= PROMETHEUS_NAMES, charted - PROMETHEUS_NAMES
    assert PROMETHEUS_NAMES <= charted, PROMETHEUS_NAMES - charted


def test_runtime_env_gives_a_stopped_job_time_to_checkpoint():
    env = yaml.safe_load(Path("clusters/runtime_env.yaml").read_text())
    assert int(env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 60
    assert {".venv/", "models/", "runs/"} <= set(env["excludes"])


def test_a_kuberay_group_without_its_role_resource_is_caught():
    spec = copy.deepcopy(kuberay("raycluster.yaml")["spec"])
    del spec["workerGroupSpecs"][0]["rayStartParams"]["resources"]
    autoscaling = check_ray_cluster_spec(spec)
    with pytest.raises((AssertionError, KeyError)):
        check_node_types_serve_roles(autoscaling["available_node_types"], CLUSTER_CONFIG)


def test_step_metrics_go_to_tagged_gauges_a_mixtures_tasks_included():
    from actors.metrics import MIXTURE_ONLY, tagged_values

    step = {"reward/accuracy": 0.5, "time/step": 2.0, "task/chain_sum_3x2/accuracy": 0.25, "task/a/b/groups": 3,
            "accuracy": 0.4}
    assert list(tagged_values(step)) == [
        ("rl_reward", 0.5, {"reward": "accuracy"}), ("rl_step_seconds", 2.0, {"phase": "step"}),
        ("rl_task", 0.25, {"task": "chain_sum_3x2", "stat": "accuracy"}), ("rl_task", 3, {"task": "a/b", "stat": "groups"})]
    assert MIXTURE_ONLY <= PROMETHEUS_NAMES
