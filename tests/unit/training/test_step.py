"""The shared step core on one process: normalisation by the total weight, weighted metrics,
skipped steps and the minibatch helpers (fillers: tests/integration/test_ddp_gradients.py)."""

import pytest
import torch

from raylign.collectives import weighted_metrics
from raylign.training.step import MicroBatch, chunked, deal, optimizer_step, split_even


def linear_model():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    return model


def sum_loss(model, x):
    """loss_sum = sum of outputs, weight = rows; metric m = the batch's first feature mean."""
    return model(x).sum(), float(x.shape[0]), {"m": float(x[:, 0].mean())}


def test_gradient_is_sum_over_micro_batches_divided_by_total_weight():
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[5.0, 6.0]])
    out = optimizer_step(model, optimizer, [MicroBatch(a, 2.0), MicroBatch(b, 1.0)], sum_loss, max_grad_norm=None)
    # d/dw of (sum of outputs) = column sums (9, 12); divided by the 3 rows -> (3, 4); lr 1 step.
    assert model.weight.detach()[0].tolist() == pytest.approx([1.0 - 3.0, -1.0 - 4.0])
    # loss = (1-2 + 3-4 + 5-6) / 3 = -1; metric m weighted by rows: (2*2 + 5*1) / 3 = 3
    assert out["loss"] == pytest.approx(-1.0)
    assert out["m"] == pytest.approx(3.0)
    assert out["grad_norm"] == pytest.approx(5.0)
    assert out["global_weight"] == 3.0 and out["micro_steps"] == 2.0


def test_clipping_uses_the_normalised_gradient():
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    optimizer_step(model, optimizer, [MicroBatch(torch.tensor([[3.0, 4.0]]), 1.0)], sum_loss, max_grad_norm=1.0)
    assert model.weight.detach()[0].tolist() == pytest.approx([1.0 - 0.6, -1.0 - 0.8])


def test_no_weight_means_no_step():
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    out = optimizer_step(model, optimizer, [], sum_loss)
    assert out["skipped_steps"] == 1.0
    assert model.weight.detach().tolist() == [[1.0, -1.0]]


def test_weighted_metrics_skip_nan_per_key():
    out = weighted_metrics([(1.0, {"a": 1.0, "b": float("nan")}), (3.0, {"a": 3.0, "b": 2.0})])
    assert out == {"a": pytest.approx(2.5), "b": pytest.approx(2.0)}


def test_minibatch_helpers():
    assert split_even(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_even([1], 3) == [[1], [], []]
    assert chunked(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert deal(list(range(5)), 1, 2) == [1, 3]


def test_collectives_run_on_the_cpu_without_an_nccl_group():
    """An NCCL-only group (Ray Train with use_gpu) needs CUDA tensors in all_reduce; without a
    process group, or with gloo, the step's few floats stay on the CPU."""
    from raylign.collectives import all_reduce, collective_device

    assert collective_device().type == "cpu"
    assert all_reduce([1.0, 2.5]) == [1.0, 2.5]
