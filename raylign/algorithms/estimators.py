"""Advantage estimators for critic-free methods, by name: a new estimator is one registered function.

An estimator maps each response's reward and its group (the k responses to one prompt) to one
advantage per response, broadcast over its tokens by the loss (verl's `register_adv_est` shape):

- grpo    (Shao et al., 2024, DeepSeekMath): A = (r - mean_group) / (std_group + eps)
- dr_grpo (Liu et al., 2025, "Understanding R1-Zero-like training"): A = r - mean_group
  (no std scaling, which over-weights near-uniform groups)
- rloo    (Ahmadian et al., 2024): A = r - mean of the other k-1 rewards of the group
- reinforce_pp (Hu et al., 2025, REINFORCE++): the global-batch baseline, A = (r - mean_batch)
  / (std_batch + eps) over every response of the step, groups ignored (k = 1 works)
- reinforce_pp_baseline (REINFORCE++-baseline): r - mean_group, then normalised by the
  global batch's mean and std

`group_advantages` validates the inputs and gives a group of one advantage 0 (it has no
baseline to compare with) unless the estimator is marked `whole_batch` (its baseline is the
batch); estimators see float64 rewards and a dense group index.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import torch
from torch import Tensor

from raylign.algorithms.core import group_index
from raylign.config import Registry

# (rewards [N] float64, dense group index [N], eps) -> advantages [N]
Estimator = Callable[[Tensor, Tensor, float], Tensor]
ESTIMATORS = Registry("estimator")
register_adv_est = ESTIMATORS.register  # @register_adv_est("name") adds what `grpo.estimator` selects
get_adv_est = ESTIMATORS.pick
EstimatorName = ESTIMATORS.setting  # a config field naming a registered estimator


def group_moments(rewards: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """(group size k, group mean) of each row's group, per row."""
    groups = int(index.max()) + 1
    counts = torch.zeros(groups, dtype=rewards.dtype).index_add(0, index, torch.ones_like(rewards))
    sums = torch.zeros(groups, dtype=rewards.dtype).index_add(0, index, rewards)
    return counts[index], sums[index] / counts[index]


@register_adv_est("grpo")
def grpo_advantage(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    """(r - mean) / (std + eps) with the unbiased (k-1) sample std, as in TRL; equal rewards give 0."""
    k, mean = group_moments(rewards, index)
    centered = rewards - mean
    squares = torch.zeros(int(index.max()) + 1, dtype=rewards.dtype).index_add(0, index, centered * centered)
    std = (squares[index] / (k - 1).clamp(min=1.0)).sqrt()
    return centered / (std + eps)


@register_adv_est("dr_grpo")
def dr_grpo_advantage(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    _, mean = group_moments(rewards, index)
    return rewards - mean


@register_adv_est("rloo")
def rloo_advantage(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    """r - (sum - r) / (k - 1), which is k / (k - 1) * (r - mean)."""
    k, mean = group_moments(rewards, index)
    return (rewards - mean) * k / (k - 1).clamp(min=1.0)


def whiten(values: Tensor, eps: float) -> Tensor:
    """(x - mean) / (std + eps) over the whole batch, unbiased std (0 for a batch of one)."""
    if values.numel() < 2:
        return values - values.mean()
    return (values - values.mean()) / (values.std() + eps)


@register_adv_est("reinforce_pp")
def reinforce_pp_advantage(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    return whiten(rewards, eps)


reinforce_pp_advantage.whole_batch = True  # a response alone in its group still has the batch as baseline


@register_adv_est("reinforce_pp_baseline")
def reinforce_pp_baseline_advantage(rewards: Tensor, index: Tensor, eps: float) -> Tensor:
    k, mean = group_moments(rewards, index)
    centered = torch.where(k > 1, rewards - mean, torch.zeros_like(rewards))
    return whiten(centered, eps)


reinforce_pp_baseline_advantage.whole_batch = True  # groups of one enter the batch moments at 0


def group_advantages(rewards: Tensor | Sequence[float], group_ids: Sequence[Hashable] | Tensor,
                     estimator: str = "grpo", eps: float = 1e-6) -> Tensor:
    """One advantage per sequence [N] from its reward and its group's rewards.

    Groups may have any size and need not be contiguous; a group of one gets advantage 0.
    """
    r = torch.as_tensor(rewards, dtype=torch.float64).detach().cpu()
    if r.dim() != 1:
        raise ValueError(f"rewards must be [N], got shape {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("rewards must be finite")
    function = get_adv_est(estimator)
    if len(group_ids) != r.shape[0]:
        raise ValueError(f"group_ids has {len(group_ids)} entries for {r.shape[0]} rewards")
    index = group_index(group_ids, r.shape[0])
    if r.shape[0] == 0:
        return r.float()
    advantages = function(r, index, eps)
    if getattr(function, "whole_batch", False):
        return advantages.float()
    k, _ = group_moments(r, index)
    return torch.where(k > 1, advantages, torch.zeros_like(advantages)).float()
