"""The row helpers every online method shares."""

from __future__ import annotations

import pytest
import torch

from raylign.algorithms.base import TrainContext, response_token_count, scatter_response_values


def test_scatter_places_values_at_response_positions():
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 0]])
    out = scatter_response_values([[1.0, 2.0], [3.0]], mask)
    assert out.tolist() == [[0, 1, 2, 0], [0, 0, 3, 0]]
    with pytest.raises(ValueError, match="row 1"):
        scatter_response_values([[1.0, 2.0], [3.0, 4.0]], mask)


def test_response_token_count_matches_the_packed_mask():
    row = {"prompt_token_ids": [1, 2, 3, 4], "response_token_ids": [5, 6, 7]}
    assert response_token_count(row, 10) == 3
    assert response_token_count(row, 5) == 3  # the prompt loses its start first, down to one token
    assert response_token_count(row, 3) == 2  # one prompt token stays to predict the first response token


def test_the_context_says_when_a_batch_is_reused():
    assert not TrainContext(0, 8).reuses_batch
    assert TrainContext(0, 8, epochs=2).reuses_batch and TrainContext(0, 8, num_minibatches=2).reuses_batch
