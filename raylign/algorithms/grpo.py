"""GRPO / Dr GRPO / RLOO (`raylign train grpo`): group-relative advantages, the clipped surrogate.

No critic: k responses are sampled per prompt, and each response's advantage is its reward
relative to the others of its group (`grpo.estimator`, a registered estimator:
`raylign.algorithms.estimators`), computed on the driver over each prompt's whole group before
the batch is dealt to ranks. Every response is then one unit of the policy loss
(`grpo.policy_loss`, registered in `raylign.algorithms.policy_losses`) plus optionally
kl_coef * k3 KL to the frozen reference, aggregated per token or per sequence.
"""

from __future__ import annotations

import statistics
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    masked_list,
    policy_rows,
    response_token_count,
    rows_logprobs,
    scatter_response_values,
)
from raylign.algorithms.core import aggregate, check_same_shape, k3, safe_mean
from raylign.algorithms.dynamic_sampling import GroupPool
from raylign.algorithms.estimators import EstimatorName, group_advantages
from raylign.algorithms.kl import KLControl, make_kl_controller
from raylign.algorithms.policy_losses import PolicyLossName, get_policy_loss, policy_loss_metrics
from raylign.collectives import all_reduce
from raylign.config import Retired

LossAgg = Literal["token", "sequence"]


class GRPOConfig(KLControl):
    # a registered advantage estimator: grpo, rloo, dr_grpo, reinforce_pp, reinforce_pp_baseline
    estimator: EstimatorName = "grpo"
    policy_loss: PolicyLossName = "ppo_clip"  # a registered policy loss: ppo_clip, gspo
    cliprange: float = Field(0.2, gt=0.0)
    # DAPO's clip-higher: the upper clip of the ratio, 1 + cliprange_high (DAPO: 0.28 with 0.2
    # below), so low-probability tokens can still rise; None clips symmetrically
    cliprange_high: float | None = Field(None, gt=0.0)
    # > 0 adds k3 KL to the frozen reference (starts the reference actor); with `adaptive_kl`
    # the coefficient then moves each step towards `kl_target` (raylign.algorithms.kl.KLControl)
    kl_coef: float = Field(0.0, ge=0.0)
    loss_agg: LossAgg = "token"  # token: DAPO's token-level loss (long responses weigh by their tokens)
    eps: float = 1e-6
    # DAPO's dynamic sampling (raylign.algorithms.dynamic_sampling): train only on groups whose
    # rewards differ, pooled across steps until `train_groups` (default: the step's prompts)
    dynamic_sampling: bool = False
    train_groups: int | None = Field(None, ge=1)
    dynamic_sampling_patience: int = Field(4, ge=1)  # steps without a full pool before it trains as it is
    # truncated importance sampling (Yao et al., 2025): each token's loss times
    # min(pi_trainer / pi_sampler, tis_cap) on the rollout's tokens, correcting the samplers'
    # numerics (bf16 vLLM vs the fp32 trainer); None: off
    tis_cap: float | None = Field(None, gt=0.0)


def truncated_importance_weights(old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor,
                                 cap: float) -> Tensor:
    """min(pi_trainer / pi_sampler, cap) per token, detached, 0 on padding: how much more likely
    the trainer finds the token the sampler drew, with the rare huge ratio cut at `cap`."""
    m = mask.to(old_logprobs.device).bool()
    ratio = (old_logprobs.detach() - sampler_logprobs.to(old_logprobs)).exp().clamp(max=cap)
    return torch.where(m, ratio, torch.zeros_like(ratio))


def grpo_loss(logprobs: Tensor, old_logprobs: Tensor | None, ref_logprobs: Tensor | None,
              advantages: Tensor, mask: Tensor, config: GRPOConfig,
              sampler_logprobs: Tensor | None = None,
              kl_coef: float | None = None) -> tuple[Tensor, float, dict[str, float]]:
    """The policy loss with sequence advantages [N] broadcast over tokens, + kl_coef * k3
    (`kl_coef`: the adaptive controller's value this step; None: `config.kl_coef`).

    old_logprobs None means on-policy (one optimizer step on the batch): the ratio is 1 in
    value but still carries the gradient. loss_agg "token": sum over all response tokens,
    weight = #tokens (long responses weigh more); "sequence": each row's token mean, summed
    over rows, weight = #rows with a response token (each response weighs the same).
    With `config.tis_cap`, `sampler_logprobs` (the samplers' own log-probs of the tokens) weight
    each token's policy loss by `truncated_importance_weights`. Metrics are per-call means over tokens.
    """
    if old_logprobs is None:
        old_logprobs = logprobs.detach()
    check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if advantages.shape != (logprobs.shape[0],):
        raise ValueError(f"advantages must be [N] = [{logprobs.shape[0]}], got {tuple(advantages.shape)}")
    kl_coef = config.kl_coef if kl_coef is None else kl_coef
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    m = mask.to(logprobs.device).bool()
    adv = advantages.to(logprobs).detach().unsqueeze(1).expand_as(logprobs)
    out = get_policy_loss(config.policy_loss)(logprobs, old_logprobs, adv, m, config)
    policy_term, tis = out.per_token, None
    if config.tis_cap is not None:
        if sampler_logprobs is None:
            raise ValueError("grpo.tis_cap needs the samplers' log-probs of the response tokens")
        check_same_shape(logprobs=logprobs, sampler_logprobs=sampler_logprobs)
        tis = truncated_importance_weights(old_logprobs, sampler_logprobs, m, config.tis_cap)
        policy_term = policy_term * tis
    kl = k3(logprobs, ref_logprobs, m) if ref_logprobs is not None else torch.zeros_like(out.per_token)
    total = policy_term + kl_coef * kl if kl_coef != 0.0 else policy_term
    loss_sum, weight = aggregate(total, m, config.loss_agg)
    num_tokens = float(m.sum())
    metrics = {"loss": safe_mean(loss_sum.detach(), weight), **policy_loss_metrics(out, m)}
    if tis is not None:
        metrics["tis_weight_mean"] = safe_mean(tis.sum(), num_tokens)
        metrics["tis_capped_fraction"] = safe_mean((m & (tis >= config.tis_cap)).sum(), num_tokens)
    if ref_logprobs is not None:
        metrics["kl"] = safe_mean(kl.detach().sum(), num_tokens)
        metrics["kl_coef"] = float(kl_coef)
    return loss_sum, weight, metrics


