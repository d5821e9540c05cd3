"""RRHF loss against values computed by hand (plain arithmetic in each test)."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.rrhf import RRHFConfig, length_normalized_logprob, rrhf_loss
from raylign.config import ConfigError, build_config

NEG_INF = float("-inf")

# One query, k = 3. Masked positions hold junk (9s) that must never count.
LOGPROBS_Q0 = [
    [-9.0, -2.0, -3.0, -9.0],  # mask 0110: sum -5, len 2
    [-9.0, -1.0, -1.0, -1.0],  # mask 0111: sum -3, len 3
    [-0.5, -0.5, -9.0, -9.0],  # mask 1100: sum -1, len 2
]
MASK_Q0 = [[0, 1, 1, 0], [0, 1, 1, 1], [1, 1, 0, 0]]


def _q0():
    return torch.tensor(LOGPROBS_Q0), torch.tensor(MASK_Q0)


def test_length_normalized_logprob_masks_and_penalises_length():
    lp, mask = _q0()
    p1 = length_normalized_logprob(lp, mask, 1.0)
    assert torch.allclose(p1, torch.tensor([-5 / 2, -3 / 3, -1 / 2]))
    p2 = length_normalized_logprob(lp, mask, 2.0)
    assert torch.allclose(p2, torch.tensor([-5 / 4, -3 / 9, -1 / 4]))
    p0 = length_normalized_logprob(lp, mask, 0.0)  # no normalisation: plain sums
    assert torch.allclose(p0, torch.tensor([-5.0, -3.0, -1.0]))


def test_single_query_k3_hand_computed():
    lp, mask = _q0()
    scores = torch.tensor([[1.0, 2.0, 0.5]])
    loss, m = rrhf_loss(lp, mask, scores)
    p = [-2.5, -1.0, -0.5]
    # pairs with score_a < score_c: (2,0), (2,1), (0,1)
    rank = max(0.0, p[2] - p[0]) + max(0.0, p[2] - p[1]) + max(0.0, p[0] - p[1])
    assert rank == pytest.approx(2.5)
    sft = 3.0 / 3  # best = row 1: NLL 3 over 3 response tokens
    assert loss.item() == pytest.approx(rank + sft)
    assert m["loss"] == pytest.approx(3.5)
    assert m["rank_loss"] == pytest.approx(2.5)
    assert m["sft_loss"] == pytest.approx(1.0)
    assert m["mean_seq_logprob"] == pytest.approx(sum(p) / 3)
    assert m["accuracy_of_order"] == pytest.approx(1 / 3)  # only (0,1) has p_0 < p_1
    assert m["num_pairs"] == 3


def test_rrhf_weight_scales_only_rank_term():
    lp, mask = _q0()
    scores = torch.tensor([[1.0, 2.0, 0.5]])
    loss, m = rrhf_loss(lp, mask, scores, rrhf_weight=10.0)
    assert loss.item() == pytest.approx(10 * 2.5 + 1.0)
    assert m["rank_loss"] == pytest.approx(2.5)
    assert m["sft_loss"] == pytest.approx(1.0)
    loss0, _ = rrhf_loss(lp, mask, scores, rrhf_weight=0.0)
    assert loss0.item() == pytest.approx(1.0)


def test_ties_are_skipped_and_first_best_wins():
    lp, mask = _q0()
    scores = torch.tensor([[1.0, 1.0, 0.0]])  # rows 0 and 1 tie
    loss, m = rrhf_loss(lp, mask, scores)
    p = [-2.5, -1.0, -0.5]
    # only (2,0) and (2,1); the tie (1,0) would add relu(-1 + 2.5) = 1.5 if it counted
    rank = (p[2] - p[0]) + (p[2] - p[1])
    assert m["rank_loss"] == pytest.approx(rank) and rank == pytest.approx(2.5)
    sft = 5.0 / 2  # argmax ties -> first index, row 0: NLL 5 over 2 tokens
    assert m["sft_loss"] == pytest.approx(sft)
    assert loss.item() == pytest.approx(rank + sft)
    assert m["num_pairs"] == 2
    assert m["accuracy_of_order"] == pytest.approx(0.0)


def test_length_penalty_two():
    lp, mask = _q0()
    scores = torch.tensor([[1.0, 2.0, 0.5]])
    loss, m = rrhf_loss(lp, mask, scores, length_penalty=2.0)
    p = [-5 / 4, -3 / 9, -1 / 4]
    rank = max(0.0, p[2] - p[0]) + max(0.0, p[2] - p[1]) + max(0.0, p[0] - p[1])
    assert rank == pytest.approx(1.0 + 1 / 12)
    # the SFT term is a per-token mean whatever the length penalty
    assert m["sft_loss"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(rank + 1.0)
    assert m["mean_seq_logprob"] == pytest.approx(sum(p) / 3)


def test_two_queries_average_over_queries_and_ignore_inf_padding():
    lp0, mask0 = _q0()
    lp1 = torch.tensor([
        [-1.0, -1.0, -1.0, -1.0],        # score 3, all response: p -1, len 4
        [-0.2, -0.2, NEG_INF, NEG_INF],  # score 1: p -0.2
        [-3.0, -1.0, NEG_INF, NEG_INF],  # score 2: p -2
    ])
    mask1 = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]])
    lp = torch.cat([lp0, lp1])
    mask = torch.cat([mask0, mask1])
    scores = torch.tensor([[1.0, 2.0, 0.5], [3.0, 1.0, 2.0]])
    loss, m = rrhf_loss(lp, mask, scores)
    rank_q0 = 2.5
    # q1 pairs: (1,0): -0.2 - -1 = 0.8; (1,2): -0.2 - -2 = 1.8; (2,0): relu(-2 + 1) = 0
    rank_q1 = 0.8 + 1.8 + 0.0
    sft_q0, sft_q1 = 1.0, 4.0 / 4
    assert m["rank_loss"] == pytest.approx((rank_q0 + rank_q1) / 2)
    assert m["sft_loss"] == pytest.approx((sft_q0 + sft_q1) / 2)
    assert loss.item() == pytest.approx(2.55 + 1.0)
    assert math.isfinite(loss.item())
    assert m["mean_seq_logprob"] == pytest.approx((-2.5 - 1.0 - 0.5 - 1.0 - 0.2 - 2.0) / 6)
    assert m["accuracy_of_order"] == pytest.approx(2 / 6)
    assert m["num_pairs"] == 6


def test_gradient_matches_hand_derivation_and_is_zero_on_masked_positions():
    lp, mask = _q0()
    lp = lp.clone().requires_grad_(True)
    scores = torch.tensor([[1.0, 2.0, 0.5]])
    loss, _ = rrhf_loss(lp, mask, scores)
    loss.backward()
    grad = lp.grad
    assert torch.all(grad[mask == 0] == 0)
    # active hinges: (2,0) and (2,1). dL/dp0 = -1, dL/dp1 = -1 (+ SFT), dL/dp2 = +2.
    # p_i = sum / len, so each response token gets dL/dp_i / len_i; SFT adds -1/3 to row 1.
    expected = torch.tensor([
        [0.0, -1 / 2, -1 / 2, 0.0],
        [0.0, -1 / 3 - 1 / 3, -1 / 3 - 1 / 3, -1 / 3 - 1 / 3],
        [2 / 2, 2 / 2, 0.0, 0.0],
    ])
    assert torch.allclose(grad, expected, atol=1e-6)


def test_gradient_finite_with_inf_on_padding():
    lp = torch.tensor([[-1.0, NEG_INF], [-2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[1, 0], [1, 1]])
    loss, m = rrhf_loss(lp, mask, torch.tensor([[0.0, 1.0]]))
    loss.backward()
    assert torch.isfinite(lp.grad).all()
    assert lp.grad[0, 1] == 0
    # p = [-1, -1.25]; pair (0,1): relu(-1 + 1.25) = 0.25; sft = 2.5 / 2
    assert m["loss"] == pytest.approx(0.25 + 1.25)


def test_no_distinct_scores_gives_zero_rank_and_nan_accuracy():
    lp, mask = _q0()
    loss, m = rrhf_loss(lp, mask, torch.tensor([[1.0, 1.0, 1.0]]))
    assert m["rank_loss"] == 0.0
    assert m["sft_loss"] == pytest.approx(2.5)  # row 0
    assert math.isnan(m["accuracy_of_order"])


def test_shape_errors():
    lp, mask = _q0()
    with pytest.raises(ValueError):
        rrhf_loss(lp, mask, torch.tensor([[1.0, 2.0]]))  # B*k = 2 != 3 rows
    with pytest.raises(ValueError):
        rrhf_loss(lp, mask[:, :3], torch.tensor([[1.0, 2.0, 0.5]]))
    with pytest.raises(ValueError):
        rrhf_loss(lp, mask, torch.tensor([1.0, 2.0, 0.5]))


def test_config_defaults_and_strictness():
    cfg = RRHFConfig()
    assert (cfg.rrhf_weight, cfg.length_penalty, cfg.include_dataset_responses, cfg.dataset_chosen_score) == (
        1.0, 1.0, True, None)
    assert build_config(RRHFConfig, {"dataset_chosen_score": 2}).dataset_chosen_score == 2.0
    with pytest.raises(ConfigError, match="rrhf_wieght"):
        build_config(RRHFConfig, {"rrhf_wieght": 3})


def test_skip_tied_groups_drops_only_queries_whose_candidates_all_score_the_same():
    from raylign.algorithms.rrhf import RRHFAlgorithm

    rows = [{"prompt_uid": uid, "reward": r, "name": f"{uid}{i}"}
            for uid, rewards in (("a", [0.0, 0.0]), ("b", [0.0, 1.0]), ("c", [1.0, 1.0])) for i, r in enumerate(rewards)]
    units, metrics = RRHFAlgorithm(RRHFConfig(skip_tied_groups=True)).select(rows, 0)
    assert [[r["name"] for r in group] for group in units] == [["b0", "b1"]]
    assert metrics["rrhf_tied_groups_skipped"] == 2.0
    assert len(RRHFAlgorithm(RRHFConfig()).select(rows, 0)[0]) == 3  # the paper's loss keeps them all


def test_min_best_reward_drops_queries_with_no_good_candidate():
    """With a missing-EOS penalty a group of wrong answers is no longer tied (stopped 0, cut -0.5):
    its best is still wrong, and imitating it taught the policy to stop on a wrong number."""
    from raylign.algorithms.rrhf import RRHFAlgorithm

    groups = (("wrong", [0.0, -0.5]), ("cut_right", [0.5, 0.0]), ("right", [1.0, -0.5]), ("tied", [1.0, 1.0]))
    rows = [{"prompt_uid": uid, "reward": r, "name": f"{uid}{i}"} for uid, rewards in groups for i, r in enumerate(rewards)]
    config = RRHFConfig(skip_tied_groups=True, min_best_reward=0.5)
    units, metrics = RRHFAlgorithm(config).select(rows, 0)
    assert [group[0]["name"] for group in units] == ["cut_right0", "right0"]
    assert (metrics["rrhf_tied_groups_skipped"], metrics["rrhf_low_best_groups_skipped"]) == (1.0, 1.0)
