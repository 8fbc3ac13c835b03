from __future__ import annotations

import os

import ray
import torch

from actors.env_worker import RayEnvs
from actors.group import assigned_gpu_index
from rl_system.config import TrainConfig
from rl_system.data import Problem
from rl_system.envs.runner import LocalEnvs
from rl_system.models import detect, load_tokenizer, pick_device, resolve
from rl_system.rollout import VLLMSampler, make_sampler
from rl_system.weight_broadcast import SyncGroup, open_sync_group, receive_weights
from rl_system.weights import PublishSlots, SharedWeightsReader, load_packed_weights, slot_reference


WEIGHT_STORE = "weight-store"


@ray.remote(num_cpus=0)
class WeightStore:
    """The newest published weights, (version, [ref]), for rollout workers that Ray restarts."""

    def __init__(self):
        self._latest: tuple[int, list | None] = (0, None)

    def put(self, version: int, packed_ref: list) -> None:
        self._latest = (version, packed_ref)

    def latest(self) -> tuple[int, list | None]:
        return self._latest


class PublishedWeights:
    """Partial rollouts: the weight store as a generate call sees it (rl_system/rollout/base.WeightFeed).
    The controller puts each version in the store before it queues the workers' loads, so a call in
    progress finds it at its next check, loads it, and the queued load finds it done."""

    def __init__(self, worker: "RolloutWorker"):
        self.worker, self.store = worker, ray.get_actor(WEIGHT_STORE)
        self._latest: tuple[int, list | None] = (0, None)

    @property
    def version(self) -> int:
        return self.worker.policy_version

    def newer(self) -> bool:
        self._latest = ray.get(self.store.latest.remote())
        return self._latest[0] > self.worker.policy_version

    def load(self) -> None:
        self.worker.load_weights(*self._latest)


