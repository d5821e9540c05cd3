"""Worker-side helpers of the offline trainer: resumable state, evaluation, metrics log.

The resumable state holds only what training changes: the trainable parameters (not
the frozen backbone), optimizer, scheduler, counters and data position, the best-so-far
weights and every rank's RNG state, so a top-N-layer checkpoint of a 135M model is tens
of MB, not the whole model. (docs/reliability.md compares it with the online trainer's.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from raylign.collectives import all_reduce, weighted_metrics
from raylign.training.rng_state import load_rng, save_rng

STATE_FILE = "train_state.pt"


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise RuntimeError(f"checkpoint names parameters this model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def save_state(path: Path, model, optimizer, scheduler, progress: dict, best_state, rng_states: list[dict]) -> None:
    """`progress` holds the step and the data position (epoch, batches consumed in it);
    `rng_states` every rank's generators (`rng_state.gather_rng`)."""
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"trainable": trainable_state(model), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "progress": progress, "best_state": best_state},
               path / STATE_FILE)
    save_rng(path, rng_states)


def load_state(path: Path, model, optimizer, scheduler, rank: int = 0, world_size: int = 1) -> tuple[dict, dict | None]:
    """Restore a `save_state` directory and this rank's RNG; returns (progress counters, best-state tensors)."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    load_trainable(model, state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    load_rng(path, rank, world_size)
    return state["progress"], state["best_state"]


def better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def evaluate(module, rows: list[dict], collate: Callable, loss_fn: Callable, batch_size: int) -> dict:
    """Loss and weighted metrics of `loss_fn` over this rank's `rows`, summed over all ranks.

    Runs the unwrapped module (no DDP): ranks may run different numbers of batches.
    Every rank must call it (the sums are all-reduced).
    """
    ordered = sorted(rows, key=lambda r: r["length"])
    loss_sum = weight_sum = 0.0
    collected = []
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start : start + batch_size]
            loss, weight, metrics = loss_fn(module, collate(chunk))
            loss_sum += float(loss)
            weight_sum += float(weight)
            collected.append((float(weight), metrics))
    module.train(was_training)
    metrics = weighted_metrics(collected)
    loss_sum, weight_sum, count = all_reduce([loss_sum, weight_sum, float(len(rows))])
    return {**metrics, "loss": loss_sum / max(weight_sum, 1e-12), "rows": int(count)}


class MetricsLog:
    """Rank 0's metrics.jsonl, one JSON object per line (appended to on resume)."""

    def __init__(self, path: Path | None, fresh: bool):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fresh or not path.exists():
                path.write_text("")

    def write(self, record: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
