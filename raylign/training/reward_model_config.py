"""Recipe schema for `raylign train rm` (validated on load; unknown keys are errors).

The shared trainer settings (trainable, epochs, batch_size, lr, bf16, eval_every, ...)
come from `OfflineTrainConfig`; a reward model adds a learning rate for its fresh head
and an optional compact weight-delta export.
"""

from __future__ import annotations

from raylign.data.bundled import BUNDLED_HH
from raylign.training.offline_config import (
    LoraSettings,
    OfflineDataConfig,
    OfflineTrainConfig,
)

__all__ = ["LoraSettings", "RewardDataConfig", "RewardTrainConfig"]


class RewardDataConfig(OfflineDataConfig):
    path: str = str(BUNDLED_HH)  # any preference format the adapters read (hh, alpaca_eval, generic)


class RewardTrainConfig(OfflineTrainConfig):
    output_dir: str = "runs/rm"
    data: RewardDataConfig = RewardDataConfig()
    head_lr: float | None = None  # the fresh scalar head often wants a larger rate
    export_delta: str | None = None  # also write a compact weight delta file here (see models/shipped.py)
