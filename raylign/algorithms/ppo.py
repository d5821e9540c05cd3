"""PPO for language models, AlpacaFarm / InstructGPT style, as pure tensor functions.

Per-token rewards (-beta * KL to the reference, the reward-model score at the last
response token), GAE advantages, whitening, the clipped policy and value losses and
the KL-coefficient controllers. See /work/shared/ALGORITHMS.md, section PPO.

All tensors are [N, T], right-padded, with a response mask [N, T] (1 on response
tokens, EOS included). Padding is selected away with `torch.where`, never multiplied,
so inf/NaN junk there cannot leak into values or gradients. Losses return
(loss_sum, weight, metrics): the trainer divides the all-reduced sum by the
all-reduced weight, so uneven shards weigh every token the same.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from raylign.config import StrictModel


class PPOConfig(StrictModel):
    """AlpacaFarm defaults (simulated feedback: kl_coef 0.0067; human feedback used 0.02)."""

    kl_coef: float = 0.0067
    kl_clamp: bool = True  # AlpacaFarm: kl_t = max(0, logpi - logref)
    gamma: float = 1.0
    lam: float = 1.0
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ppo_epochs: int = 2
    whiten_advantages: bool = True
    adaptive_kl: bool = False
    kl_target: float = 6.0
    kl_horizon: int = 10000
    value_model: Literal["head", "separate"] = "head"


# ---------------------------------------------------------------- masking helpers


def check_same_shape(**tensors: Tensor | None) -> None:
    """Raise a ValueError naming every [N, T] input whose shape differs from the first."""
    named = {k: v for k, v in tensors.items() if v is not None}
    shapes = {k: tuple(v.shape) for k, v in named.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        listing = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"expected [N, T] tensors of one shape, got {listing}")


def _bool_mask(mask: Tensor, like: Tensor) -> Tensor:
    return mask.to(like.device).bool()


def masked_fill_zero(x: Tensor, mask: Tensor) -> Tensor:
    """x on response tokens, exactly 0 elsewhere (and no gradient from elsewhere)."""
    return torch.where(mask, x, torch.zeros_like(x))


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last response token of each row [N] (0 for a row without any)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(-1).values


def token_k3(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Per-token k3 KL(pi || ref) estimate, exp(d) - d - 1 with d = ref - logp; 0 on padding.

    Same estimator as raylign.algorithms.kl.kl_k3, kept per token so callers can
    sum it into a token-level loss instead of taking a per-row mean.
    """
    delta = masked_fill_zero(ref_logprobs.to(logprobs) - logprobs, mask)
    return masked_fill_zero(delta.exp() - delta - 1.0, mask)


