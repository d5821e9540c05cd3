"""Bradley-Terry loss, accuracy and calibration against hand-computed values."""

import math

import pytest
import torch

from raylign.scoring.losses import (
    bradley_terry_loss,
    calibration_bins,
    expected_calibration_error,
    pairwise_accuracy,
    pairwise_correct,
    soft_agreement,
    strength_weighted_accuracy,
)


def test_bradley_terry_loss_by_hand():
    chosen = torch.tensor([1.0, 0.0, 2.0])
    rejected = torch.tensor([0.0, 0.0, 3.0])
    # margins 1, 0, -1: -log sigmoid(m) = log(1 + e^-m)
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(1))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, rel=1e-6)


def test_bradley_terry_loss_is_finite_for_huge_margins_and_has_the_right_gradient():
    chosen = torch.tensor([200.0, -200.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0])
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(100.0, rel=1e-6)  # (0 + 200) / 2
    loss.backward()
    # d/dc of -log sigmoid(c - r) / n = -(1 - sigmoid(m)) / n
    assert chosen.grad.tolist() == pytest.approx([0.0, -0.5], abs=1e-6)


def test_accuracy_counts_ties_as_half():
    chosen = torch.tensor([2.0, 1.0, 0.5, 3.0])
    rejected = torch.tensor([1.0, 1.0, 0.7, 3.0])
    assert pairwise_correct(chosen, rejected).tolist() == [1.0, 0.5, 0.0, 0.5]
    assert pairwise_accuracy(chosen, rejected).item() == pytest.approx(0.5)


def test_constant_scorer_is_exactly_chance():
    scores = torch.zeros(7)
    assert pairwise_accuracy(scores, scores).item() == 0.5


def test_soft_agreement_by_hand():
    margin = torch.tensor([0.0, math.log(3.0)])  # p_model = 0.5, 0.75
    p_human = torch.tensor([1.0, 0.8])
    expected = (0.5 * 1.0 + 0.5 * 0.0 + 0.75 * 0.8 + 0.25 * 0.2) / 2
    assert soft_agreement(margin, p_human).item() == pytest.approx(expected, rel=1e-6)


def test_strength_weighted_accuracy_ignores_coin_flips():
    correct = torch.tensor([1.0, 0.0, 0.0])
    p_human = torch.tensor([1.0, 0.5, 0.75])  # weights 1, 0, 0.5
    assert strength_weighted_accuracy(correct, p_human).item() == pytest.approx(1 / 1.5)


def test_calibration_bins_by_hand():
    # confidence = sigmoid(|margin|): 0.5, 0.7311 (twice), 0.8808
    margin = torch.tensor([0.0, 1.0, -1.0, -2.0])
    correct = pairwise_correct(margin, torch.zeros(4))  # 0.5, 1, 0, 0
    bins = calibration_bins(margin, correct, num_bins=10)
    by_name = {b["bin"]: b for b in bins}
    assert set(by_name) == {"0.50-0.55", "0.70-0.75", "0.85-0.90"}
    conf1, conf2 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-2.0))
    assert by_name["0.70-0.75"]["count"] == 2
    assert by_name["0.70-0.75"]["mean_confidence"] == pytest.approx(conf1)
    assert by_name["0.70-0.75"]["accuracy"] == pytest.approx(0.5)
    assert by_name["0.50-0.55"]["accuracy"] == pytest.approx(0.5)
    expected_ece = (0.0 + 2 * abs(0.5 - conf1) + abs(0.0 - conf2)) / 4
    assert expected_calibration_error(bins) == pytest.approx(expected_ece, rel=1e-6)
