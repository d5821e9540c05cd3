"""RRHF (`raylign train rrhf`): rank responses to align human feedback (Yuan et al., 2023).

The policy's length-normalised log-probability of each of k responses to a query is
pushed to follow the order of their reward scores (a hinge on every mis-ordered pair),
plus plain fine-tuning on the best-scored response so the policy keeps generating
fluent text. See /work/shared/ALGORITHMS.md, section RRHF.

The loss is a pure function of tensors, unit tested against hand-computed values. On the
engine one unit is one prompt's candidates: the sampled responses, plus (with
`include_dataset_responses`) the dataset's own chosen/rejected answers given with the prompt
(`candidates`, which the samplers encode beside their samples), all ranked by reward.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from raylign.algorithms.base import Algorithm, TrainContext, UpdateConfig, rows_logprobs, scatter_response_values
from raylign.algorithms.core import aggregate, k3, masked_sum
from raylign.config import StrictModel


class RRHFConfig(StrictModel):
    """Knobs of the RRHF loss and of how a query's k candidates are assembled."""

    rrhf_weight: float = 1.0
    length_penalty: float = 1.0
    # > 0: a frozen reference actor and kl_coef * KL(pi || ref) on the policy's own samples, the
    # RRHF paper's fix for reward hacking when sampling online
    kl_coef: float = Field(0.0, ge=0.0)
    # add the dataset's own chosen/rejected responses (HH: k = 4 sampled + 2) to the sampled ones
    include_dataset_responses: bool = True
    # None: score dataset responses with the reward model like sampled ones
    dataset_chosen_score: float | None = None
    # True: a query whose candidates all score the same is not trained on. With a 0/1 checked
    # reward most groups tie, and their SFT term would fine-tune on an arbitrary wrong answer.
    skip_tied_groups: bool = False
    # a query whose best candidate scores below this is not trained on: its SFT term would imitate a
    # bad answer (with a 0/1 check: no right answer among the k; see jobs/rrhf_arith.yaml)
    min_best_reward: float | None = None


def _masked_sums(token_logprobs: Tensor, response_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Sum of log-probs over response tokens and the response lengths, per row.

    `torch.where` rather than a product so that -inf/NaN at masked positions (padding)
    can neither leak into the value nor into the gradient.
    """
    if token_logprobs.shape != response_mask.shape:
        raise ValueError(f"token_logprobs {tuple(token_logprobs.shape)} and response_mask "
                         f"{tuple(response_mask.shape)} must have the same shape")
    mask = response_mask.to(token_logprobs.device).bool()
    lengths = mask.sum(-1).to(token_logprobs.dtype).clamp(min=1.0)
    return masked_sum(token_logprobs, mask, dim=-1), lengths


def length_normalized_logprob(token_logprobs: Tensor, response_mask: Tensor,
                              length_penalty: float = 1.0) -> Tensor:
    """p_i = sum_t log pi(y_t | x, y_<t) / |y_i| ** length_penalty, one value per row [N].

    Normalising by length keeps the ranking from simply preferring short responses.
    An empty response counts as length 1 (p = 0) instead of dividing by zero.
    """
    total, lengths = _masked_sums(token_logprobs, response_mask)
    return total / lengths.pow(length_penalty)


def rrhf_loss(token_logprobs: Tensor, response_mask: Tensor, scores: Tensor,
              rrhf_weight: float = 1.0, length_penalty: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """RRHF loss L = rrhf_weight * L_rank + L_ft for B queries with k responses each.

    token_logprobs [N, T]: log pi(token_t | tokens_<t) at position t; response_mask [N, T]
    is 1 on response tokens only (prompt and padding masked). Rows are grouped by query:
    N = B * k and row i*k + j is response j of query i; scores [B, k].

    - L_rank: per query, the sum over ordered pairs with score_a < score_b of
      relu(p_a - p_b) (ties skipped, no margin), then the mean over queries. The reference
      implementation (GanjinZero/RRHF) has one query per batch, so its loss is exactly
      this per-query sum; averaging over queries keeps the scale independent of B.
    - L_ft: mean token NLL of the best-scored response (argmax, first index on ties)
      over its response tokens, averaged over queries. (The reference takes `.mean()`
      over the padded row, i.e. it also divides by prompt+padding positions; we
      divide by the response length, which does not depend on padding.)

    Returns (loss, metrics) with metrics {loss, rank_loss, sft_loss, mean_seq_logprob,
    accuracy_of_order, num_pairs}: mean_seq_logprob is the mean of p over all N rows;
    accuracy_of_order is the fraction of ordered pairs (score_a < score_b) with
    p_a < p_b, pooled over queries, and NaN when no pair has distinct scores.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, k], got shape {tuple(scores.shape)}")
    num_queries, k = scores.shape
    if token_logprobs.dim() != 2 or token_logprobs.shape[0] != num_queries * k:
        raise ValueError(f"token_logprobs must be [B*k, T] = [{num_queries * k}, T], "
                         f"got {tuple(token_logprobs.shape)}")
    total, lengths = _masked_sums(token_logprobs, response_mask)
    p = (total / lengths.pow(length_penalty)).view(num_queries, k)
    scores = scores.to(device=p.device, dtype=torch.float32)

    # pair[b, a, c] is True when score_a < score_c in query b: then p_a should be below p_c.
    pair = scores.unsqueeze(2) < scores.unsqueeze(1)
    diff = p.unsqueeze(2) - p.unsqueeze(1)  # diff[b, a, c] = p_a - p_c
    hinge = torch.where(pair, torch.relu(diff), torch.zeros_like(diff))
    rank_loss = hinge.sum(dim=(1, 2)).mean()

    best = scores.argmax(dim=1)  # first maximal index on ties
    rows = torch.arange(num_queries, device=p.device) * k + best
    sft_loss = -(total[rows] / lengths[rows]).mean()

    loss = rrhf_weight * rank_loss + sft_loss

    with torch.no_grad():
        num_pairs = int(pair.sum().item())
        agree = (pair & (diff < 0)).sum().item()
        metrics = {
            "loss": float(loss.item()),
            "rank_loss": float(rank_loss.item()),
            "sft_loss": float(sft_loss.item()),
            "mean_seq_logprob": float(p.mean().item()),
            "accuracy_of_order": float(agree / num_pairs) if num_pairs else float("nan"),
            "num_pairs": float(num_pairs),
        }
    return loss, metrics