def clipped_surrogate(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                      cliprange: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO loss max(-A * rho, -A * clip(rho, 1 +- eps)), 0 on padding.

    Returns (per_token_loss, clipped, log_ratio): `clipped` marks tokens where the
    clipped branch is the larger (its gradient is then zero); log_ratio is masked.
    """
    log_ratio = masked_fill_zero(logprobs - old_logprobs.to(logprobs), mask)
    ratio = log_ratio.exp()
    adv = masked_fill_zero(advantages.to(logprobs), mask)
    unclipped = -adv * ratio
    clipped_loss = -adv * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    per_token = masked_fill_zero(torch.maximum(unclipped, clipped_loss), mask)
    return per_token, mask & (clipped_loss > unclipped), log_ratio


def safe_mean(total: Tensor | float, count: float) -> float:
    """total / count as a detached float, 0 when count is 0 (an empty shard)."""
    return float(total) / count if count else 0.0


# ---------------------------------------------------------------- rewards and advantages


def per_token_rewards(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, scores: Tensor,
                      kl_coef: float, clamp: bool = True) -> tuple[Tensor, Tensor]:
    """r_t = -kl_coef * kl_t, plus the reward-model score at the last response token.

    kl_t = logpi - logref (the k1 estimate on the sampled token), clamped at 0 when
    `clamp` (AlpacaFarm) so a token the policy finds less likely than the reference
    is not paid a bonus. scores [N]. Returns (rewards, kl), both [N, T], 0 on padding;
    a row without response tokens gets no score (there is no token to credit).
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != (logprobs.shape[0],):
        raise ValueError(f"scores must be [N] = [{logprobs.shape[0]}], got {tuple(scores.shape)}")
    m = _bool_mask(mask, logprobs)
    with torch.no_grad():
        kl = masked_fill_zero(logprobs.detach() - ref_logprobs.detach().to(logprobs), m)
        if clamp:
            kl = kl.clamp(min=0.0)
        rewards = -kl_coef * kl
        last = last_token_index(m)
        has_response = m.any(-1)
        score = torch.where(has_response, scores.to(rewards), torch.zeros_like(rewards[:, 0]))
        rewards = rewards.scatter_add(1, last.unsqueeze(1), score.unsqueeze(1))
    return rewards, kl


def gae_advantages(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0,
                   lam: float = 1.0) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over the response tokens of each row.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, where
    t+1 is the next *response* token: after the last one the episode ends (no
    bootstrap from padding values). Returns (advantages, returns = A + V), both
    detached and 0 on padding.
    """
    check_same_shape(rewards=rewards, values=values, mask=mask)
    m = _bool_mask(mask, rewards)
    with torch.no_grad():
        r = masked_fill_zero(rewards.detach().float(), m)
        v = masked_fill_zero(values.detach().float(), m)
        next_value = torch.zeros_like(r[:, 0])
        next_adv = torch.zeros_like(r[:, 0])
        advantages = torch.zeros_like(r)
        for t in reversed(range(r.shape[1])):
            on = m[:, t]
            delta = r[:, t] + gamma * next_value - v[:, t]
            adv = delta + gamma * lam * next_adv
            advantages[:, t] = torch.where(on, adv, torch.zeros_like(adv))
            next_value = torch.where(on, v[:, t], next_value)
            next_adv = torch.where(on, adv, next_adv)
        returns = masked_fill_zero(advantages + v, m)
    return advantages.to(rewards.dtype), returns.to(rewards.dtype)


def masked_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sum, sum of squares, count) of x over response tokens, as float64 0-dim tensors.

    Sums rather than means, so the trainer can all-reduce them across ranks and
    whiten with the global batch statistics (`moments_to_mean_var`, `whiten_with`).
    """
    check_same_shape(x=x, mask=mask)
    m = _bool_mask(mask, x)
    xd = masked_fill_zero(x.detach().double(), m)
    return xd.sum(), (xd * xd).sum(), m.sum().double()


def moments_to_mean_var(total: Tensor, sumsq: Tensor, count: Tensor,
                        unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and variance from summed moments (Bessel-corrected when unbiased and count > 1)."""
    count = torch.as_tensor(count, dtype=torch.float64)
    n = count.clamp(min=1.0)
    mean = torch.as_tensor(total, dtype=torch.float64) / n
    var = (torch.as_tensor(sumsq, dtype=torch.float64) / n - mean * mean).clamp(min=0.0)
    if unbiased:
        var = torch.where(count > 1, var * count / (count - 1).clamp(min=1.0), var)
    return mean, var


def whiten_with(x: Tensor, mean: Tensor | float, var: Tensor | float, mask: Tensor,
                shift_mean: bool = True) -> Tensor:
    """(x - mean) / sqrt(var + 1e-8) on response tokens, 0 on padding.

    With shift_mean=False the mean is added back (scale only), as PPO implementations
    do for rewards. mean/var come from the (possibly all-reduced) moments.
    """
    check_same_shape(x=x, mask=mask)
    m = _bool_mask(mask, x)
    mean = torch.as_tensor(mean, dtype=torch.float64, device=x.device)
    var = torch.as_tensor(var, dtype=torch.float64, device=x.device)
    xd = masked_fill_zero(x.double(), m)
    out = (xd - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return masked_fill_zero(out, m).to(x.dtype)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """Whiten x over the response tokens of this batch (single process)."""
    mean, var = moments_to_mean_var(*masked_moments(x, mask))
    return whiten_with(x, mean, var, mask, shift_mean)


# ---------------------------------------------------------------- losses


def ppo_policy_loss(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                    cliprange: float = 0.2) -> tuple[Tensor, float, dict[str, float]]:
    """Clipped surrogate summed over response tokens: returns (loss_sum, #tokens, metrics).

    Metrics (per-call means over response tokens): policy_loss, clipfrac (fraction of
    tokens where clipping is active), approx_kl = mean 0.5 * (logpi - logpi_old)^2,
    ratio_mean.
    """
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    m = _bool_mask(mask, logprobs)
    per_token, clipped, log_ratio = clipped_surrogate(logprobs, old_logprobs, advantages, m, cliprange)
    loss_sum = per_token.sum()
    count = float(m.sum())
    with torch.no_grad():
        metrics = {
            "policy_loss": safe_mean(loss_sum, count),
            "clipfrac": safe_mean(clipped.sum(), count),
            "approx_kl": safe_mean((0.5 * log_ratio * log_ratio).sum(), count),
            "ratio_mean": safe_mean(masked_fill_zero(log_ratio.exp(), m).sum(), count),
        }
    return loss_sum, count, metrics


def ppo_value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor,
                   cliprange_value: float = 0.2) -> tuple[Tensor, float, dict[str, float]]:
    """0.5 * max((V - R)^2, (clip(V, V_old +- c) - R)^2) summed over response tokens.

    Returns (loss_sum, #tokens, metrics); the trainer applies vf_coef. Clipping the
    value around the rollout's value keeps the critic from jumping in one epoch.
    """
    check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    m = _bool_mask(mask, values)
    v = masked_fill_zero(values, m)
    old = masked_fill_zero(old_values.to(values), m)
    ret = masked_fill_zero(returns.to(values), m)
    v_clipped = old + (v - old).clamp(-cliprange_value, cliprange_value)
    err = (v - ret) ** 2
    err_clipped = (v_clipped - ret) ** 2
    per_token = masked_fill_zero(0.5 * torch.maximum(err, err_clipped), m)
    loss_sum = per_token.sum()
    count = float(m.sum())
    with torch.no_grad():
        metrics = {
            "value_loss": safe_mean(loss_sum, count),
            "value_clipfrac": safe_mean((m & (err_clipped > err)).sum(), count),
            "value_mean": safe_mean(v.sum(), count),
            "value_error": safe_mean(err.sum(), count),
        }
    return loss_sum, count, metrics


# ---------------------------------------------------------------- KL coefficient controllers


class FixedKLController:
    """A constant KL coefficient; `update` is a no-op kept for a uniform interface."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


class AdaptiveKLController:
    """Ziegler et al. (2019): steer the observed KL towards `target`.

    error = clip(KL / target - 1, -0.2, 0.2); value *= 1 + error * n_steps / horizon,
    where n_steps is the number of samples (or steps) seen since the last update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got {target}, {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def make_kl_controller(config: PPOConfig) -> FixedKLController | AdaptiveKLController:
    """The controller a PPOConfig asks for."""
    if config.adaptive_kl:
        return AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
    return FixedKLController(config.kl_coef)
