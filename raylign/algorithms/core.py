"""The tensor operations every method's loss is built from, each tested once against hand values.

All tensors are [N, T], right-padded, with a response mask [N, T] (1 on the response tokens a
loss may use). Padding is selected away with `torch.where`, never multiplied, so inf/NaN junk
there cannot leak into values or gradients. Losses return `(loss_sum, weight, metrics)`: the
trainer divides the sum, all-reduced over ranks, by the all-reduced weight, so a loss says how
it is normalised (`aggregate`) and uneven shards still weigh every token, row or group the same.
"""

from __future__ import annotations

from typing import Hashable, Literal, Sequence

import torch
from torch import Tensor

Aggregation = Literal["token", "sequence", "group"]


def check_same_shape(**tensors: Tensor | None) -> None:
    """Raise a ValueError naming every [N, T] input whose shape differs from the first."""
    named = {k: v for k, v in tensors.items() if v is not None}
    shapes = {k: tuple(v.shape) for k, v in named.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        listing = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"expected [N, T] tensors of one shape, got {listing}")


def bool_mask(mask: Tensor, like: Tensor) -> Tensor:
    return mask.to(like.device).bool()


def masked_fill_zero(x: Tensor, mask: Tensor) -> Tensor:
    """x on response tokens, exactly 0 elsewhere (and no gradient from elsewhere)."""
    return torch.where(mask, x, torch.zeros_like(x))


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of x over the masked positions (of each row with dim=-1)."""
    picked = masked_fill_zero(x, bool_mask(mask, x))
    return picked.sum() if dim is None else picked.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over the masked positions; a row (or batch) without any gives 0."""
    m = bool_mask(mask, x)
    count = m.sum() if dim is None else m.sum(dim)
    return masked_sum(x, m, dim) / count.clamp(min=1).to(x.dtype)


def safe_mean(total: Tensor | float, count: float) -> float:
    """total / count as a detached float, 0 when count is 0 (an empty shard)."""
    return float(total) / count if count else 0.0


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last response token of each row [N] (0 for a row without any)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(-1).values


def k3(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || ref) on sampled tokens, 0 on padding.

    k3 = exp(d) - d - 1 with d = ref - logp: non-negative, unbiased for tokens sampled from
    pi, and its gradient pulls pi towards ref. Aggregate it like any per-token loss.
    """
    m = bool_mask(mask, logprobs)
    delta = masked_fill_zero(ref_logprobs.to(logprobs) - logprobs, m)
    return masked_fill_zero(delta.exp() - delta - 1.0, m)


def clipped_surrogate(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor,
                      cliprange: float, cliprange_high: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO loss max(-A * rho, -A * clip(rho, 1 - eps_low, 1 + eps_high)), 0 on padding.

    `cliprange_high` None clips symmetrically (eps_high = eps_low = cliprange). Returns
    (per_token_loss, clipped, log_ratio): `clipped` marks tokens where the clipped branch is
    the larger (its gradient is then zero); log_ratio is masked.
    """
    m = bool_mask(mask, logprobs)
    high = cliprange if cliprange_high is None else cliprange_high
    log_ratio = masked_fill_zero(logprobs - old_logprobs.to(logprobs), m)
    ratio = log_ratio.exp()
    adv = masked_fill_zero(advantages.to(logprobs), m)
    unclipped = -adv * ratio
    clipped_loss = -adv * ratio.clamp(1.0 - cliprange, 1.0 + high)
    per_token = masked_fill_zero(torch.maximum(unclipped, clipped_loss), m)
    return per_token, m & (clipped_loss > unclipped), log_ratio


def group_index(group_ids: Sequence[Hashable] | Tensor, n: int) -> Tensor:
    """Dense group index per row (first-seen order) for any hashable group keys."""
    keys = group_ids.tolist() if isinstance(group_ids, Tensor) else list(group_ids)
    if len(keys) != n:
        raise ValueError(f"group_ids has {len(keys)} entries for {n} rows")
    dense: dict = {}
    return torch.tensor([dense.setdefault(k, len(dense)) for k in keys], dtype=torch.long)


def aggregate(values: Tensor, mask: Tensor, mode: Aggregation = "token",
              group_ids: Sequence[Hashable] | Tensor | None = None) -> tuple[Tensor, float]:
    """A per-token loss [N, T] as (sum, weight): the trainer's sum over ranks / weight over ranks is

    - token:    the mean over every response token of the batch (long responses weigh more);
    - sequence: the mean over rows of each row's token mean (every response weighs the same);
    - group:    the mean over groups of the mean of their rows' token means (every prompt weighs
                the same however many of its responses there are); needs `group_ids` [N].
    Rows without a response token count for nothing.
    """
    m = bool_mask(mask, values)
    if mode == "token":
        return masked_fill_zero(values, m).sum(), float(m.sum())
    lengths = m.sum(-1)
    rows = lengths > 0
    row_mean = masked_fill_zero(values, m).sum(-1) / lengths.clamp(min=1).to(values)
    row_mean = torch.where(rows, row_mean, torch.zeros_like(row_mean))
    if mode == "sequence":
        return row_mean.sum(), float(rows.sum())
    if mode == "group":
        if group_ids is None:
            raise ValueError("aggregate mode 'group' needs group_ids")
        index = group_index(group_ids, values.shape[0]).to(values.device)
        groups = int(index.max()) + 1 if len(index) else 0
        sums = torch.zeros(groups, dtype=values.dtype, device=values.device).index_add(0, index, row_mean)
        counts = torch.zeros(groups, device=values.device).index_add(0, index, rows.float())
        present = counts > 0
        return (sums[present] / counts[present].to(values)).sum(), float(present.sum())
    raise ValueError(f"unknown aggregation '{mode}' (token, sequence, group)")


def sequence_nll(token_logprobs: Tensor, mask: Tensor) -> tuple[Tensor, float, dict[str, float]]:
    """Token NLL summed over response tokens: (loss_sum, #tokens, {"nll", "num_tokens"}), the loss of
    SFT and of every method that imitates kept samples (RAFT)."""
    check_same_shape(logprobs=token_logprobs, mask=mask)
    loss_sum, count = aggregate(-token_logprobs, mask, "token")
    return loss_sum, count, {"nll": safe_mean(loss_sum.detach(), count), "num_tokens": count}


# ---------------------------------------------------------------- whitening over all ranks


def masked_moments(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sum, sum of squares, count) of x over response tokens, as float64 0-dim tensors.

    Sums rather than means, so the trainer can all-reduce them across ranks and whiten with
    the global batch statistics (`moments_to_mean_var`, `whiten_with`).
    """
    check_same_shape(x=x, mask=mask)
    m = bool_mask(mask, x)
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

    With shift_mean=False the mean is added back (scale only), as PPO implementations do for
    rewards. mean/var come from the (possibly all-reduced) moments.
    """
    check_same_shape(x=x, mask=mask)
    m = bool_mask(mask, x)
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