class RRHFAlgorithm(Algorithm):
    """One unit = one prompt's candidates (sampled + the dataset's), ranked by reward."""

    name = "rrhf"
    config_class = RRHFConfig
    section = "rrhf"
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=1)
    renamed_keys = {"reference.kl_coef": "rrhf.kl_coef"}

    def __init__(self, config: RRHFConfig, max_length: int = 768, dataset_responses: bool = False):
        super().__init__(config, max_length)
        self.needs_reference = config.kl_coef > 0
        self.dataset_responses = dataset_responses

    @classmethod
    def from_recipe(cls, recipe) -> "RRHFAlgorithm":
        return cls(recipe.rrhf, recipe.engine.trainer.max_length,
                   dataset_responses=recipe.rrhf.include_dataset_responses and recipe.data.kind == "preference")

    def select(self, rows: list, step: int):
        units, metrics = super().select(rows, step)
        if self.config.skip_tied_groups:
            ranked = [group for group in units if len({float(r["reward"]) for r in group}) > 1]
            metrics = {**metrics, "rrhf_tied_groups_skipped": float(len(units) - len(ranked))}
            units = ranked
        floor = self.config.min_best_reward
        if floor is not None:
            good = [group for group in units if max(float(r["reward"]) for r in group) >= floor]
            metrics = {**metrics, "rrhf_low_best_groups_skipped": float(len(units) - len(good))}
            units = good
        return units, metrics

    def prepare_prompt(self, row: dict) -> dict:
        """The dataset's own answers join the sampled candidates (HH: k = 4 sampled + 2)."""
        answers = [row[key] for key in ("chosen", "rejected") if row.get(key)] if self.dataset_responses else []
        return {**row, "candidates": answers}

    def loss(self, module, units: list, context: TrainContext):
        """One forward over every candidate of the micro-batch's groups, then the RRHF loss
        per group (+ kl_coef * KL(pi || ref) on the policy's own samples, the RRHF paper's
        fix for reward hacking when sampling online), summed over groups."""
        rows = [row for group in units for row in group]
        logprobs, batch = rows_logprobs(module, rows, context)
        mask = batch["response_mask"]
        total, sums, start = 0.0, {}, 0
        for group in units:
            rows_of_group = slice(start, start + len(group))
            start += len(group)
            scores = torch.tensor([[float(r["reward"]) for r in group]])
            loss, metrics = rrhf_loss(logprobs[rows_of_group], mask[rows_of_group], scores,
                                      self.config.rrhf_weight, self.config.length_penalty)
            sampled = [i for i, r in enumerate(group) if r.get("source") != "dataset" and r.get("ref_logprobs") is not None]
            if self.config.kl_coef > 0 and sampled:
                picked = [rows_of_group.start + i for i in sampled]
                ref = scatter_response_values([group[i]["ref_logprobs"] for i in sampled], mask[picked])
                kl_sum, rows = aggregate(k3(logprobs[picked], ref.to(logprobs.device), mask[picked]), mask[picked],
                                         "sequence")
                kl = kl_sum / rows if rows else kl_sum
                loss = loss + self.config.kl_coef * kl
                metrics = {**metrics, "kl": float(kl.detach()), "loss": float(loss.detach())}
            total = total + loss
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) / len(units)
        return total, float(len(units)), sums
