"""Online DPO pair building and its use of the shared DPO loss."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.online_dpo import OnlineDPOConfig, make_pairs, online_dpo_loss
from raylign.config import ConfigError, build_config


def _row(uid, reward, name):
    return {"prompt_uid": uid, "reward": reward, "response": name, "response_token_ids": [1, 2],
            "finish_reason": "stop"}


ROWS = [
    _row("p1", 0.2, "p1-mid"),
    _row("p2", 0.5, "p2-a"),
    _row("p1", 0.9, "p1-best"),
    _row("p3", 4.0, "p3-alone"),
    _row("p2", 0.5, "p2-b"),         # p2: equal rewards, never a pair
    _row("p1", 0.1, "p1-worst"),
    _row("p4", 1.0, "p4-low"),
    _row("p4", 1.05, "p4-high"),     # gap 0.05
    _row("p5", 1.0, "p5-best-first"),
    _row("p5", 1.0, "p5-best-second"),
    _row("p5", -1.0, "p5-worst"),
]


def _names(pairs):
    return [(c["response"], r["response"]) for c, r in pairs]


def test_make_pairs_best_vs_worst_per_prompt():
    pairs = make_pairs(ROWS)
    assert _names(pairs) == [("p1-best", "p1-worst"), ("p4-high", "p4-low"), ("p5-best-first", "p5-worst")]
    assert pairs[0][0] is ROWS[2]


def test_make_pairs_min_reward_gap():
    assert _names(make_pairs(ROWS, min_reward_gap=0.1)) == [("p1-best", "p1-worst"), ("p5-best-first", "p5-worst")]
    assert _names(make_pairs(ROWS, min_reward_gap=2.0)) == []  # p5 gap is exactly 2.0: not > 2.0
    assert make_pairs([]) == []
    with pytest.raises(ValueError):
        make_pairs(ROWS, min_reward_gap=-1.0)


def test_online_dpo_loss_uses_config():
    # h = (-1 - -1.5) - (-2 - -1.5) = 1; loss = -log sigma(beta * h) = log(1 + exp(-beta))
    chosen, rejected = torch.tensor([-1.0]), torch.tensor([-2.0])
    ref = torch.tensor([-1.5])
    loss_sum, weight, _ = online_dpo_loss(chosen, rejected, ref, ref, OnlineDPOConfig(beta=0.1))
    assert loss_sum.item() == pytest.approx(math.log(1 + math.exp(-0.1)))
    assert weight == 1.0
    ipo, _, _ = online_dpo_loss(chosen, rejected, ref, ref, OnlineDPOConfig(beta=0.25, loss_type="ipo"))
    assert ipo.item() == pytest.approx((1.0 - 1 / (2 * 0.25)) ** 2)


def test_online_dpo_config():
    cfg = OnlineDPOConfig()
    assert (cfg.beta, cfg.loss_type, cfg.min_reward_gap) == (0.1, "sigmoid", 0.0)
    with pytest.raises(ConfigError):
        build_config(OnlineDPOConfig, {"loss_type": "hinge_typo"})
