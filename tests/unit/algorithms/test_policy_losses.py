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


def test_gspo_one_clipped_ratio_per_sequence_by_hand():
    lp = _t([[0.1, 0.5, NAN], [-0.5, -0.5, INF]]).requires_grad_()
    old = torch.zeros(2, 3)
    adv = _t([[1.0, 1.0, 0.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]]).bool()
    out = get_policy_loss("gspo")(lp, old, adv, mask, GRPOConfig(cliprange=0.2, cliprange_high=0.4))
    s0 = math.exp((0.1 + 0.5) / 2)  # geometric-mean ratio of row 0 (row 1: exp(-0.5) = 0.607)
    # row 0: A > 0, s0 < 1.4: unclipped, -s0 on both tokens; row 1: A < 0, s1 < 0.8: clipped to -(-1)(0.8)
    assert torch.allclose(out.per_token, _t([[-s0, -s0, 0.0], [0.8, 0.8, 0.0]]), atol=1e-6)
    assert out.clipped.tolist() == [[False, False, False], [True, True, False]]
    assert torch.allclose(out.log_ratio, _t([[0.3, 0.3, 0.0], [-0.5, -0.5, 0.0]]), atol=1e-6)
    loss, weight = aggregate_sequence(out.per_token, mask)
    (loss / weight).backward()
    # GSPO's gradient: A * s * mean_t grad log pi_t -> each token of row 0 gets -s0 / 2 / 2 rows
    assert torch.allclose(lp.grad, _t([[-s0 / 4, -s0 / 4, 0.0], [0.0, 0.0, 0.0]]), atol=1e-6)


def aggregate_sequence(per_token, mask):
    from raylign.algorithms.core import aggregate

    return aggregate(per_token, mask, "sequence")


def test_clip_higher_lets_a_rising_token_through_that_the_symmetric_clip_stops():
    lp, old, adv, mask = _t([[0.2]]), _t([[0.0]]), _t([[1.0]]), torch.tensor([[True]])  # ratio 1.221
    symmetric = get_policy_loss("ppo_clip")(lp, old, adv, mask, GRPOConfig(cliprange=0.2))
    higher = get_policy_loss("ppo_clip")(lp, old, adv, mask, GRPOConfig(cliprange=0.2, cliprange_high=0.28))
    assert symmetric.per_token.item() == pytest.approx(-1.2) and symmetric.clipped.item()
    assert higher.per_token.item() == pytest.approx(-math.exp(0.2)) and not higher.clipped.item()


def test_truncated_importance_sampling_by_hand():
    from raylign.algorithms.grpo import truncated_importance_weights

    lp = _t([[0.0, -1.0, NAN]]).requires_grad_()
    sampler = _t([[-0.5, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    weights = truncated_importance_weights(lp, sampler, mask, cap=1.5)
    assert torch.allclose(weights, _t([[1.5, math.exp(-0.5), 0.0]]))  # e^0.5 = 1.65 is cut at 1.5
    config = GRPOConfig(tis_cap=1.5, loss_agg="token")
    loss_sum, weight, metrics = grpo_loss(lp, None, None, _t([2.0]), mask, config, sampler)
    # on-policy ratio 1: per token -A * w; summed over the 2 tokens
    assert loss_sum.item() == pytest.approx(-2.0 * (1.5 + math.exp(-0.5)))
    assert weight == 2.0
    assert metrics["tis_weight_mean"] == pytest.approx((1.5 + math.exp(-0.5)) / 2)
    assert metrics["tis_capped_fraction"] == 0.5
    loss_sum.backward()
    assert torch.allclose(lp.grad[:, :2], _t([[-2.0 * 1.5, -2.0 * math.exp(-0.5)]]), atol=1e-6)
    with pytest.raises(ValueError, match="tis_cap needs the samplers' log-probs"):
        grpo_loss(lp, None, None, _t([2.0]), mask, config)
