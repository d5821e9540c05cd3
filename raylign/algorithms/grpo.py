"""GRPO / Dr GRPO / RLOO: group-relative advantages and the clipped surrogate loss.

No critic: k responses are sampled per prompt and each response's advantage is its
reward relative to the others of its group, broadcast to all its tokens.
- grpo    (Shao et al., 2024, DeepSeekMath): A = (r - mean_group) / (std_group + eps)
- dr_grpo (Liu et al., 2025, "Understanding R1-Zero-like training"): A = r - mean_group
  (no std scaling, which over-weights near-uniform groups)
- rloo    (Ahmadian et al., 2024): A = r - mean of the other k-1 rewards of the group
The loss is the PPO clipped surrogate on per-token ratios to the rollout policy, plus
optionally kl_coef * k3 KL to the frozen reference, aggregated per token or per sequence.
"""

from __future__ import annotations

from typing import Hashable, Literal, Sequence

import torch
from torch import Tensor

from raylign.algorithms.ppo import (
    check_same_shape,
    clipped_surrogate,
    masked_fill_zero,
    safe_mean,
    token_k3,
)
from raylign.config import StrictModel

Estimator = Literal["grpo", "rloo", "dr_grpo"]
LossAgg = Literal["token", "sequence"]


class GRPOConfig(StrictModel):
    estimator: Estimator = "grpo"
    cliprange: float = 0.2
    kl_coef: float = 0.0  # > 0 adds k3 KL to the reference (needs reference log-probs)
    epochs: int = 1
    loss_agg: LossAgg = "token"
    eps: float = 1e-6


def _group_index(group_ids: Sequence[Hashable] | Tensor, n: int) -> Tensor:
    """Dense group index per row (first-seen order) for any hashable group keys."""
    keys = group_ids.tolist() if isinstance(group_ids, Tensor) else list(group_ids)
    if len(keys) != n:
        raise ValueError(f"group_ids has {len(keys)} entries for {n} rewards")
    dense: dict = {}
    return torch.tensor([dense.setdefault(k, len(dense)) for k in keys], dtype=torch.long)


def group_advantages(rewards: Tensor | Sequence[float], group_ids: Sequence[Hashable] | Tensor,
                     estimator: Estimator = "grpo", eps: float = 1e-6) -> Tensor:
    """One advantage per sequence [N] from its reward and its group's rewards.

    Groups may have any size and need not be contiguous. A group of one has no
    baseline to compare with and gets advantage 0 (all estimators). The grpo std is
    the unbiased (k-1) sample std, as in TRL; a group of equal rewards gets 0.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64).detach().cpu()
    if r.dim() != 1:
        raise ValueError(f"rewards must be [N], got shape {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("rewards must be finite")
    if estimator not in ("grpo", "rloo", "dr_grpo"):
        raise ValueError(f"unknown estimator '{estimator}' (grpo, rloo, dr_grpo)")
    idx = _group_index(group_ids, r.shape[0])
    if r.shape[0] == 0:
        return r.float()
    num_groups = int(idx.max()) + 1
    counts = torch.zeros(num_groups, dtype=torch.float64).index_add(0, idx, torch.ones_like(r))
    sums = torch.zeros(num_groups, dtype=torch.float64).index_add(0, idx, r)
    k = counts[idx]
    mean = sums[idx] / k
    centered = r - mean
    if estimator == "rloo":
        # r - (sum - r) / (k - 1) == k / (k - 1) * (r - mean)
        adv = centered * k / (k - 1).clamp(min=1.0)
    elif estimator == "dr_grpo":
        adv = centered
    else:
        sq = torch.zeros(num_groups, dtype=torch.float64).index_add(0, idx, centered * centered)
        std = (sq[idx] / (k - 1).clamp(min=1.0)).sqrt()
        adv = centered / (std + eps)
    return torch.where(k > 1, adv, torch.zeros_like(adv)).float()


def grpo_loss(logprobs: Tensor, old_logprobs: Tensor | None, ref_logprobs: Tensor | None,
              advantages: Tensor, mask: Tensor, cliprange: float = 0.2, kl_coef: float = 0.0,
              loss_agg: LossAgg = "token") -> tuple[Tensor, float, dict[str, float]]:
    """Clipped surrogate with sequence advantages [N] broadcast over tokens, + kl_coef * k3.

    old_logprobs None means on-policy (a single epoch): the ratio is 1 in value but
    still carries the gradient. loss_agg "token": sum over all response tokens,
    weight = #tokens (long responses weigh more); "sequence": each row's token mean,
    summed over rows, weight = #rows with a response token (each response weighs the
    same). Metrics are per-call means over tokens.
    """
    if old_logprobs is None:
        old_logprobs = logprobs.detach()
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if advantages.shape != (logprobs.shape[0],):
        raise ValueError(f"advantages must be [N] = [{logprobs.shape[0]}], got {tuple(advantages.shape)}")
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    if loss_agg not in ("token", "sequence"):
        raise ValueError(f"unknown loss_agg '{loss_agg}' (token, sequence)")
    m = mask.to(logprobs.device).bool()
    adv = advantages.to(logprobs).detach().unsqueeze(1).expand_as(logprobs)
    per_token, clipped, log_ratio = clipped_surrogate(logprobs, old_logprobs, adv, m, cliprange)
    kl = token_k3(logprobs, ref_logprobs, m) if ref_logprobs is not None else torch.zeros_like(per_token)
    total = per_token + kl_coef * kl if kl_coef != 0.0 else per_token

    lengths = m.sum(-1)
    num_tokens = float(lengths.sum())
    if loss_agg == "token":
        loss_sum, weight = total.sum(), num_tokens
    else:
        rows = lengths > 0
        row_mean = total.sum(-1) / lengths.clamp(min=1).to(total)
        loss_sum = torch.where(rows, row_mean, torch.zeros_like(row_mean)).sum()
        weight = float(rows.sum())
    with torch.no_grad():
        metrics = {
            "loss": safe_mean(loss_sum, weight),
            "policy_loss": safe_mean(per_token.sum(), num_tokens),
            "clipfrac": safe_mean(clipped.sum(), num_tokens),
            "approx_kl": safe_mean((0.5 * log_ratio * log_ratio).sum(), num_tokens),
            "ratio_mean": safe_mean(masked_fill_zero(log_ratio.exp(), m).sum(), num_tokens),
        }
        if ref_logprobs is not None:
            metrics["kl"] = safe_mean(kl.sum(), num_tokens)
    return loss_sum, weight, metrics
