"""Pure tensor functions for pairwise (Bradley-Terry) reward models.

No model, no data loading: everything here takes score tensors and returns tensors,
so each can be checked against hand-computed values (tests/unit/test_reward_losses.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected); logsigmoid keeps large margins finite."""
    return -F.logsigmoid(chosen - rejected).mean()


def pairwise_correct(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 when r_chosen > r_rejected, 0 when lower, 0.5 for an exact tie.

    Counting ties as half keeps a constant scorer at exactly 50% accuracy
    instead of 0% (ties as wrong) or 100% (ties as right).
    """
    return (chosen > rejected).float() + 0.5 * (chosen == rejected).float()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    return pairwise_correct(chosen, rejected).mean()


def soft_agreement(margin: torch.Tensor, p_human: torch.Tensor) -> torch.Tensor:
    """Expected agreement between model and annotator, both read as probabilities.

    p_model = sigmoid(margin) is the model's probability that `chosen` is better,
    p_human the annotator's; agreement = p_model*p_human + (1-p_model)*(1-p_human),
    the chance that two independent draws from them pick the same response.
    """
    p_model = torch.sigmoid(margin)
    return (p_model * p_human + (1 - p_model) * (1 - p_human)).mean()


def strength_weighted_accuracy(correct: torch.Tensor, p_human: torch.Tensor) -> torch.Tensor:
    """Accuracy where each pair counts by how strongly annotators preferred one side.

    Weight = |2*p_human - 1|: a unanimous pair counts 1, a coin-flip pair 0.
    """
    weight = (2 * p_human - 1).abs()
    total = weight.sum()
    if total <= 0:
        return torch.tensor(float("nan"))
    return (correct * weight).sum() / total


def calibration_bins(margin: torch.Tensor, correct: torch.Tensor, num_bins: int = 10) -> list[dict]:
    """Bins of predicted p = sigmoid(margin) against the empirical accuracy in each bin.

    Bins are equal-width over [0, 1]; empty bins are left out. A calibrated model has
    `accuracy` close to `mean_p` in every bin.
    """
    p = torch.sigmoid(margin.double())
    index = torch.clamp((p * num_bins).long(), max=num_bins - 1)
    rows = []
    for b in range(num_bins):
        mask = index == b
        count = int(mask.sum())
        if count == 0:
            continue
        rows.append(
            {
                "bin": f"{b / num_bins:.1f}-{(b + 1) / num_bins:.1f}",
                "count": count,
                "mean_p": float(p[mask].mean()),
                "accuracy": float(correct.double()[mask].mean()),
            }
        )
    return rows


def expected_calibration_error(bins: list[dict]) -> float:
    total = sum(b["count"] for b in bins)
    if total == 0:
        return float("nan")
    return sum(b["count"] * abs(b["accuracy"] - b["mean_p"]) for b in bins) / total
