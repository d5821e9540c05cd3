import math

import pytest
import torch

from raylign.algorithms.kl import kl_k3, scatter_response_values


def k3(logp, ref):
    d = ref - logp
    return math.exp(d) - d - 1


def test_k3_by_hand_with_mask():
    logp = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, 9.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0], [0.0, -0.5, -7.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    row0 = (k3(-1.0, -1.5) + k3(-2.0, -1.0)) / 2
    row1 = k3(-0.5, -0.5)  # = 0; the masked garbage at [1, 2] must not count
    assert kl_k3(logp, ref, mask).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_k3_zero_when_equal_and_gradient_pulls_towards_ref():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    assert kl_k3(logp, logp.detach().clone(), torch.ones(1, 2)).item() == 0.0
    ref = torch.tensor([[-0.5, -3.0]])
    kl_k3(logp, ref, torch.ones(1, 2)).backward()
    # d/dlogp [e^(ref-logp) - (ref-logp) - 1] = 1 - e^(ref-logp): negative where ref > logp
    expected = [(1 - math.exp(0.5)) / 2, (1 - math.exp(-1.0)) / 2]
    assert logp.grad[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_scatter_places_values_at_response_positions():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
    out = scatter_response_values([[1.0, 2.0], [3.0]], mask)
    assert out.tolist() == [[0, 1, 2, 0], [0, 0, 3, 0]]
    with pytest.raises(ValueError, match="row 1"):
        scatter_response_values([[1.0, 2.0], [3.0, 4.0]], mask)
