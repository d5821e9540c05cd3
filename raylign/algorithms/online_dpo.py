"""Online DPO (`raylign train online-dpo`): pairs built each step from the policy's own scored samples.

Per prompt, the best- and worst-rewarded samples form a (chosen, rejected) pair; the
loss is the ordinary DPO loss of raylign.algorithms.dpo on summed response log-probs.
Groups whose reward gap is too small are skipped: a near-tie carries no preference,
only reward-model noise. The frozen reference's log-probs come from the score stage, so the
trainer never holds a second model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from raylign.algorithms.base import Algorithm, TrainContext, UpdateConfig, policy_rows, rows_logprobs
from raylign.algorithms.core import masked_sum
from raylign.algorithms.dpo import DPOLossType, dpo_loss
from raylign.config import Retired, StrictModel


class OnlineDPOConfig(StrictModel):
    beta: float = 0.1
    loss_type: DPOLossType = "sigmoid"
    min_reward_gap: float = 0.0  # pairs need reward(chosen) - reward(rejected) > this


def make_pairs(rows: list[dict], min_reward_gap: float = 0.0) -> list[tuple[dict, dict]]:
    """(chosen, rejected) = (best, worst) by reward within each prompt_uid group.

    Ties on the best or worst reward keep the earliest row; a group whose gap is
    <= min_reward_gap (always so for equal rewards or a single sample) gives no pair.
    Pairs come in the order the prompts are first seen.
    """
    if min_reward_gap < 0:
        raise ValueError(f"min_reward_gap must be >= 0, got {min_reward_gap}")
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["prompt_uid"], []).append(row)
    pairs = []
    for group in groups.values():
        best = max(group, key=lambda r: float(r["reward"]))  # max/min return the first extreme
        worst = min(group, key=lambda r: float(r["reward"]))
        if float(best["reward"]) - float(worst["reward"]) > min_reward_gap:
            pairs.append((best, worst))
    return pairs


def online_dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
                    ref_rejected: Tensor, config: OnlineDPOConfig) -> tuple[Tensor, float, dict[str, float]]:
    """dpo_loss with this config's beta and loss_type: (loss_sum, #pairs, metrics)."""
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                    beta=config.beta, loss_type=config.loss_type)


class OnlineDPOAlgorithm(Algorithm):
    """One unit = one (chosen, rejected) pair; the loss is averaged over the global pair count."""

    name = "online-dpo"
    config_class = OnlineDPOConfig
    section = "dpo"
    needs_reference = True
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=2)
    renamed_keys = {"reference.kl_coef": Retired("online DPO stays near the reference through dpo.beta")}

    def select(self, rows: list[dict], step: int):
        pairs = make_pairs(policy_rows(rows), self.config.min_reward_gap)
        gaps = [c["reward"] - r["reward"] for c, r in pairs]
        return [[c, r] for c, r in pairs], {"pairs": float(len(pairs)),
                                            "pair_reward_gap": sum(gaps) / len(gaps) if gaps else 0.0}

    def loss(self, module, units: list[list[dict]], context: TrainContext):
        rows = [u[0] for u in units] + [u[1] for u in units]
        logprobs, batch = rows_logprobs(module, rows, context)
        policy = masked_sum(logprobs, batch["response_mask"], dim=-1)
        ref = torch.tensor([sum(r["ref_logprobs"]) for r in rows], dtype=torch.float32)
        n = len(units)
        return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], self.config.beta, self.config.loss_type)
