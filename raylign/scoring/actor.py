"""The reward model as a Ray actor: one loaded scorer (a reward model or an ensemble of them),
fractional CPUs by default."""

from __future__ import annotations

import ray

from raylign.scoring.base import EnsembleConfig, EnsembleSettings
from raylign.scoring.ensemble import load_scorer


class RewardModelWorker:
    def __init__(self, model: str | EnsembleConfig, max_length: int, batch_size: int, torch_threads: int | None = None,
                 settings: EnsembleSettings | None = None):
        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.scorer = load_scorer(model, max_length=max_length, batch_size=batch_size, settings=settings)

    def score_rows(self, rows: list[dict]) -> list[float]:
        return self.scorer.score_rows(rows)

    def model_path(self) -> str:
        return self.scorer.model_path


RewardModelActor = ray.remote(RewardModelWorker)
