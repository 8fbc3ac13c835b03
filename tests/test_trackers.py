"""Experiment trackers (logging.trackers, rl_system/trackers.py): every tracker holds the steps and values
of metrics.jsonl, the run's config and its held-out results, read back with the tracker's own reader;
a failed run closes them readable; a bad name or a missing package is a one-line error.

W&B runs offline here (its default), with its directories under tmp_path, and MLflow in its default file
store under the run directory: nothing reaches the network or $HOME."""
import json
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mlflow.tracking import MlflowClient

from rl_system.config import ConfigError, LoggingConfig, load_config
from rl_system.config.choices import TRACKERS
from rl_system.local import LocalWorkers
from rl_system.metrics import MetricsWriter
from rl_system.models.precision import describe
from rl_system.pipeline import r1_zero
from rl_system.trackers import INSTALL_HINT, TRACKER_CLASSES, check_installed, open_trackers
from tests.test_local_workers import local_config, logged


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B's own files (settings, cache, artifacts, logs) under tmp_path; offline, silent, no API key."""
    home = tmp_path / "wandb_home"
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def wandb_records(run_dir) -> list[dict]:
    """The records of the newest W&B run under run_dir/wandb, as W&B's own reader (`wandb leet inspect`) gives them."""
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir / "wandb")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def wandb_history(records: list[dict]) -> dict[int, dict]:
    return {r["history"]["step"]["num"]: r["history"]["item"] for r in records if r["type"] == "history"}


def wandb_summary(records: list[dict]) -> dict:
    summary = {}
    for r in records:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    return summary


def mlflow_run(run_dir):
    """The one MLflow run in run_dir/mlruns (the default store), read with MLflow's own client."""
    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("rl_system").experiment_id])
    return client, run


def tensorboard_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def tensorboard_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = tensorboard_events(run_dir)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def tensorboard_text(run_dir, tag: str) -> str:
    return tensorboard_events(run_dir).Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()


def test_two_steps_reach_every_tracker_with_the_steps_and_values_of_metrics_jsonl(tiny_model_dir, tmp_path,
                                                                                   offline_wandb):
    cfg = local_config(tiny_model_dir, tmp_path, "logging.trackers=[tensorboard, wandb, mlflow]", "eval_before=true",
                       "logging.run_name=tiny")
    workers = LocalWorkers(cfg)
    try:
        results = r1_zero.train(cfg, workers)
    finally:
        workers.shutdown()
    lines = logged(tmp_path)
    assert [m["step"] for m in lines] == [1, 2]
    expected = {key: [(m["step"], m[key]) for m in lines] for key in lines[0] if key not in ("step", "time")}
    assert "loss" in expected and "reward/total" in expected

    records = wandb_records(tmp_path)
    history = wandb_history(records)
    assert sorted(history) == [1, 2]
    for key, values in expected.items():
        assert [(step, history[step][key]) for step, _ in values] == values, key
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["display_name"] == "tiny" and run["project"] == "rl_system"
    assert run["config"]["update"]["model"]["path"] == str(tiny_model_dir)
    assert run["config"]["update"]["logging"]["trackers"] == ["tensorboard", "wandb", "mlflow"]
    summary = wandb_summary(records)
    for when in ("before", "after"):
        assert summary[f"held_out/{when}/accuracy"] == results[when]["accuracy"]
        assert summary[f"held_out/{when}/num_problems"] == 4
    assert summary["precision"] == describe(results["precision"])
    assert next(r["exit"] for r in records if r["type"] == "exit").get("exit_code", 0) == 0

    client, run = mlflow_run(tmp_path)
    assert run.info.run_name == "tiny" and run.info.status == "FINISHED"
    for key, values in expected.items():
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert history == [(step, pytest.approx(value)) for step, value in values], key
    assert run.data.params["model.path"] == str(tiny_model_dir)
    assert run.data.metrics["held_out/after/accuracy"] == pytest.approx(results["after"]["accuracy"])
    assert run.data.tags["precision"] == describe(results["precision"])

    scalars = tensorboard_scalars(tmp_path)
    for key, values in expected.items():
        assert [step for step, _ in scalars[key]] == [step for step, _ in values], key
        assert [value for _, value in scalars[key]] == pytest.approx([value for _, value in values], rel=1e-6), key
    assert scalars["held_out/after/accuracy"] == [(2, pytest.approx(results["after"]["accuracy"]))]
    assert json.loads(tensorboard_text(tmp_path, "config"))["model"]["path"] == str(tiny_model_dir)
    assert tensorboard_text(tmp_path, "precision") == describe(results["precision"])


def test_a_failed_run_closes_its_trackers_readable(tmp_path, offline_wandb):
    settings = LoggingConfig(trackers=("tensorboard", "wandb", "mlflow"))
    with pytest.raises(RuntimeError, match="learner died"):
        with MetricsWriter(tmp_path, open_trackers(settings, tmp_path, {"seed": 3}, None)) as writer:
            writer.log(1, {"loss": 0.5, "reward/total": 1.25})
            raise RuntimeError("learner died")
    assert [(m["step"], m["loss"]) for m in logged(tmp_path)] == [(1, 0.5)]
    records = wandb_records(tmp_path)
    assert wandb_history(records)[1]["reward/total"] == 1.25
    assert next(r["exit"] for r in records if r["type"] == "exit")["exit_code"] == 1
    assert tensorboard_scalars(tmp_path)["loss"] == [(1, 0.5)]
    client, run = mlflow_run(tmp_path)
    assert run.info.status == "FAILED" and run.data.metrics["reward/total"] == 1.25


def test_a_tracker_name_outside_the_list_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^config key 'logging.trackers': expected a list of distinct names from "
                                          r"tensorboard, wandb, mlflow, got \['tensorboard', 'comet'\]$"):
        load_config(None, ["logging.trackers=[tensorboard, comet]"])
    with pytest.raises(ConfigError, match=r"^config key 'logging.wandb_mode': expected 'offline' or 'online', got 'cloud'$"):
        load_config(None, ["logging.wandb_mode=cloud"])
    assert tuple(TRACKER_CLASSES) == TRACKERS  # every name the config allows has its class


def test_a_missing_tracker_package_names_the_key_and_the_extra(monkeypatch):
    """wandb is installed here: its absence is simulated by sys.modules[name] = None, which makes Python's
    import raise ImportError as it does for a package that is not there."""
    check_installed(LoggingConfig(trackers=("tensorboard", "wandb")))
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError) as error:
        check_installed(LoggingConfig(trackers=("wandb",)))
    message = str(error.value)
    assert message.startswith("config key 'logging.trackers': wandb needs the 'wandb' package")
    assert message.endswith(INSTALL_HINT) and "\n" not in message
    check_installed(LoggingConfig(trackers=("tensorboard",)))  # no optional package chosen: nothing to import
