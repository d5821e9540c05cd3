"""The GRPO loss (group advantages broadcast over tokens, clipped, + k3 KL) against hand values;
the estimators themselves: test_estimators."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.grpo import GRPOConfig, grpo_loss
from raylign.config import ConfigError, build_config

NAN, INF = float("nan"), float("inf")


def cfg(**settings) -> GRPOConfig:
    return GRPOConfig(**settings)


def _case():
    lp = torch.tensor([[0.1, 0.5, NAN], [-0.5, INF, -INF]])
    old = torch.tensor([[0.0, 0.0, NAN], [0.0, NAN, 3.0]])
    ref = torch.tensor([[0.0, 0.5, INF], [0.0, NAN, NAN]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = torch.tensor([1.0, -1.0])
    return lp, old, ref, adv, mask


T00 = -math.exp(0.1)          # A = 1, ratio 1.105: unclipped
T01 = -1.2                    # A = 1, ratio 1.65: clipped at 1.2
T10 = 0.8                     # A = -1, ratio 0.61: clipped at 0.8
K00 = math.exp(-0.1) + 0.1 - 1  # k3 with d = ref - logp = -0.1
K10 = math.exp(0.5) - 0.5 - 1   # d = 0.5


def test_grpo_loss_token_aggregation():
    lp, old, ref, adv, mask = _case()
    loss_sum, weight, m = grpo_loss(lp, old, None, adv, mask, cfg(cliprange=0.2, kl_coef=0.0, loss_agg="token"))
    assert loss_sum.item() == pytest.approx(T00 + T01 + T10, rel=1e-6)
    assert weight == 3.0
    assert m["clipfrac"] == pytest.approx(2 / 3)
    assert m["loss"] == pytest.approx((T00 + T01 + T10) / 3, rel=1e-6)
    assert "kl" not in m


def test_grpo_loss_sequence_aggregation():
    lp, old, ref, adv, mask = _case()
    loss_sum, weight, _ = grpo_loss(lp, old, None, adv, mask, cfg(loss_agg="sequence"))
    assert loss_sum.item() == pytest.approx((T00 + T01) / 2 + T10 / 1, rel=1e-6)
    assert weight == 2.0


def test_grpo_loss_with_k3_kl():
    lp, old, ref, adv, mask = _case()
    loss_sum, weight, m = grpo_loss(lp, old, ref, adv, mask, cfg(kl_coef=0.1, loss_agg="token"))
    assert loss_sum.item() == pytest.approx(T00 + T01 + T10 + 0.1 * (K00 + 0.0 + K10), rel=1e-6)
    assert m["kl"] == pytest.approx((K00 + K10) / 3, rel=1e-6)
    seq_sum, _, _ = grpo_loss(lp, old, ref, adv, mask, cfg(kl_coef=0.1, loss_agg="sequence"))
    assert seq_sum.item() == pytest.approx((T00 + T01 + 0.1 * K00) / 2 + (T10 + 0.1 * K10), rel=1e-6)


def test_grpo_gradient_sign_and_padding():
    lp, old, ref, adv, mask = _case()
    lp = lp.clone().requires_grad_(True)
    loss_sum, _, _ = grpo_loss(lp, None, None, adv, mask, cfg())  # on-policy: ratio 1, loss -A per token
    assert loss_sum.item() == pytest.approx(-1.0 - 1.0 + 1.0)
    loss_sum.backward()
    assert torch.isfinite(lp.grad).all()
    # positive advantage: negative gradient, so a descent step raises those log-probs
    assert torch.allclose(lp.grad, torch.tensor([[-1.0, -1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_grpo_kl_gradient_pulls_towards_reference():
    lp = torch.tensor([[0.1, -0.5]], requires_grad=True)
    ref = torch.tensor([[0.0, 0.0]])
    loss_sum, _, _ = grpo_loss(lp, None, ref, torch.tensor([0.0]), torch.tensor([[1, 1]]), cfg(kl_coef=1.0))
    loss_sum.backward()
    # d/dlp [exp(ref - lp) - (ref - lp) - 1] = 1 - exp(ref - lp)
    assert torch.allclose(lp.grad, torch.tensor([[1 - math.exp(-0.1), 1 - math.exp(0.5)]]))
    assert lp.grad[0, 0] > 0 and lp.grad[0, 1] < 0


def test_sequence_aggregation_skips_empty_rows():
    lp = torch.tensor([[-1.0, -1.0], [NAN, NAN]])
    loss_sum, weight, _ = grpo_loss(lp, None, None, torch.tensor([2.0, 5.0]), torch.tensor([[1, 1], [0, 0]]),
                                    cfg(loss_agg="sequence"))
    assert loss_sum.item() == pytest.approx(-2.0) and weight == 1.0


def test_grpo_loss_errors():
    lp, old, ref, adv, mask = _case()
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(lp, old, None, adv[:1], mask, cfg())
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(lp, old, None, adv, mask, cfg(kl_coef=0.1))
    with pytest.raises(ValueError, match="one shape"):
        grpo_loss(lp, old, None, adv, mask[:, :2], cfg())
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(lp, old, None, adv, mask, cfg().model_construct(**{**cfg().model_dump(), "loss_agg": "batch"}))


def test_grpo_config():
    config = GRPOConfig()
    assert (config.estimator, config.policy_loss, config.cliprange, config.kl_coef, config.loss_agg, config.eps) == (
        "grpo", "ppo_clip", 0.2, 0.0, "token", 1e-6)
    assert build_config(GRPOConfig, {"estimator": "rloo"}).estimator == "rloo"
    with pytest.raises(ConfigError):
        build_config(GRPOConfig, {"estimator": "ppo"})
    with pytest.raises(ConfigError, match="klcoef"):
        build_config(GRPOConfig, {"klcoef": 0.1})


def test_grpo_loss_takes_the_controllers_coefficient():
    lp, old, ref, adv, mask = _case()
    loss_sum, _, m = grpo_loss(lp, old, ref, adv, mask, cfg(kl_coef=0.1), kl_coef=0.5)
    assert loss_sum.item() == pytest.approx(T00 + T01 + T10 + 0.5 * (K00 + K10), rel=1e-6)
    assert m["kl_coef"] == 0.5


def test_adaptive_kl_moves_the_coefficient_and_survives_a_restart():
    from raylign.algorithms.grpo import GRPOAlgorithm

    config = cfg(kl_coef=0.2, adaptive_kl=True, kl_target=0.05, kl_horizon=64)
    trained = GRPOAlgorithm(config, max_length=64)
    trained.after_update({"kl": 0.5, "grpo_rollouts": 32.0})  # 10x the target: error clipped to +0.2
    assert trained.kl.value == pytest.approx(0.2 * (1 + 0.2 * 32 / 64))
    trained.after_update({"kl": 0.045, "grpo_rollouts": 32.0})  # error -0.1
    assert trained.kl.value == pytest.approx(0.2 * 1.1 * (1 - 0.1 * 32 / 64))
    restarted = GRPOAlgorithm(config, max_length=64)
    restarted.load_update_state_dict(trained.update_state_dict())
    assert restarted.kl.value == trained.kl.value
    fixed = GRPOAlgorithm(cfg(kl_coef=0.2), max_length=64)
    fixed.after_update({"kl": 0.5, "grpo_rollouts": 32.0})
    assert fixed.kl.value == 0.2 and fixed.update_state_dict() == {}


def test_adaptive_kl_needs_a_starting_coefficient():
    with pytest.raises(ConfigError, match="kl_coef > 0"):
        build_config(GRPOConfig, {"adaptive_kl": True})
    with pytest.raises(ConfigError, match="kl_target"):
        build_config(GRPOConfig, {"kl_coef": 0.1, "adaptive_kl": True, "kl_target": 0})


def test_a_check_across_settings_is_one_short_line():
    with pytest.raises(ConfigError) as err:
        build_config(GRPOConfig, {"adaptive_kl": True}, "jobs/x.yaml")
    assert str(err.value) == ("jobs/x.yaml: Value error, adaptive_kl steers kl_coef multiplicatively: "
                              "set kl_coef > 0 as its start")
