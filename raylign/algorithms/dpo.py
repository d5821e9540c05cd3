"""DPO and its variants (IPO, conservative / label-smoothed DPO) as pure tensor functions.

Offline DPO (`raylign train dpo`) and online DPO (pairs sampled and ranked in the loop)
share this loss; both feed it the **summed** response log-probs (EOS included) of the
policy and of the frozen reference, one value per sequence. See ALGORITHMS.md, DPO.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from raylign.config import StrictModel

DPOLossType = Literal["sigmoid", "ipo", "conservative"]


class DPOConfig(StrictModel):
    beta: float = 0.1
    loss_type: DPOLossType = "sigmoid"
    # conservative DPO (Mitchell 2023): the label is flipped with this probability
    label_smoothing: float = 0.0


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, float, dict[str, float]]:
    """Per-pair DPO loss, summed over the B pairs: returns (loss_sum, B, metrics).

    With h = (logpi(y_w) - logref(y_w)) - (logpi(y_l) - logref(y_l)):
    - sigmoid:      -log sigma(beta * h)
    - conservative: -(1 - eps) log sigma(beta * h) - eps log sigma(-beta * h)
    - ipo:          (h - 1 / (2 beta))^2   (Azar et al.; h on summed log-probs as here)
    The trainer divides the sum by the all-reduced number of pairs, so uneven shards
    weigh every pair the same. Metrics: mean loss, implicit-reward accuracy and margin.
    """
    tensors = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or policy_chosen.dim() != 1:
        raise ValueError(f"DPO inputs must be four [B] tensors of one shape, got {[tuple(t.shape) for t in tensors]}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_reward = policy_chosen - ref_chosen.to(policy_chosen)
    rejected_reward = policy_rejected - ref_rejected.to(policy_rejected)
    h = chosen_reward - rejected_reward
    if loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * h)
    elif loss_type == "conservative":
        per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        per_pair = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type '{loss_type}' (sigmoid, ipo, conservative)")
    count = float(h.shape[0])
    with torch.no_grad():
        metrics = {
            "dpo_loss": float(per_pair.mean()) if count else 0.0,
            # ties (policy == reference, e.g. before the first step) count half, as in the RM's accuracy
            "reward_accuracy": float(((h > 0).float() + 0.5 * (h == 0).float()).mean()) if count else 0.0,
            "reward_margin": float((beta * h).mean()) if count else 0.0,
            "chosen_reward": float((beta * chosen_reward).mean()) if count else 0.0,
            "rejected_reward": float((beta * rejected_reward).mean()) if count else 0.0,
        }
    return per_pair.sum(), count, metrics


def sequence_logprobs(token_logprobs: Tensor, response_mask: Tensor) -> Tensor:
    """Sum of response-token log-probs per row [N] (padding masked with where, not a product)."""
    if token_logprobs.shape != response_mask.shape:
        raise ValueError(f"token_logprobs {tuple(token_logprobs.shape)} vs mask {tuple(response_mask.shape)}")
    mask = response_mask.to(token_logprobs.device).bool()
    return torch.where(mask, token_logprobs, torch.zeros_like(token_logprobs)).sum(-1)
