"""Versioned weight sync from the policy trainer to every sampler, behind one interface.

* `object_store` (default, CPU and any backend): the trainer puts one copy of the
  state dict in the Ray object store; each sampler actor pulls it and swaps it in
  (vLLM: safetensors in /dev/shm + `reload_weights`; transformers: `load_state_dict`).
* `nccl` (GPU clusters): the trainer's rank 0 broadcasts each tensor over an NCCL
  group that includes the vLLM workers, using vLLM's weight-transfer engine, so
  weights never leave the GPUs. Only usable when the samplers run vLLM on CUDA.

A sampler is a Ray actor that runs one call at a time, so a sync can only happen
between two `generate` calls: no response mixes two versions.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Literal

import ray

from raylign.config import StrictModel
from raylign.runtime import ACTOR_LOST, when_alive


class WeightSyncConfig(StrictModel):
    transport: Literal["object_store", "nccl"] = "object_store"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # wire dtype; auto = sampler's
    nccl_port: int = 29555


def _wire_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(name)


class WeightSync(ABC):
    """Pushes a new policy version to all samplers; returns timing details."""

    def __init__(self, samplers: list, config: WeightSyncConfig, store=None):
        self.samplers = samplers
        self.config = config
        self.store = store  # keeps the newest weights for samplers that Ray restarts (RolloutBuffer)

    @abstractmethod
    def push(self, state_dict: dict, version: int) -> dict[str, float]:
        """Blocks until every sampler serves `version`."""


class ObjectStoreSync(WeightSync):
    def push(self, state_dict: dict, version: int) -> dict[str, float]:
        start = time.perf_counter()
        dtype = _wire_dtype(self.config.dtype)
        tensors = {k: (v.detach().to(dtype) if dtype is not None else v.detach()).cpu() for k, v in state_dict.items()}
        ref = ray.put(tensors)
        if self.store is not None:
            ray.get(self.store.set_latest_weights.remote([ref], version))
        put_seconds = time.perf_counter() - start
        calls = [s.load_state_dict.remote(ref, version) for s in self.samplers]
        load_seconds = []
        for index, (sampler, call) in enumerate(zip(self.samplers, calls)):
            try:
                load_seconds.append(ray.get(call))
            except ACTOR_LOST:  # died during the push: once Ray restarts it, it gets this version
                load_seconds.append(when_alive(lambda s=sampler: s.load_state_dict.remote(ref, version),
                                               f"sampler-{index}"))
        return {
            "sync_seconds": time.perf_counter() - start,
            "sync_put_seconds": put_seconds,
            "sync_load_seconds_max": max(load_seconds) if load_seconds else 0.0,
        }


class NCCLBroadcastSync(WeightSync):
    """Broadcast into vLLM workers over NCCL (GPU only).

    Each sampler actor joins a process group with the trainer's rank 0 through
    vLLM's weight-transfer API (`init_weight_transfer` / `update_weights` collective
    RPCs); the trainer then broadcasts tensor by tensor. Not available on CPU.
    """

    def __init__(self, samplers: list, config: WeightSyncConfig):
        super().__init__(samplers, config)
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("weight_sync.transport=nccl needs CUDA GPUs; use object_store on CPU")
        self._group = None

    def _ensure_group(self):
        if self._group is not None:
            return
        import torch

        from raylign.sampling.nccl_group import init_trainer_group

        world = 1 + len(self.samplers)
        master = ray.util.get_node_ip_address()
        # Group creation is collective: the samplers must be joining while rank 0 creates
        # it, so start their joins, join here, and only then wait for theirs.
        joining = [
            s.init_weight_group.remote(master, self.config.nccl_port, rank + 1, world)
            for rank, s in enumerate(self.samplers)
        ]
        self._group = init_trainer_group(master, self.config.nccl_port, world, torch.cuda.current_device())
        ray.get(joining)

    def push(self, state_dict: dict, version: int) -> dict[str, float]:
        start = time.perf_counter()
        self._ensure_group()
        names = list(state_dict)
        metas = [(n, str(state_dict[n].dtype), tuple(state_dict[n].shape)) for n in names]
        pending = [s.receive_weights.remote(metas, version) for s in self.samplers]
        for name in names:
            self._group.broadcast(state_dict[name].detach().contiguous().cuda(), src=0)
        ray.get(pending)
        return {"sync_seconds": time.perf_counter() - start}


def make_weight_sync(samplers: list, config: WeightSyncConfig, store=None) -> WeightSync:
    if config.transport == "nccl":
        return NCCLBroadcastSync(samplers, config)
    return ObjectStoreSync(samplers, config, store)