class GRPOAlgorithm(Algorithm):
    """One unit = one sampled response with its group-relative advantage."""

    name = "grpo"
    config_class = GRPOConfig
    section = "grpo"
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=4)
    renamed_keys = {"grpo.epochs": "engine.trainer.epochs",
                    "reference.kl_coef": Retired("the KL coefficient is grpo.kl_coef (> 0 starts the reference)")}

    def __init__(self, config: GRPOConfig, max_length: int = 768):
        super().__init__(config, max_length)
        self.needs_reference = config.kl_coef > 0
        self.kl = make_kl_controller(config)
        self.pool = GroupPool(config.train_groups, config.dynamic_sampling_patience) if config.dynamic_sampling else None

    def has_driver_state(self) -> bool:
        return self.pool is not None

    def state_dict(self) -> dict:
        return self.pool.state_dict() if self.pool is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.pool is not None:
            self.pool.load_state_dict(state)

    def select(self, rows: list[dict], step: int):
        rows = policy_rows(rows)
        pooled: dict[str, float] = {}
        if self.pool is not None:
            rows, pooled = self.pool.add(rows)
        if not rows:
            return [], pooled
        advantages = group_advantages([r["reward"] for r in rows], [r["prompt_uid"] for r in rows], self.config.estimator,
                                      self.config.eps)
        units = [{**r, "advantage": float(a)} for r, a in zip(rows, advantages.tolist())]
        zero = sum(1 for u in units if u["advantage"] == 0.0)
        return units, {**pooled, "advantage_abs_mean": statistics.fmean(abs(u["advantage"]) for u in units),
                       "zero_advantage_fraction": zero / len(units)}

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length)) if self.config.loss_agg == "token" else 1.0

    def inert(self, unit: dict) -> bool:
        return unit["advantage"] == 0.0 and self.config.kl_coef == 0.0

    def prepare(self, module, units: list[dict], context: TrainContext):
        """Old log-probs only when the trainer's plan reuses the batch (several epochs or
        minibatches); a single on-policy step uses ratio 1 with the same gradient."""
        counted = {"grpo_rollouts": float(context.num_real_units)}  # the adaptive KL controller's step size
        if not context.reuses_batch or not units:
            return counted
        for start in range(0, len(units), 8):
            chunk = units[start : start + 8]
            logprobs, batch = rows_logprobs(module, chunk, context)
            for row, values, mask in zip(chunk, logprobs, batch["response_mask"]):
                row["old_logprobs"] = masked_list(values, mask)
        return counted

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, batch = rows_logprobs(module, units, context)
        mask = batch["response_mask"]
        old = scatter_response_values([u["old_logprobs"] for u in units], mask) if "old_logprobs" in units[0] else None
        ref = scatter_response_values([u["ref_logprobs"] for u in units], mask) if self.config.kl_coef > 0 else None
        advantages = torch.tensor([u["advantage"] for u in units], dtype=torch.float32)
        sampled = sampler_values(units, mask) if self.config.tis_cap is not None else None
        return grpo_loss(logprobs, old, ref, advantages, mask, self.config, sampled, self.kl.value)

    def after_update(self, metrics: dict[str, float]) -> None:
        """Every rank moves its coefficient by the same all-reduced KL and rollout count."""
        if not self.config.adaptive_kl:
            return
        kl_sum, ranks, rollouts = all_reduce([metrics.get("kl", 0.0), 1.0, metrics.get("grpo_rollouts", 0.0)])
        self.kl.update(kl_sum / ranks, int(rollouts))

    def update_state_dict(self) -> dict:
        return {"kl_coef": self.kl.value} if self.config.adaptive_kl else {}

    def load_update_state_dict(self, state: dict) -> None:
        if "kl_coef" in state:
            self.kl.value = float(state["kl_coef"])


def sampler_values(units: list[dict], mask: Tensor) -> Tensor:
    """The samplers' per-token log-probs laid out like the trainer's, cut where the trainer
    truncated the response (`engine.trainer.max_length`)."""
    counts = mask.bool().sum(-1).tolist()
    values = []
    for unit, count in zip(units, counts):
        sampled = list(unit.get("logprobs") or [])
        if len(sampled) < count:
            raise ValueError(f"grpo.tis_cap: a rollout has {len(sampled)} sampler log-probs for {count} response "
                             "tokens (the sampler must return its log-probs)")
        values.append(sampled[:count])
    return scatter_response_values(values, mask)
