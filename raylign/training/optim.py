"""The `optim` section both trainers share, and the one place its AdamW and schedule are built."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from raylign.config import StrictModel

Schedule = Literal["linear", "cosine", "constant", "constant_with_warmup"]


class OptimConfig(StrictModel):
    """AdamW and its learning-rate schedule (`transformers.get_scheduler`). Online default: a
    constant rate; offline default: linear decay after 5% warmup."""

    lr: float = Field(1e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)  # global gradient-norm clip; None: no clipping
    schedule: Schedule = "linear"
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)  # share of the run's optimizer steps


def build_optimizer(param_groups: list[dict], optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the method's parameter groups (a group may carry its own `lr`)."""
    return torch.optim.AdamW(param_groups, lr=optim.lr, weight_decay=optim.weight_decay)


def build_scheduler(optimizer, optim: OptimConfig, total_steps: int, done_steps: int = 0):
    """The learning-rate schedule over `total_steps` optimizer steps, advanced past the
    `done_steps` a resumed run already took (its state is not in every checkpoint)."""
    from transformers import get_scheduler

    scheduler = get_scheduler(optim.schedule, optimizer, num_warmup_steps=int(optim.warmup_ratio * total_steps),
                              num_training_steps=max(1, total_steps))
    for _ in range(done_steps):
        scheduler.step()
    return scheduler
