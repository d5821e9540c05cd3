"""The shared tensor operations every loss is built from, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.core import (
    aggregate,
    clipped_surrogate,
    group_index,
    k3,
    masked_mean,
    masked_moments,
    masked_sum,
    masked_whiten,
    moments_to_mean_var,
    sequence_nll,
    whiten_with,
)

NAN, INF = float("nan"), float("inf")


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- masked reductions and aggregation

X = _t([[1.0, 2.0, NAN], [4.0, INF, 6.0], [NAN, NAN, NAN]])
M = torch.tensor([[1, 1, 0], [1, 0, 1], [0, 0, 0]])  # row 2 has no response token


def test_masked_sum_and_mean_ignore_padding_junk():
    assert masked_sum(X, M).item() == 13.0
    assert masked_sum(X, M, dim=-1).tolist() == [3.0, 10.0, 0.0]
    assert masked_mean(X, M).item() == pytest.approx(13.0 / 4)
    assert masked_mean(X, M, dim=-1).tolist() == [1.5, 5.0, 0.0]  # an empty row gives 0


def test_aggregate_token_sequence_and_group_by_hand():
    # token: every token weighs the same
    total, weight = aggregate(X, M, "token")
    assert (total.item(), weight) == (13.0, 4.0)
    # sequence: each row's token mean, rows with a token count: (1.5 + 5) / 2
    total, weight = aggregate(X, M, "sequence")
    assert (total.item(), weight) == (6.5, 2.0)
    # group: rows 0 and 1 are one prompt, row 2 (empty) another: its group has no token
    total, weight = aggregate(X, M, "group", ["a", "a", "b"])
    assert (total.item(), weight) == (pytest.approx((1.5 + 5.0) / 2), 1.0)
    total, weight = aggregate(X, M, "group", ["a", "b", "b"])
    assert (total.item(), weight) == (pytest.approx(1.5 + 5.0), 2.0)


def test_aggregate_gradients_follow_the_weights():
    x = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    aggregate(x, mask, "sequence")[0].backward()
    assert x.grad.tolist() == [[pytest.approx(1 / 3)] * 3, [1.0, 0.0, 0.0]]


def test_aggregate_errors():
    with pytest.raises(ValueError, match="group_ids"):
        aggregate(X, M, "group")
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(X, M, "batch")
    with pytest.raises(ValueError, match="2 entries for 3 rows"):
        group_index(["a", "b"], 3)
    assert group_index(["x", "y", "x"], 3).tolist() == [0, 1, 0]


# ---------------------------------------------------------------- k3 KL


def k3_by_hand(logp, ref):
    d = ref - logp
    return math.exp(d) - d - 1


def test_k3_by_hand_with_mask():
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, 9.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0], [0.0, -0.5, -7.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    row0 = (k3_by_hand(-1.0, -1.5) + k3_by_hand(-2.0, -1.0)) / 2
    row1 = k3_by_hand(-0.5, -0.5)  # = 0; the masked garbage at [1, 2] must not count
    total, rows = aggregate(k3(logp, ref, mask), mask, "sequence")
    assert rows == 2.0 and (total / rows).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_k3_zero_when_equal_and_gradient_pulls_towards_ref():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    assert k3(logp, logp.detach().clone(), torch.ones(1, 2)).sum().item() == 0.0
    ref = torch.tensor([[-0.5, -3.0]])
    k3(logp, ref, torch.ones(1, 2)).mean().backward()
    # d/dlogp [e^(ref-logp) - (ref-logp) - 1] = 1 - e^(ref-logp): negative where ref > logp
    expected = [(1 - math.exp(0.5)) / 2, (1 - math.exp(-1.0)) / 2]
    assert logp.grad[0].tolist() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- clipped surrogate


def test_clipped_surrogate_by_hand_symmetric_and_clip_higher():
    lp, old = _t([[0.5, -0.5]]), _t([[0.0, 0.0]])
    adv, mask = _t([[2.0, -1.0]]), torch.tensor([[1, 1]])
    per_token, clipped, log_ratio = clipped_surrogate(lp, old, adv, mask, 0.2)
    # ratio e^0.5 = 1.65 with A > 0: clipped at 1.2; ratio e^-0.5 = 0.61 with A < 0: clipped at 0.8
    assert per_token.tolist() == [pytest.approx([-2.4, 0.8])]
    assert clipped.tolist() == [[True, True]] and log_ratio.tolist() == [[0.5, -0.5]]
    # clip-higher (DAPO): eps_high 0.28 lets the positive token go to 1.28
    per_token, clipped, _ = clipped_surrogate(lp, old, adv, mask, 0.2, cliprange_high=0.28)
    assert per_token.tolist() == [pytest.approx([-2.56, 0.8])]


# ---------------------------------------------------------------- NLL of kept samples


def test_sequence_nll_masks_padding():
    lp = torch.tensor([[-1.0, -2.0, float("nan")], [float("-inf"), -0.5, float("inf")]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    loss_sum, weight, m = sequence_nll(lp, mask)
    assert loss_sum.item() == pytest.approx(1.0 + 2.0 + 0.5)
    assert weight == 3.0
    assert m["nll"] == pytest.approx(3.5 / 3) and m["num_tokens"] == 3.0
    loss_sum.backward()
    assert torch.equal(lp.grad, torch.tensor([[-1.0, -1.0, 0.0], [0.0, -1.0, 0.0]]))
    with pytest.raises(ValueError, match="one shape"):
        sequence_nll(lp, mask[:, :2])


def test_sequence_nll_sums_response_token_nll():
    lp = torch.tensor([[0.0, -1.0, -2.0, -4.0], [0.0, -0.5, -9.0, 0.0]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])  # the prompt token (-9) and padding do not count
    loss_sum, tokens, metrics = sequence_nll(lp, mask)
    assert float(loss_sum) == pytest.approx(1 + 2 + 4 + 0.5)
    assert tokens == 4
    assert metrics["nll"] == pytest.approx(7.5 / 4)


# ---------------------------------------------------------------- whitening over all ranks


def test_masked_moments_and_whiten():
    x = _t([[1.0, 3.0, NAN], [5.0, INF, -INF]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    total, sumsq, count = masked_moments(x, mask)
    assert (float(total), float(sumsq), float(count)) == (9.0, 1.0 + 9.0 + 25.0, 3.0)
    mean, var = moments_to_mean_var(total, sumsq, count)
    assert float(mean) == pytest.approx(3.0)
    assert float(var) == pytest.approx((4.0 + 0.0 + 4.0) / 2)  # unbiased
    w = masked_whiten(x, mask)
    assert torch.allclose(w, _t([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), atol=1e-6)
    w_scale = masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(w_scale, _t([[-1.0 + 3.0, 3.0, 0.0], [1.0 + 3.0, 0.0, 0.0]]), atol=1e-6)


def test_whiten_with_summed_moments_matches_single_process():
    a, b = _t([[1.0, 2.0, 7.0]]), _t([[4.0, 0.5, NAN]])
    ma, mb = torch.tensor([[1, 1, 1]]), torch.tensor([[1, 1, 0]])
    # "all-reduce": add the two ranks' moments
    moments = [sa + sb for sa, sb in zip(masked_moments(a, ma), masked_moments(b, mb))]
    mean, var = moments_to_mean_var(*moments)
    whole = masked_whiten(torch.cat([a, b]), torch.cat([ma, mb]))
    assert torch.allclose(torch.cat([whiten_with(a, mean, var, ma), whiten_with(b, mean, var, mb)]), whole)
    values = [1.0, 2.0, 7.0, 4.0, 0.5]
    m = sum(values) / 5
    v = sum((u - m) ** 2 for u in values) / 4
    assert whole[0, 0].item() == pytest.approx((1.0 - m) / math.sqrt(v), rel=1e-5)
