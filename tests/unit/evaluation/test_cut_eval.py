"""`raylign eval cut`'s paired change of the judged-bad token probability, by hand."""

from __future__ import annotations

import math

import pytest

from raylign.evaluation.cut_eval import figures, paired_change

ln = math.log


def test_paired_change_pools_tokens_and_clusters_the_se_by_response():
    # response 0: flagged tokens 1 and 2 (0.5 -> 0.3, 0.4 -> 0.4); response 1: token 0 (0.2 -> 0.1);
    # response 2: nothing flagged (a positive), so it is left out
    before = [[ln(0.9), ln(0.5), ln(0.4)], [ln(0.2), ln(0.6)], [ln(0.7)]]
    after = [[ln(0.1), ln(0.3), ln(0.4)], [ln(0.1), ln(0.9)], [ln(0.2)]]
    flags = [[False, True, True], [True, False], [False]]
    change = paired_change(before, after, flags)
    delta = (-0.2 + 0.0 - 0.1) / 3  # pooled over the 3 flagged tokens
    assert change["judged_bad_prob_change"] == pytest.approx(delta)
    # the same as after - before of the pooled figure
    negative = [True, True, False]
    assert delta == pytest.approx(figures(after, flags, negative)["judged_bad_prob"]
                                  - figures(before, flags, negative)["judged_bad_prob"])
    # responses: d = (-0.2, -0.1), n = (2, 1); residuals d - delta * n = (0, 0); SE 0
    assert change["judged_bad_prob_change_se"] == pytest.approx(0.0, abs=1e-12)
    assert (change["responses_lower"], change["responses_higher"]) == (2.0, 0.0)


def test_paired_change_se_by_hand_and_empty_cases():
    before = [[ln(0.5)], [ln(0.5)]]
    after = [[ln(0.3)], [ln(0.6)]]
    change = paired_change(before, after, [[True], [True]])
    # d = (-0.2, +0.1), n = (1, 1): delta -0.05; residuals (-0.15, 0.15); se = sqrt(0.045 * 2) / 2
    assert change["judged_bad_prob_change"] == pytest.approx(-0.05)
    assert change["judged_bad_prob_change_se"] == pytest.approx(math.sqrt(0.045 * 2) / 2)
    assert (change["responses_lower"], change["responses_higher"]) == (1.0, 1.0)
    assert math.isnan(paired_change(before, after, [[False], [False]])["judged_bad_prob_change"])
    assert math.isnan(paired_change(before[:1], after[:1], [[True]])["judged_bad_prob_change_se"])
