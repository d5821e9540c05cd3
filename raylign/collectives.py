"""Collectives over the trainer's process group that also work in one plain process.

Every trainer and every method that needs batch statistics over all ranks (PPO's advantage
whitening, the global loss weight, metrics) goes through these, so a single-process run,
a gloo group on CPUs and an NCCL group on GPUs take the same code path.
"""

from __future__ import annotations

from typing import Sequence

import torch


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    return torch.distributed.get_world_size() if distributed() else 1


def collective_device() -> torch.device:
    """Where a tensor must live for the process group's collectives: an NCCL-only group
    (Ray Train's default with `use_gpu`) has no backend for CPU tensors."""
    if distributed() and "nccl" in str(torch.distributed.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(values: Sequence[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few floats over all ranks; a no-op in a single process."""
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=collective_device())
    if distributed():
        reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.tolist()


def weighted_metrics(local: list[tuple[float, dict]]) -> dict[str, float]:
    """Weighted means of per-micro-batch metrics over every rank's micro-batches."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for weight, metrics in local:
        for key, value in metrics.items():
            value = float(value)
            if value != value:  # NaN: this micro-batch has no value for the key
                continue
            sums[key] = sums.get(key, 0.0) + value * weight
            weights[key] = weights.get(key, 0.0) + weight
    if distributed():
        gathered: list = [None] * world_size()
        torch.distributed.all_gather_object(gathered, (sums, weights))
        sums, weights = {}, {}
        for part_sums, part_weights in gathered:
            for key in part_sums:
                sums[key] = sums.get(key, 0.0) + part_sums[key]
                weights[key] = weights.get(key, 0.0) + part_weights[key]
    return {key: sums[key] / weights[key] for key in sorted(sums) if weights[key] > 0}
