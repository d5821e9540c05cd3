"""PPO rewards, GAE and the value loss against hand-computed values (the policy loss, whitening and
KL controllers: test_policy_losses, test_core, test_kl)."""

from __future__ import annotations

import pytest
import torch

from raylign.algorithms.ppo import PPOConfig, gae_advantages, per_token_rewards, ppo_value_loss
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


# ---------------------------------------------------------------- config


def test_ppo_config_defaults_and_strictness():
    cfg = PPOConfig()
    assert (cfg.kl_coef, cfg.kl_clamp, cfg.gamma, cfg.lam, cfg.cliprange, cfg.cliprange_value) == (
        0.0067, True, 1.0, 1.0, 0.2, 0.2)
    assert (cfg.vf_coef, cfg.whiten_advantages, cfg.adaptive_kl, cfg.policy_loss) == (0.1, True, False, "ppo_clip")
    assert (cfg.kl_target, cfg.kl_horizon, cfg.value_model) == (0.1, 10000, "head")  # kl_target: per token
    with pytest.raises(ConfigError, match="cliprnge"):
        build_config(PPOConfig, {"cliprnge": 0.1})
    with pytest.raises(ConfigError):
        build_config(PPOConfig, {"value_model": "shared"})


def test_actor_critic_runs_in_bf16_and_returns_fp32_values(tiny_model_dir):
    """DeepSpeed bf16 casts the whole module, value head included (found on the H200: the head
    was fed fp32 hidden states and failed); forward_rows still hands back fp32 tensors."""
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.base import TrainContext
    from raylign.algorithms.ppo import ActorCritic, forward_rows

    policy = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    for separate in (False, True):
        module = ActorCritic(policy, separate=separate).to(torch.bfloat16)
        rows = [{"prompt_token_ids": [5, 6, 7], "response_token_ids": [8, 9]},
                {"prompt_token_ids": [5], "response_token_ids": [8, 9, 10]}]
        logprobs, values, batch = forward_rows(module, rows, TrainContext(0, 32))
        assert logprobs.dtype == values.dtype == torch.float32
        assert values.shape == batch["input_ids"].shape
