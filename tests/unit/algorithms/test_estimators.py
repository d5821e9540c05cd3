"""Advantage estimators by name (`register_adv_est`): GRPO / Dr GRPO / RLOO against hand values."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.estimators import ESTIMATORS, group_advantages, register_adv_est
from raylign.algorithms.grpo import GRPOConfig
from raylign.config import ConfigError, build_config

NAN = float("nan")
EPS = 1e-6

# groups: a = rows 0, 2, 5 (rewards 1, 2, 3); c = rows 1, 4 (0, 6), interleaved;
# "solo" = row 3 alone; b = rows 6, 7 with equal rewards
REWARDS = [1.0, 0.0, 2.0, 10.0, 6.0, 3.0, 4.0, 4.0]
GROUPS = ["a", "c", "a", "solo", "c", "a", "b", "b"]


def test_grpo_advantages_hand_computed():
    adv = group_advantages(torch.tensor(REWARDS), GROUPS, "grpo", eps=EPS)
    std_a = math.sqrt(((1 - 2) ** 2 + 0 + (3 - 2) ** 2) / 2)  # 1, unbiased
    std_c = math.sqrt(((0 - 3) ** 2 + (6 - 3) ** 2) / 1)  # sqrt(18)
    expected = [-1 / (std_a + EPS), -3 / (std_c + EPS), 0.0, 0.0, 3 / (std_c + EPS), 1 / (std_a + EPS), 0.0, 0.0]
    assert adv.shape == (8,)
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)


def test_dr_grpo_skips_std_scaling():
    adv = group_advantages(REWARDS, GROUPS, "dr_grpo")
    assert torch.allclose(adv, torch.tensor([-1.0, -3.0, 0.0, 0.0, 3.0, 1.0, 0.0, 0.0]))


def test_rloo_leave_one_out_baseline():
    adv = group_advantages(REWARDS, torch.tensor([0, 1, 0, 2, 1, 0, 3, 3]), "rloo")  # tensor keys work
    expected = [
        1.0 - (2.0 + 3.0) / 2,  # -1.5
        0.0 - 6.0,
        2.0 - (1.0 + 3.0) / 2,  # 0
        0.0,                    # group of one
        6.0 - 0.0,
        3.0 - (1.0 + 2.0) / 2,  # 1.5
        0.0, 0.0,               # equal rewards
    ]
    assert torch.allclose(adv, torch.tensor(expected))


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages([1.0, 2.0], ["a"])
    with pytest.raises(ValueError, match="estimator"):
        group_advantages([1.0, 2.0], ["a", "a"], "ppo")
    with pytest.raises(ValueError, match="finite"):
        group_advantages([1.0, NAN], ["a", "a"])


def test_a_registered_estimator_is_selectable_by_name():
    @register_adv_est("test_centered_twice")
    def twice(rewards, index, eps):
        means = torch.zeros(int(index.max()) + 1, dtype=rewards.dtype).index_add(0, index, rewards)
        counts = torch.zeros_like(means).index_add(0, index, torch.ones_like(rewards))
        return 2 * (rewards - (means / counts)[index])

    try:
        assert build_config(GRPOConfig, {"estimator": "test_centered_twice"}).estimator == "test_centered_twice"
        adv = group_advantages([1.0, 3.0, 5.0], ["a", "a", "solo"], "test_centered_twice")
        assert adv.tolist() == [-2.0, 2.0, 0.0]  # a group of one still gets 0
    finally:
        ESTIMATORS.pop("test_centered_twice")
    with pytest.raises(ConfigError, match="unknown estimator 'ppo'.*grpo"):
        build_config(GRPOConfig, {"estimator": "ppo"})


def test_reinforce_pp_global_batch_baseline_hand_computed():
    adv = group_advantages(REWARDS, GROUPS, "reinforce_pp", eps=EPS)
    mean = sum(REWARDS) / 8  # 3.75
    std = math.sqrt(sum((r - mean) ** 2 for r in REWARDS) / 7)  # sqrt(69.5 / 7)
    assert torch.allclose(adv, torch.tensor([(r - mean) / (std + EPS) for r in REWARDS]), atol=1e-6)
    assert adv[3] > 0  # a response alone in its group still has the batch as its baseline
    assert adv[6] == adv[7] != 0  # and an all-equal group is not zeroed


def test_reinforce_pp_baseline_centres_groups_then_normalises_over_the_batch():
    adv = group_advantages(REWARDS, GROUPS, "reinforce_pp_baseline", eps=EPS)
    centred = [-1.0, -3.0, 0.0, 0.0, 3.0, 1.0, 0.0, 0.0]  # r - group mean; the solo row 0
    std = math.sqrt(sum(c * c for c in centred) / 7)  # batch mean is 0
    assert torch.allclose(adv, torch.tensor([c / (std + EPS) for c in centred]), atol=1e-6)
    assert group_advantages([2.0], ["x"], "reinforce_pp").tolist() == [0.0]  # a batch of one
