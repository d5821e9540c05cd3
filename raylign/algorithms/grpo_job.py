"""`raylign train grpo`: GRPO / RLOO / Dr GRPO on the engine (group-relative advantages, no critic).

Advantages are computed on the driver over each prompt's whole group before the batch is
dealt to ranks (so a group split over workers still sees its own mean), then every
response is one unit of the clipped surrogate, with an optional k3 KL to the reference.
"""

from __future__ import annotations

import statistics

import torch

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    masked_list,
    policy_rows,
    response_token_count,
    rows_logprobs,
)
from raylign.algorithms.grpo import GRPOConfig, group_advantages, grpo_loss
from raylign.algorithms.kl import scatter_response_values
from raylign.algorithms.online_job import OnlineJobConfig, online_main


class GRPOJobConfig(OnlineJobConfig):
    grpo: GRPOConfig = GRPOConfig()


class GRPOAlgorithm(Algorithm):
    name = "grpo"

    def __init__(self, config: GRPOConfig, max_length: int):
        self.config = config
        self.max_length = max_length
        self.needs_reference = config.kl_coef > 0
        self.update = UpdateConfig(epochs=config.epochs, num_minibatches=1, micro_batch_size=4)

    def select(self, rows: list[dict], step: int):
        rows = policy_rows(rows)
        if not rows:
            return [], {}
        advantages = group_advantages([r["reward"] for r in rows], [r["prompt_uid"] for r in rows], self.config.estimator,
                                      self.config.eps)
        units = [{**r, "advantage": float(a)} for r, a in zip(rows, advantages.tolist())]
        zero = sum(1 for u in units if u["advantage"] == 0.0)
        return units, {"advantage_abs_mean": statistics.fmean(abs(u["advantage"]) for u in units),
                       "zero_advantage_fraction": zero / len(units)}

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length)) if self.config.loss_agg == "token" else 1.0

    def _multi_step(self, context: TrainContext) -> bool:
        return self.update.epochs > 1 or self.update.num_minibatches > 1

    def prepare(self, module, units: list[dict], context: TrainContext):
        """Old log-probs only when the batch is reused (several epochs or minibatches);
        a single on-policy step uses ratio 1 with the same gradient."""
        if not self._multi_step(context) or not units:
            return {}
        for start in range(0, len(units), 8):
            chunk = units[start : start + 8]
            logprobs, batch = rows_logprobs(module, chunk, context)
            for row, values, mask in zip(chunk, logprobs, batch["response_mask"]):
                row["old_logprobs"] = masked_list(values, mask)
        return {}

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, batch = rows_logprobs(module, units, context)
        mask = batch["response_mask"]
        old = scatter_response_values([u["old_logprobs"] for u in units], mask) if "old_logprobs" in units[0] else None
        ref = scatter_response_values([u["ref_logprobs"] for u in units], mask) if self.config.kl_coef > 0 else None
        advantages = torch.tensor([u["advantage"] for u in units], dtype=torch.float32)
        return grpo_loss(logprobs, old, ref, advantages, mask, self.config.cliprange, self.config.kl_coef,
                         self.config.loss_agg)


def make_algorithm(config: GRPOJobConfig) -> GRPOAlgorithm:
    return GRPOAlgorithm(config.grpo, config.engine.trainer.max_length)


def main(argv: list[str]) -> int:
    return online_main(argv, "train grpo", "GRPO / RLOO: group-relative advantages, clipped objective, no critic.",
                       GRPOJobConfig, make_algorithm, "grpo")