@ray.remote
class RolloutWorker:
    """Holds a generation copy of the policy (an HF model, or a vLLM engine with rollout.backend=vllm),
    samples groups, and loads each published version."""

    def __init__(self, cfg: TrainConfig, worker_index: int):
        rc = cfg.rollout
        torch.set_num_threads(rc.num_threads or max(1, (os.cpu_count() or 1) // rc.num_workers))
        seed = cfg.seed * 1000 + worker_index
        torch.manual_seed(seed)
        self.cfg, self.worker_index = cfg, worker_index
        self.device = pick_device(rc.num_gpus, assigned_gpu_index())
        self.precision_report = resolve(rc.dtype, "rollout.dtype", detect(self.device))
        self.sampler = make_sampler(cfg, load_tokenizer(cfg.model.path, cfg.model.trust_remote_code), self.device,
                                    self.precision_report.dtype, seed)
        self.policy_version = 0
        self.node_id = ray.get_runtime_context().get_node_id()
        # Multi-turn rollouts: tool calls on environment workers of this worker's own (env.num_workers), or
        # with env.num_workers=0 in this process; one runner for the worker's life, not one per call.
        self.envs = None
        if cfg.env.name:
            self.envs = RayEnvs(cfg.env, self.node_id) if cfg.env.num_workers else LocalEnvs(cfg.env)
        self.shared_weights = SharedWeightsReader()
        self.local_slots: PublishSlots | None = None  # vLLM off the learner's node: its copy of each publish
        self.weight_group: SyncGroup | None = None  # weight_sync.method=broadcast
        if cfg.rollout.partial_rollout:
            self.sampler.weights = PublishedWeights(self)
        version, packed_ref = ray.get(ray.get_actor(WEIGHT_STORE).latest.remote())
        if packed_ref:  # started after a publish, e.g. restarted by Ray: catch up with the newest weights
            self.load_weights(version, packed_ref)

    def generate(self, problems: list[Problem], greedy: bool = False, max_new_tokens: int | None = None,
                 n: int | None = None, prefills: list[str] | None = None,
                 stop_strings: tuple[str, ...] | None = None):
        """One group per problem, then a receipt (the number of groups) that tells the caller how the
        call ended without fetching the groups. `stop_strings` replaces rollout.stop_strings for this
        call (test-time search stops at a step)."""
        groups = self.sampler.sample(problems, self.policy_version, greedy, max_new_tokens, n, prefills, stop_strings,
                                     self.envs)
        return (*groups, len(groups))  # one object-store entry per group

    def load_weights(self, version: int, packed_ref: list) -> int:
        if self.sampler.weights is not None and version == self.policy_version:
            return version  # a partial rollout loaded it mid-call
        packed = ray.get(packed_ref[0])
        near = bool(packed["shared_path"]) and packed["node"] == self.node_id  # the learner's slot is mappable
        # vLLM's engine maps a slot itself: the learner's, or this worker's copy of a far publish.
        if isinstance(self.sampler, VLLMSampler):
            if not near:
                packed = self._local_copy({**packed, "data": self._published_bytes(packed)})
            self.policy_version = self.sampler.load_weights(slot_reference(packed), version)
            return self.policy_version
        # The slot mapped in place, or a read-only view of this node's object-store copy. CPU parameters
        # become views of those bytes: workers on a node share one copy of the weights.
        packed = self.shared_weights.read(packed) if near else {**packed, "data": self._published_bytes(packed)}
        self.policy_version = load_packed_weights(self.sampler.model, packed, expected_version=version,
                                                  share_buffer=True)
        return self.policy_version

    def join_weight_broadcast(self, host: str, port: int, rank: int, world_size: int) -> None:
        self.weight_group = open_sync_group(host, port, rank, world_size, self.device, self.cfg.sync_timeout_s)

    def receive_weights(self, version: int) -> int:
        """weight_sync.method=broadcast: receives `version` from learner rank 0 and loads it."""
        vllm = isinstance(self.sampler, VLLMSampler)
        shapes = self.sampler.shapes if vllm else {name: p.shape for name, p in self.sampler.model.named_parameters()}
        packed = receive_weights(self.weight_group, version, shapes, self.precision_report.dtype,
                                 self.cfg.weight_sync.bucket_mib)
        if vllm:  # vLLM's workers load from a slot they map: this worker's copy of the publish
            packed = self._local_copy({**packed, "data": packed["data"].cpu().view(torch.uint8).numpy()})
            self.policy_version = self.sampler.load_weights(slot_reference(packed), version)
        else:  # CPU weights become views of the received buffer (a new one each sync)
            self.policy_version = load_packed_weights(self.sampler.model, packed, version, share_buffer=True)
        return self.policy_version

    def release(self) -> dict:
        """cluster.colocate, before the learner trains: frees the generation copy's memory. Returns the
        bytes it held while generating and after the release."""
        held = self.sampler.memory_bytes()
        self.sampler.release()
        return {"generate": held, "released": self.sampler.memory_bytes()}

    def restore(self) -> int:
        """cluster.colocate, before a publish: memory for the weights again (filled by the load). Returns
        the bytes held then."""
        self.sampler.restore()
        return self.sampler.memory_bytes()

    def _local_copy(self, packed: dict) -> dict:
        """A publish this worker's vLLM engine cannot map where it is (another node's, or a broadcast's),
        stored in this worker's own slots."""
        if self.local_slots is None:
            self.local_slots = PublishSlots(sum(numel for *_, numel in packed["manifest"]), packed["dtype"])
        return self.local_slots.store(packed)

    @staticmethod
    def _published_bytes(packed: dict):
        return ray.get(ray.get(packed["publisher"].published_bytes.remote(packed["version"]))[0])

    def rng_state(self) -> dict[str, torch.Tensor]:
        """The sampling RNG (CPU, plus the GPU's when generating there): restored on resume, so the
        next batch is the one an uninterrupted run would have sampled."""
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def set_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def version(self) -> int:
        return self.policy_version

    def precision(self) -> dict:
        return self.precision_report.as_dict()
