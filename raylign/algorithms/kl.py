"""KL regularisation towards a frozen reference, from log-probs of sampled tokens."""

from __future__ import annotations

import torch
from torch import Tensor


def kl_k3(token_logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Mean per-token KL(pi || ref) estimate on sampled tokens, the "k3" estimator.

    k3 = exp(ref - logp) - (ref - logp) - 1 is non-negative, unbiased for tokens
    sampled from pi, and its gradient pulls pi towards ref; averaged over the masked
    (response) tokens of each row, then over rows that have any.
    """
    mask = mask.bool()
    delta = torch.where(mask, ref_logprobs - token_logprobs, torch.zeros_like(token_logprobs))
    per_token = torch.where(mask, delta.exp() - delta - 1.0, torch.zeros_like(delta))
    counts = mask.sum(-1)
    rows = counts > 0
    if not rows.any():
        return token_logprobs.new_zeros(())
    return (per_token.sum(-1)[rows] / counts[rows]).mean()


def scatter_response_values(values: list[list[float]], response_mask: Tensor) -> Tensor:
    """Place per-response-token values (in order) at the mask's positions of a [N, L] tensor."""
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    mask = response_mask.bool()
    for i, row in enumerate(values):
        positions = mask[i].nonzero(as_tuple=True)[0]
        if len(row) != len(positions):
            raise ValueError(f"row {i}: {len(row)} reference values for {len(positions)} response tokens")
        out[i, positions] = torch.tensor(row, dtype=torch.float32)
    return out
