"""The run's numbers on the Ray dashboard and Prometheus, through ray.util.metrics.

The controller (the driver) sets them from the same per-step dict that goes to metrics.jsonl, and
times every actor call it waits on. Ray exports them from the node the driver runs on, with a
`ray_` prefix (counters also get `_total`; histograms `_bucket`, `_sum`, `_count`).
clusters/grafana/rl_system.json charts exactly the names in PROMETHEUS_NAMES.
"""
from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

GAUGES = {  # name: (description, tag keys)
    "rl_step": ("last finished training step", ()),
    "rl_reward": ("mean reward of the step's prompt groups, per reward function and total", ("reward",)),
    "rl_accuracy": ("share of the step's completions with the right answer", ()),
    "rl_format_rate": ("share of the step's completions in the strict tagged format", ()),
    "rl_tokens_per_second": ("sampled completion tokens per second of generation / of the whole step", ("phase",)),
    "rl_buffer_size": ("prompt groups held in the replay buffer", ()),
    "rl_staleness_versions": ("policy versions the trained groups lagged the learner", ("stat",)),
    # Cumulative counts as gauges: a ray.util.metrics Counter cannot record 0, and the accounting
    # (generated = trained + dropped + held + in flight) needs every state, zeros included.
    "rl_prompt_groups": ("prompt groups of this run so far, by state", ("state",)),
    "rl_reward_failures": ("reward calls of this run that failed or timed out", ()),
    "rl_step_seconds": ("wall time of the last step, by phase", ("phase",)),
    "rl_learner": ("learner statistics of the last step", ("stat",)),
    "rl_rollout_workers": ("rollout workers in use and wanted (elastic rollout)", ("state",)),
    # An info metric: 1 for each (role, dtype, node kind) the run's actors resolved their dtype keys to.
    "rl_precision": ("what each role computes in, per node kind (rl_system/models/precision.py)",
                     ("role", "dtype", "node_kind")),
    "rl_task": ("per task of a data.tasks mixture: accuracy, format_rate, reward and groups of the last step",
                ("task", "stat")),
}
MIXTURE_ONLY = {"ray_rl_task"}  # exported only by a run with data.tasks
COUNTERS = {
    "rl_steps": ("training steps finished", ()),
    "rl_generated_tokens": ("completion tokens sampled for training", ()),
}
HISTOGRAMS = {
    "rl_actor_call_seconds": ("latency of one actor call, from submission to its last result", ("actor", "method")),
}
LATENCY_BOUNDARIES_S = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 150, 300]
PROMETHEUS_NAMES = (
    {f"ray_{name}" for name in GAUGES} | {f"ray_{name}_total" for name in COUNTERS}
    | {f"ray_{name}_{part}" for name in HISTOGRAMS for part in ("bucket", "sum", "count")}
)

GROUP_STATES = {  # rl_prompt_groups state: key in the step metrics
    "generated": "groups/generated", "scored": "groups/scored", "trained": "buffer/trained",
    "dropped_stale": "buffer/dropped_stale", "dropped_overflow": "buffer/dropped_overflow",
    "in_buffer": "buffer/size", "in_flight": "buffer/in_flight",
}
TAGGED_FAMILIES = {  # "family/name" keys in the step metrics: (gauge, the tag that takes the name)
    "reward": ("rl_reward", "reward"), "tokens_per_s": ("rl_tokens_per_second", "phase"),
    "staleness": ("rl_staleness_versions", "stat"), "time": ("rl_step_seconds", "phase"),
}
LEARNER_STATS = ("loss", "kl", "grad_norm", "clip_fraction")


class RunMetrics:
    def __init__(self):
        self.gauges = {name: Gauge(name, description=d, tag_keys=tags) for name, (d, tags) in GAUGES.items()}
        self.counters = {name: Counter(name, description=d, tag_keys=tags) for name, (d, tags) in COUNTERS.items()}
        self.latency = Histogram("rl_actor_call_seconds", description=HISTOGRAMS["rl_actor_call_seconds"][0],
                                 boundaries=LATENCY_BOUNDARIES_S, tag_keys=HISTOGRAMS["rl_actor_call_seconds"][1])
        self.reward_failures = 0
        self.precision_reports: list[dict] = []  # what the actors resolved (controller), exported with each step

    def record(self, step: int, metrics: dict) -> None:
        """One step's metrics, keyed as in metrics.jsonl."""
        g = self.gauges
        g["rl_step"].set(step)
        self.counters["rl_steps"].inc()
        # step_metrics gives tokens/s of the whole step; times the step's seconds, the tokens sampled.
        tokens = round(metrics["tokens_per_s/step"] * metrics["time/step"])
        if tokens > 0:
            self.counters["rl_generated_tokens"].inc(tokens)
        for gauge, value, tags in tagged_values(metrics):
            g[gauge].set(value, tags=tags)
        g["rl_accuracy"].set(metrics["accuracy"])
        g["rl_format_rate"].set(metrics["format_rate"])
        g["rl_buffer_size"].set(metrics["buffer/size"])
        for state, key in GROUP_STATES.items():
            g["rl_prompt_groups"].set(metrics[key], tags={"state": state})
        self.reward_failures += metrics.get("reward_failures", 0)
        g["rl_reward_failures"].set(self.reward_failures)
        for stat in LEARNER_STATS:
            if stat in metrics:
                g["rl_learner"].set(metrics[stat], tags={"stat": stat})
        # Set again each step: a value recorded before the node's metrics agent is up never reaches it.
        for r in self.precision_reports:
            g["rl_precision"].set(1, tags={"role": r["role"], "dtype": r["dtype"], "node_kind": r["node_kind"]})

    def rollout_pool(self, active: int, target: int) -> None:
        self.gauges["rl_rollout_workers"].set(active, tags={"state": "active"})
        self.gauges["rl_rollout_workers"].set(target, tags={"state": "target"})

    def actor_call(self, actor: str, method: str, seconds: float) -> None:
        self.latency.observe(seconds, tags={"actor": actor, "method": method})


def tagged_values(metrics: dict):
    """(gauge, value, tags) for the step's "family/name" keys: rewards, tokens/s, staleness, step
    times, and a mixture's task/<task>/<stat>."""
    for key, value in metrics.items():
        family, _, name = key.partition("/")
        if family == "task":
            task, _, stat = name.rpartition("/")
            yield "rl_task", value, {"task": task, "stat": stat}
        elif name and family in TAGGED_FAMILIES:
            gauge, tag = TAGGED_FAMILIES[family]
            yield gauge, value, {tag: name}
