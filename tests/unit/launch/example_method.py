"""REINFORCE with a batch-mean baseline: the worked example of docs/adding_a_method.md.

A whole online method in one module: its recipe section, a pure loss built from
`raylign.algorithms.core`, and the `Algorithm` hooks it needs. Registering it is one line in
`raylign/launch/methods.py` (tests/unit/launch/test_adding_a_method.py adds that line in a test).
"""

from __future__ import annotations

import statistics

import torch
from pydantic import Field
from torch import Tensor

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    policy_rows,
    response_token_count,
    rows_logprobs,
    scatter_response_values,
)
from raylign.algorithms.core import aggregate, check_same_shape, k3, safe_mean
from raylign.config import StrictModel


class ReinforceConfig(StrictModel):
    """The `reinforce:` section of a recipe."""

    baseline: bool = True  # subtract the batch's mean reward (a lower-variance estimate)
    kl_coef: float = Field(0.0, ge=0.0)  # > 0: k3 KL to the frozen reference (starts the reference actor)


def reinforce_loss(logprobs: Tensor, advantages: Tensor, mask: Tensor, ref_logprobs: Tensor | None = None,
                   kl_coef: float = 0.0) -> tuple[Tensor, float, dict[str, float]]:
    """Sum over response tokens of -A * log pi (+ kl_coef * k3), weight = #tokens."""
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    per_token = -advantages.to(logprobs).unsqueeze(1) * logprobs
    if kl_coef:
        per_token = per_token + kl_coef * k3(logprobs, ref_logprobs, mask)
    loss_sum, weight = aggregate(per_token, mask, "token")
    return loss_sum, weight, {"loss": safe_mean(loss_sum.detach(), weight)}


class ReinforceAlgorithm(Algorithm):
    """One unit = one sampled response with its advantage."""

    name = "reinforce-example"
    config_class = ReinforceConfig
    section = "reinforce"

    def __init__(self, config: ReinforceConfig, max_length: int = 768):
        super().__init__(config, max_length)
        self.needs_reference = config.kl_coef > 0

    def select(self, rows: list[dict], step: int):
        rows = policy_rows(rows)
        rewards = [float(r["reward"]) for r in rows]
        baseline = statistics.fmean(rewards) if self.config.baseline and rows else 0.0
        return [{**r, "advantage": reward - baseline} for r, reward in zip(rows, rewards)], {"baseline": baseline}

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length))

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, batch = rows_logprobs(module, units, context)
        mask = batch["response_mask"]
        ref = scatter_response_values([u["ref_logprobs"] for u in units], mask) if self.needs_reference else None
        advantages = torch.tensor([u["advantage"] for u in units])
        return reinforce_loss(logprobs, advantages, mask, ref, self.config.kl_coef)
