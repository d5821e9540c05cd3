"""Policy losses by name (`register_policy_loss`), against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.grpo import GRPOConfig, grpo_loss
from raylign.algorithms.policy_losses import (
    POLICY_LOSSES,
    PolicyLossOutput,
    get_policy_loss,
    policy_loss_metrics,
    register_policy_loss,
)
from raylign.algorithms.ppo import PPOConfig, ppo_policy_loss
from raylign.config import ConfigError, build_config

NAN, INF = float("nan"), float("inf")


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _policy_case():
    lp = _t([[0.1, 0.5, NAN], [-0.5, -0.5, INF]])
    old = _t([[0.0, 0.0, -INF], [0.0, 0.0, NAN]])
    adv = _t([[1.0, 2.0, NAN], [-1.0, 1.0, INF]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    return lp, old, adv, mask


def test_ppo_clip_by_hand_with_its_metrics():
    lp, old, adv, mask = _policy_case()
    out = get_policy_loss("ppo_clip")(lp, old, adv, mask.bool(), PPOConfig(cliprange=0.2))
    loss_sum, weight, m = out.per_token.sum(), float(mask.sum()), policy_loss_metrics(out, mask)
    t0 = -1.0 * math.exp(0.1)             # ratio 1.105 inside [0.8, 1.2]
    t1 = max(-2.0 * math.exp(0.5), -2.0 * 1.2)  # ratio 1.65 clipped: -2.4
    t2 = max(1.0 * math.exp(-0.5), 1.0 * 0.8)   # A < 0, ratio 0.61 clipped: 0.8
    t3 = max(-math.exp(-0.5), -0.8)             # A > 0, low ratio is not clipped
    assert loss_sum.item() == pytest.approx(t0 + t1 + t2 + t3, rel=1e-6)
    assert weight == 4.0
    assert m["policy_loss"] == pytest.approx((t0 + t1 + t2 + t3) / 4, rel=1e-6)
    assert m["clipfrac"] == pytest.approx(2 / 4)
    assert m["approx_kl"] == pytest.approx(0.5 * (0.01 + 0.25 + 0.25 + 0.25) / 4, rel=1e-6)
    assert m["ratio_mean"] == pytest.approx((math.exp(0.1) + math.exp(0.5) + 2 * math.exp(-0.5)) / 4, rel=1e-6)


def test_ppo_clip_gradient_signs_and_masking():
    lp, old, adv, mask = _policy_case()
    lp = lp.clone().requires_grad_(True)
    loss_sum = get_policy_loss("ppo_clip")(lp, old, adv, mask.bool(), PPOConfig()).per_token.sum()
    loss_sum.backward()
    g = lp.grad
    assert torch.isfinite(g).all()
    # d/dlp of -A * exp(lp - old) = -A * ratio; clipped tokens get 0; padding 0
    expected = _t([[-math.exp(0.1), 0.0, 0.0], [0.0, -math.exp(-0.5), 0.0]])
    assert torch.allclose(g, expected, atol=1e-6)
    # a descent step raises the log-prob of positive-advantage tokens
    assert g[0, 0] < 0 and g[1, 1] < 0


def test_ppo_policy_loss_sums_the_registered_loss_and_checks_shapes():
    lp, old, adv, mask = _policy_case()
    loss_sum, weight, metrics = ppo_policy_loss(lp, old, adv, mask, PPOConfig())
    assert weight == 4.0 and metrics["clipfrac"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="advantages"):
        ppo_policy_loss(lp, old, adv[:, :2], mask, PPOConfig())


def test_a_registered_loss_is_selectable_by_name_and_unknown_names_fail():
    @register_policy_loss("test_plain_pg")
    def plain(logprobs, old_logprobs, advantages, mask, config):
        per_token = -(advantages * logprobs).masked_fill(~mask, 0.0)
        return PolicyLossOutput(per_token, torch.zeros_like(mask), torch.zeros_like(logprobs))

    try:
        config = build_config(GRPOConfig, {"policy_loss": "test_plain_pg"})
        lp, old, adv, mask = _t([[-1.0, -2.0]]), _t([[-1.0, -2.0]]), torch.tensor([1.0]), torch.tensor([[1, 1]])
        loss_sum, weight, _ = grpo_loss(lp, old, None, adv, mask, config)
        assert (loss_sum.item(), weight) == (3.0, 2.0)
        with pytest.raises(ValueError, match="twice"):
            register_policy_loss("test_plain_pg")(plain)
    finally:
        POLICY_LOSSES.pop("test_plain_pg")
    with pytest.raises(ConfigError, match="unknown policy loss 'nope'.*ppo_clip"):
        build_config(GRPOConfig, {"policy_loss": "nope"})
