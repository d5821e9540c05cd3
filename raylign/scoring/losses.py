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
    """Confidence bins against the empirical accuracy in each bin.

    Confidence = sigmoid(|margin|), the model's Bradley-Terry probability for the
    response it prefers; accuracy = how often that response is the chosen one (ties
    0.5). Binning sigmoid(margin) itself against correctness would be trivially 0
    below 0.5 and 1 above, so the symmetric form is used. Bins are equal-width over
    [0.5, 1]; empty bins are left out. Calibrated: accuracy ~ mean confidence.
    """
    confidence = torch.sigmoid(margin.double().abs())
    width = 0.5 / num_bins
    index = torch.clamp(((confidence - 0.5) / width).long(), 0, num_bins - 1)
    rows = []
    for b in range(num_bins):
        mask = index == b
        count = int(mask.sum())
        if count == 0:
            continue
        low = 0.5 + b * width
        rows.append(
            {
                "bin": f"{low:.2f}-{low + width:.2f}",
                "count": count,
                "mean_confidence": float(confidence[mask].mean()),
                "accuracy": float(correct.double()[mask].mean()),
            }
        )
    return rows


def expected_calibration_error(bins: list[dict]) -> float:
    total = sum(b["count"] for b in bins)
    if total == 0:
        return float("nan")
    return sum(b["count"] * abs(b["accuracy"] - b["mean_confidence"]) for b in bins) / total
