"""PPO rewards, GAE, whitening, losses and KL controllers against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.ppo import (
    AdaptiveKLController,
    FixedKLController,
    PPOConfig,
    gae_advantages,
    make_kl_controller,
    masked_moments,
    masked_whiten,
    moments_to_mean_var,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten_with,
)
from raylign.config import ConfigError, build_config

NAN, INF = float("nan"), float("inf")


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- per-token rewards

LP = _t([[-1.0, -2.0, -0.5, NAN], [INF, -1.0, -3.0, -INF]])
REF = _t([[-1.5, -1.0, -0.5, NAN], [NAN, -2.0, -2.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 0]])  # row 1 has a masked "prompt" position 0


def test_per_token_rewards_clamped_kl_and_score_at_last_token():
    rewards, kl = per_token_rewards(LP, REF, MASK, torch.tensor([2.0, -1.0]), kl_coef=0.1, clamp=True)
    # kl = logp - ref: row 0: 0.5, -1.0 -> 0, 0.0; row 1: 1.0, -1.0 -> 0
    assert torch.allclose(kl, _t([[0.5, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    expected = _t([[-0.1 * 0.5, 0.0, 2.0, 0.0],
                   [0.0, -0.1 * 1.0, -1.0, 0.0]])
    assert torch.allclose(rewards, expected)
    assert torch.isfinite(rewards).all() and torch.isfinite(kl).all()


def test_per_token_rewards_unclamped():
    rewards, kl = per_token_rewards(LP, REF, MASK, torch.tensor([2.0, -1.0]), kl_coef=0.1, clamp=False)
    assert torch.allclose(kl, _t([[0.5, -1.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0]]))
    expected = _t([[-0.05, 0.1, 2.0 - 0.0, 0.0],
                   [0.0, -0.1, -1.0 + 0.1, 0.0]])
    assert torch.allclose(rewards, expected)


def test_per_token_rewards_shape_errors():
    with pytest.raises(ValueError, match="scores"):
        per_token_rewards(LP, REF, MASK, torch.tensor([1.0]), 0.1)
    with pytest.raises(ValueError, match="same shape|one shape"):
        per_token_rewards(LP, REF[:, :3], MASK, torch.tensor([1.0, 2.0]), 0.1)


# ---------------------------------------------------------------- GAE


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = _t([[0.0, 0.0, 1.0, NAN]])
    values = _t([[0.5, 0.6, 0.7, NAN]])
    adv, ret = gae_advantages(rewards, values, torch.tensor([[1, 1, 1, 0]]), 1.0, 1.0)
    # A_2 = 1 - 0.7; A_1 = 0 + 0.7 - 0.6 + A_2; A_0 = 0 + 0.6 - 0.5 + A_1
    assert torch.allclose(adv, _t([[0.5, 0.4, 0.3, 0.0]]))
    assert torch.allclose(ret, _t([[1.0, 1.0, 1.0, 0.0]]))


def test_gae_discounted():
    rewards = _t([[0.0, 0.0, 1.0, 0.0]])
    values = _t([[0.5, 0.6, 0.7, 123.0]])  # the padded value must not be bootstrapped
    adv, ret = gae_advantages(rewards, values, torch.tensor([[1, 1, 1, 0]]), gamma=0.9, lam=0.5)
    a2 = 1.0 - 0.7
    a1 = (0.9 * 0.7 - 0.6) + 0.9 * 0.5 * a2  # 0.03 + 0.135
    a0 = (0.9 * 0.6 - 0.5) + 0.9 * 0.5 * a1  # 0.04 + 0.07425
    assert torch.allclose(adv, _t([[a0, a1, a2, 0.0]]))
    assert torch.allclose(ret, _t([[a0 + 0.5, a1 + 0.6, a2 + 0.7, 0.0]]))


def test_gae_prompt_prefix_and_padding_values_ignored():
    rewards = _t([[5.0, 0.0, 1.0, 9.0]])
    values = _t([[INF, 0.5, 0.2, NAN]])
    adv, ret = gae_advantages(rewards, values, torch.tensor([[0, 1, 1, 0]]))
    assert torch.allclose(adv, _t([[0.0, 0.2 - 0.5 + 0.8, 1.0 - 0.2, 0.0]]))
    assert torch.allclose(ret, _t([[0.0, 1.0, 1.0, 0.0]]))


def test_gae_rows_of_different_lengths():
    rewards = _t([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    values = _t([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    adv, _ = gae_advantages(rewards, values, torch.tensor([[1, 1, 0], [1, 0, 0]]))
    # row 0: A_1 = 2 - 1 = 1; A_0 = 0 + 1 - 1 + 1 = 1.  row 1: A_0 = 3 - 1 = 2
    assert torch.allclose(adv, _t([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))


# ---------------------------------------------------------------- whitening


def test_masked_moments_and_whiten():
    x = _t([[1.0, 3.0, NAN], [5.0, INF, -INF]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    total, sumsq, count = masked_moments(x, mask)
    assert (float(total), float(sumsq), float(count)) == (9.0, 1.0 + 9.0 + 25.0, 3.0)
    mean, var = moments_to_mean_var(total, sumsq, count)
    assert float(mean) == pytest.approx(3.0)
    assert float(var) == pytest.approx((4.0 + 0.0 + 4.0) / 2)  # unbiased
    w = masked_whiten(x, mask)
    assert torch.allclose(w, _t([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), atol=1e-6)
    w_scale = masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(w_scale, _t([[-1.0 + 3.0, 3.0, 0.0], [1.0 + 3.0, 0.0, 0.0]]), atol=1e-6)


def test_whiten_with_summed_moments_matches_single_process():
    a, b = _t([[1.0, 2.0, 7.0]]), _t([[4.0, 0.5, NAN]])
    ma, mb = torch.tensor([[1, 1, 1]]), torch.tensor([[1, 1, 0]])
    # "all-reduce": add the two ranks' moments
    moments = [sa + sb for sa, sb in zip(masked_moments(a, ma), masked_moments(b, mb))]
    mean, var = moments_to_mean_var(*moments)
    whole = masked_whiten(torch.cat([a, b]), torch.cat([ma, mb]))
    assert torch.allclose(torch.cat([whiten_with(a, mean, var, ma), whiten_with(b, mean, var, mb)]), whole)
    values = [1.0, 2.0, 7.0, 4.0, 0.5]
    m = sum(values) / 5
    v = sum((u - m) ** 2 for u in values) / 4
    assert whole[0, 0].item() == pytest.approx((1.0 - m) / math.sqrt(v), rel=1e-5)


# ---------------------------------------------------------------- policy loss


def _policy_case():
    lp = _t([[0.1, 0.5, NAN], [-0.5, -0.5, INF]])
    old = _t([[0.0, 0.0, -INF], [0.0, 0.0, NAN]])
    adv = _t([[1.0, 2.0, NAN], [-1.0, 1.0, INF]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    return lp, old, adv, mask


def test_ppo_policy_loss_hand_computed():
    lp, old, adv, mask = _policy_case()
    loss_sum, weight, m = ppo_policy_loss(lp, old, adv, mask, cliprange=0.2)
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


def test_ppo_policy_gradient_signs_and_masking():
    lp, old, adv, mask = _policy_case()
    lp = lp.clone().requires_grad_(True)
    loss_sum, _, _ = ppo_policy_loss(lp, old, adv, mask)
    loss_sum.backward()
    g = lp.grad
    assert torch.isfinite(g).all()
    # d/dlp of -A * exp(lp - old) = -A * ratio; clipped tokens get 0; padding 0
    expected = _t([[-math.exp(0.1), 0.0, 0.0], [0.0, -math.exp(-0.5), 0.0]])
    assert torch.allclose(g, expected, atol=1e-6)
    # a descent step raises the log-prob of positive-advantage tokens
    assert g[0, 0] < 0 and g[1, 1] < 0


def test_ppo_policy_loss_shape_error():
    lp, old, adv, mask = _policy_case()
    with pytest.raises(ValueError, match="advantages"):
        ppo_policy_loss(lp, old, adv[:, :2], mask)


# ---------------------------------------------------------------- value loss


def test_ppo_value_loss_hand_computed():
    values = _t([[1.0, 0.0, 3.0, NAN]])
    old = _t([[0.5, 0.0, 2.5, INF]])
    returns = _t([[2.0, 1.0, 2.0, NAN]])
    values.requires_grad_(True)
    loss_sum, weight, m = ppo_value_loss(values, old, returns, torch.tensor([[1, 1, 1, 0]]), 0.2)
    t0 = 0.5 * max((1.0 - 2.0) ** 2, (0.7 - 2.0) ** 2)  # clipped value 0.7 is worse: 0.845
    t1 = 0.5 * max((0.0 - 1.0) ** 2, (0.0 - 1.0) ** 2)  # 0.5
    t2 = 0.5 * max((3.0 - 2.0) ** 2, (2.7 - 2.0) ** 2)  # 0.5
    assert loss_sum.item() == pytest.approx(t0 + t1 + t2)
    assert weight == 3.0
    assert m["value_loss"] == pytest.approx((t0 + t1 + t2) / 3)
    assert m["value_clipfrac"] == pytest.approx(1 / 3)
    loss_sum.backward()
    # token 0: clipped branch active, no gradient; token 1: V - R = -1; token 2: V - R = 1
    assert torch.allclose(values.grad, _t([[0.0, -1.0, 1.0, 0.0]]))


# ---------------------------------------------------------------- KL controllers and config


def test_adaptive_kl_controller():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.value == 0.1
    ctl.update(9.0, 1000)  # error 0.5 clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 1000 / 10000))
    ctl.update(5.4, 1000)  # error -0.1
    assert ctl.value == pytest.approx(0.1 * 1.02 * (1 - 0.1 * 0.1))
    ctl.update(0.0, 1000)  # error -1 clipped to -0.2
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.99 * 0.98)


def test_fixed_kl_controller_and_factory():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 10) == 0.05 and ctl.value == 0.05
    assert isinstance(make_kl_controller(PPOConfig()), FixedKLController)
    adaptive = make_kl_controller(PPOConfig(adaptive_kl=True))
    assert isinstance(adaptive, AdaptiveKLController) and adaptive.value == pytest.approx(0.0067)


def test_ppo_config_defaults_and_strictness():
    cfg = PPOConfig()
    assert (cfg.kl_coef, cfg.kl_clamp, cfg.gamma, cfg.lam, cfg.cliprange, cfg.cliprange_value) == (
        0.0067, True, 1.0, 1.0, 0.2, 0.2)
    assert (cfg.vf_coef, cfg.ppo_epochs, cfg.whiten_advantages, cfg.adaptive_kl) == (0.1, 2, True, False)
    assert (cfg.kl_target, cfg.kl_horizon, cfg.value_model) == (6.0, 10000, "head")
    with pytest.raises(ConfigError, match="cliprnge"):
        build_config(PPOConfig, {"cliprnge": 0.1})
    with pytest.raises(ConfigError):
        build_config(PPOConfig, {"value_model": "shared"})


def test_actor_critic_runs_in_bf16_and_returns_fp32_values(tiny_model_dir):
    """DeepSpeed bf16 casts the whole module, value head included (found on the H200: the head
    was fed fp32 hidden states and failed); forward_rows still hands back fp32 tensors."""
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.base import TrainContext
    from raylign.algorithms.ppo_job import ActorCritic, forward_rows

    policy = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    for separate in (False, True):
        module = ActorCritic(policy, separate=separate).to(torch.bfloat16)
        rows = [{"prompt_token_ids": [5, 6, 7], "response_token_ids": [8, 9]},
                {"prompt_token_ids": [5], "response_token_ids": [8, 9, 10]}]
        logprobs, values, batch = forward_rows(module, rows, TrainContext(0, 32))
        assert logprobs.dtype == values.dtype == torch.float32
        assert values.shape == batch["input_ids"].shape
