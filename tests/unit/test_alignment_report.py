"""`raylign eval compare`'s paired reward difference, against hand-computed values."""

import pytest

from raylign.evaluation.alignment_report import CompareConfig, format_report, paired_difference


def test_paired_difference_by_hand():
    # diffs 0.4, -0.2, 0.6: mean 0.26667, sample sd sqrt(0.34667 / 2) = 0.41633, se 0.41633 / sqrt(3)
    got = paired_difference([0.5, 0.2, 0.9], [0.1, 0.4, 0.3])
    assert got["reward_delta"] == pytest.approx(0.266667, abs=1e-6)
    assert got["reward_delta_se"] == pytest.approx(0.240370, abs=1e-6)
    assert (got["prompts_better"], got["prompts_worse"]) == (2, 1)


def test_paired_difference_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts: 2 vs 3"):
        paired_difference([0.1, 0.2], [0.1, 0.2, 0.3])


def test_report_prints_the_paired_difference_for_every_policy_but_the_start():
    start = {"policy": "start", "prompts": 3, "reward_mean": 0.267, "reward_sem": 0.09, "reference_ppl": 2.2,
             "response_tokens_mean": 40.0, **paired_difference([0.1, 0.4, 0.3], [0.1, 0.4, 0.3])}
    tuned = {"policy": "grpo", "prompts": 3, "reward_mean": 0.533, "reward_sem": 0.2, "reference_ppl": 2.4,
             "response_tokens_mean": 30.0, "win_rate_vs_start": 60.0, "win_rate_se": 5.0,
             **paired_difference([0.5, 0.2, 0.9], [0.1, 0.4, 0.3])}
    lines = format_report([start, tuned], CompareConfig()).splitlines()
    assert "Δ vs start ± paired se" in lines[2]
    assert "+0.267 ± 0.240" in lines[4] and "60.0 ± 5.0" in lines[4]
    assert "±" not in lines[3] and lines[3].endswith("(baseline)")  # the start has no difference to show
