"""Policy-gradient losses by name: a new surrogate is one registered function (verl's
`register_policy_loss` shape). A loss gets the per-token log-probs under the current policy and
under the rollout policy, per-token advantages, the response mask and the method's config, and
returns the per-token loss; the method aggregates it (`core.aggregate`) and adds its own terms.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

from raylign.algorithms.core import clipped_surrogate, masked_fill_zero, safe_mean
from raylign.config import Registry


class PolicyLossOutput(NamedTuple):
    per_token: Tensor  # [N, T], 0 on padding
    clipped: Tensor  # [N, T] bool: tokens whose gradient the clipping removed
    log_ratio: Tensor  # [N, T] log(pi / pi_rollout), 0 on padding


# (logprobs, old_logprobs, advantages [N, T], mask, config) -> PolicyLossOutput
PolicyLoss = Callable[[Tensor, Tensor, Tensor, Tensor, Any], PolicyLossOutput]
POLICY_LOSSES = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register  # @register_policy_loss("name") adds what `*.policy_loss` selects
get_policy_loss = POLICY_LOSSES.pick
PolicyLossName = POLICY_LOSSES.setting  # a config field naming a registered policy loss


@register_policy_loss("ppo_clip")
def ppo_clip(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, config) -> PolicyLossOutput:
    """The PPO clipped surrogate per token (Schulman et al., 2017), symmetric unless the config
    sets `cliprange_high`."""
    return PolicyLossOutput(*clipped_surrogate(logprobs, old_logprobs, advantages, mask, config.cliprange,
                                               getattr(config, "cliprange_high", None)))


@register_policy_loss("gspo")
def gspo(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, config) -> PolicyLossOutput:
    """GSPO (Zheng et al., 2025): one importance ratio per sequence, the geometric mean of its
    tokens' ratios s = exp(mean_t log(pi / pi_rollout)), clipped per sequence. Written per token
    as s.detach() * pi_t / pi_t.detach() (GSPO-token): every token carries the value s and the
    gradient s * grad log pi_t, so with `loss_agg: sequence` the update is the paper's. Its clip
    ranges are far smaller than PPO's (the paper: 3e-4 low, 4e-4 high)."""
    m = mask.to(logprobs.device).bool()
    token_log_ratio = masked_fill_zero(logprobs - old_logprobs.to(logprobs), m)
    sequence_log_ratio = token_log_ratio.sum(-1) / m.sum(-1).clamp(min=1)
    per_token_log_ratio = sequence_log_ratio.detach().unsqueeze(1) + logprobs - logprobs.detach()
    return PolicyLossOutput(*clipped_surrogate(per_token_log_ratio, torch.zeros_like(logprobs), advantages, m,
                                               config.cliprange, getattr(config, "cliprange_high", None)))


def policy_loss_metrics(out: PolicyLossOutput, mask: Tensor) -> dict[str, float]:
    """Per-call means over response tokens: policy_loss, clipfrac (share of tokens clipped),
    approx_kl = mean 0.5 * (log pi - log pi_rollout)^2, ratio_mean."""
    m = mask.to(out.per_token.device).bool()
    count = float(m.sum())
    with torch.no_grad():
        return {
            "policy_loss": safe_mean(out.per_token.sum(), count),
            "clipfrac": safe_mean(out.clipped.sum(), count),
            "approx_kl": safe_mean((0.5 * out.log_ratio * out.log_ratio).sum(), count),
            "ratio_mean": safe_mean(masked_fill_zero(out.log_ratio.exp(), m).sum(), count),
        }
