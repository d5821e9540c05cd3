"""CUT loss against values computed by hand (ALGORITHMS.md, section CUT)."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.cut import (
    CUTConfig,
    cut_loss,
    cut_token_loss,
    cut_token_terms,
    flag_tokens,
    log1mexp,
)
from raylign.algorithms.cut_data import response_aligned
from raylign.config import ConfigError, build_config

INF = float("inf")
ln = math.log

# One negative response of 3 tokens, plus a padded 4th column holding inf (must never count).
# token:            0: flagged (0.6/0.5 = 1.2)  1: not (0.21/0.2 = 1.05)  2: not (0.45/0.9 = 0.5)
PLAIN = [[ln(0.5), ln(0.2), ln(0.9), INF]]
JUDGED = [[ln(0.6), ln(0.21), ln(0.45), -INF]]
MASK = [[1, 1, 1, 0]]


def _t(rows, grad=False):
    return torch.tensor(rows, dtype=torch.float32, requires_grad=grad)


def test_align_p_is_the_mean_token_nll_per_sequence_and_ignores_inf_padding():
    plain = _t([[-1.0, -2.0, INF], [-0.5, -INF, INF]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, weight, metrics = cut_token_loss(plain, torch.zeros_like(plain), mask, "align_p")
    assert weight == 2.0
    assert loss.item() == pytest.approx((1 + 2) / 2 + 0.5)
    assert metrics["align_p_loss"] == pytest.approx(2.0 / 2)
    loss, weight, _ = cut_token_loss(plain, torch.zeros_like(plain), mask, "align_p", normalize="token")
    assert (loss.item(), weight) == (pytest.approx(3.5), 3.0)


def test_align_n_uses_the_judgment_conditioned_logprobs():
    plain, judged = _t(PLAIN), _t(JUDGED)
    loss, weight, _ = cut_token_loss(plain, judged, torch.tensor(MASK), "align_n")
    assert weight == 1.0
    assert loss.item() == pytest.approx(-(ln(0.6) + ln(0.21) + ln(0.45)) / 3)


def test_misalign_flags_by_probability_ratio_and_applies_weighted_unlikelihood():
    plain, judged = _t(PLAIN, grad=True), _t(JUDGED, grad=True)
    loss, weight, metrics = cut_token_loss(plain, judged, torch.tensor(MASK), "misalign", 1.1, 0.5)
    expected = (0.5 * -ln(1 - 0.5) + -ln(0.2) + -ln(0.9)) / 3
    assert weight == 1.0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["flagged_fraction"] == pytest.approx(1 / 3)
    loss.backward()
    # d/dl [-w log(1 - e^l)] = w p / (1 - p) = 0.5 at p = 0.5; unflagged tokens: -1; each / 3 tokens
    assert plain.grad[0, :3].tolist() == pytest.approx([0.5 / 3, -1 / 3, -1 / 3], rel=1e-5)
    assert plain.grad[0, 3].item() == 0.0
    assert judged.grad is None or not judged.grad.any()  # the ratio is detached: no gradient through the judged pass


def test_threshold_moves_the_flags():
    plain, judged, mask = _t(PLAIN), _t(JUDGED), torch.tensor(MASK)
    assert flag_tokens(plain, judged, mask, 1.1).tolist() == [[True, False, False, False]]
    assert flag_tokens(plain, judged, mask, 1.01).tolist() == [[True, True, False, False]]
    assert flag_tokens(plain, judged, mask, 1.3).tolist() == [[False, False, False, False]]
    _, flagged = cut_token_terms(plain, judged, mask, "misalign", threshold=1.3)
    assert not flagged.any()
    loss, _, _ = cut_token_loss(plain, judged, mask, "misalign", threshold=1.3)  # nothing flagged: plain NLL
    assert loss.item() == pytest.approx(-(ln(0.5) + ln(0.2) + ln(0.9)) / 3)


def test_log1mexp_is_stable_at_both_ends():
    logp = torch.tensor([0.0, -1e-9, ln(0.5), -1e-3, -50.0], requires_grad=True)
    out = log1mexp(logp)
    assert torch.isfinite(out).all()
    assert out[0].item() == pytest.approx(ln(1e-5), rel=1e-3)  # p = 1 clamped to 1 - 1e-5
    assert out[2].item() == pytest.approx(ln(0.5))
    assert out[3].item() == pytest.approx(ln(-math.expm1(-1e-3)), rel=1e-5)
    assert out[4].item() == pytest.approx(-math.exp(-50.0), rel=1e-6)
    out.sum().backward()
    assert torch.isfinite(logp.grad).all()


def test_cut_loss_mixes_contrasts_one_weight_per_example():
    # row 0: a positive with 2 tokens; row 1: the negative above (judged row 0 is ignored)
    plain = _t([[ln(0.8), ln(0.4), INF, INF], PLAIN[0]], grad=True)
    judged = _t([[INF, INF, INF, INF], JUDGED[0]], grad=True)
    mask = torch.tensor([[1, 1, 0, 0], MASK[0]])
    negative = torch.tensor([False, True])
    loss, weight, metrics = cut_loss(plain, judged, mask, negative, threshold=1.1, weight_unlike=1.0)
    align_p = -(ln(0.8) + ln(0.4)) / 2
    align_n = -(ln(0.6) + ln(0.21) + ln(0.45)) / 3
    misalign = (-ln(1 - 0.5) - ln(0.2) - ln(0.9)) / 3
    assert weight == 2.0
    assert loss.item() == pytest.approx(align_p + 0.5 * (align_n + misalign), rel=1e-6)
    assert metrics["align_p_nll"] == pytest.approx(align_p, rel=1e-6)
    assert metrics["align_n_nll"] == pytest.approx(align_n, rel=1e-6)
    assert metrics["misalign_loss"] == pytest.approx(misalign, rel=1e-6)
    assert metrics["flagged_fraction"] == pytest.approx(1 / 3)
    loss.backward()
    assert torch.isfinite(plain.grad).all() and torch.isfinite(judged.grad).all()
    # Align-N is the only path into the judged pass: -1/3 per token, halved
    assert judged.grad[1, :3].tolist() == pytest.approx([-1 / 6] * 3, rel=1e-5)
    assert judged.grad[0].abs().sum().item() == 0.0
    # Align-N at a quarter weight: the negative's share and its judged-pass gradient shrink
    plain.grad, judged.grad = None, None
    quarter, _, _ = cut_loss(plain, judged, mask, negative, threshold=1.1, weight_unlike=1.0, weight_align_n=0.25)
    assert quarter.item() == pytest.approx(align_p + 0.5 * (0.25 * align_n + misalign), rel=1e-6)
    quarter.backward()
    assert judged.grad[1, :3].tolist() == pytest.approx([-1 / 24] * 3, rel=1e-5)


def test_response_aligned_gathers_response_positions_into_columns():
    values = torch.tensor([[9.0, 9.0, 1.0, 2.0, 7.0], [9.0, 3.0, 4.0, 5.0, 7.0]])
    response_mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 0]])
    out, mask = response_aligned(values, response_mask)
    assert out.tolist() == [[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]]
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    out, mask = response_aligned(values, response_mask, width=4)
    assert out.shape == (2, 4) and not mask[:, 3].any()


def test_unknown_contrast_and_config_key_are_errors():
    with pytest.raises(ValueError, match="unknown CUT contrast"):
        cut_token_terms(_t(PLAIN), _t(JUDGED), torch.tensor(MASK), "hindsight")
    with pytest.raises(ConfigError, match="thresold"):
        build_config(CUTConfig, {"thresold": 1.2})
    config = build_config(CUTConfig, {"threshold": 1.2, "downsample": None})
    assert config.threshold == 1.2 and config.downsample is None and config.weight_unlike == 1.0
