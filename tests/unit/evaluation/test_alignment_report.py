"""`raylign eval compare`'s paired reward difference, against hand-computed values."""

import pytest

from raylign.evaluation.alignment_report import (
    CompareConfig,
    format_report,
    paired_difference,
)


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


class _FirstShownJudge:
    """An order-dependent judge with a pure position bias plus a small real preference
    for the longer output (as a soft label probability)."""

    name = "first-shown"

    def prepare(self):
        pass

    def fingerprint(self):
        return "first-shown-test"

    def preferences(self, pairs):
        return [1.2 + (0.1 if len(p["output_2"]) > len(p["output_1"]) else 0.0) for p in pairs]

    def check(self, values, count):
        return list(values)

    def close(self):
        pass


def _patch_judge(monkeypatch, judge):
    import raylign.feedback.cache as feedback_cache
    import raylign.feedback.config as feedback_config

    monkeypatch.setattr(feedback_config, "build_annotator", lambda config: judge)
    monkeypatch.setattr(feedback_cache, "AnnotationCache", lambda: None)  # no judgments kept on disk


def test_an_order_dependent_judge_is_asked_in_both_orders(monkeypatch):
    from raylign.evaluation.alignment_report import judge_win_rates

    _patch_judge(monkeypatch, _FirstShownJudge())
    prompts = [{"prompt": f"q{i}"} for i in range(4)]
    outputs = {"start": [{"response": "short"}] * 4, "tuned": [{"response": "a longer one"}] * 4}
    win = judge_win_rates(prompts, outputs, "judge:any")["tuned"]
    # shown order (start first): 1.3; swapped (tuned first): 1.2 -> back 1.8; mean 1.55 -> 55%
    assert win["win_rate"] == pytest.approx(55.0) and win["standard_error"] == pytest.approx(0.0)
    assert win["swap_consistency"] == 0.0  # it always picked the first shown
    assert (win["n_wins"], win["n_wins_base"], win["n_draws"]) == (4, 0, 0)


def test_rejudge_recomputes_only_the_win_rates(monkeypatch):
    from raylign.evaluation.alignment_report import rejudge

    _patch_judge(monkeypatch, _FirstShownJudge())
    rows = lambda text: [{"prompt": f"q{i}", "response": text, "reward": 0.1} for i in range(3)]  # noqa: E731
    figures = {"prompts": 3, "reward_sem": 0.1, "reference_ppl": 2.0, "response_tokens_mean": 5.0,
               **paired_difference([0.4] * 3, [0.1] * 3)}
    saved = {"report": [{"policy": "start", **figures, "reward_mean": 0.1, "responses": rows("short")},
                        {"policy": "tuned", **figures, "reward_mean": 0.4, "responses": rows("much longer"),
                         "win_rate_vs_start": 99.0, "win_rate_se": 1.0}]}
    report = rejudge(saved, "judge:any")
    assert report[1]["win_rate_vs_start"] == pytest.approx(55.0) and report[1]["reward_mean"] == 0.4
    assert (report[1]["judge_wins"], report[1]["judge_losses"]) == (3, 0)
    assert "(3/0)" in format_report(report, CompareConfig()).splitlines()[4]
    # a report saved before the repetition column gets it from its stored responses
    assert report[0]["repeated_4grams"] == 0.0 and "rep-4" in format_report(report, CompareConfig()).splitlines()[2]
    assert "warning: the judge mostly picks by position" in format_report(report, CompareConfig())
    assert "win_rate_vs_start" not in report[0] and saved["report"][1]["win_rate_vs_start"] == 99.0
    saved["report"][1]["responses"] = rows("x")[:2]
    with pytest.raises(ValueError, match="different numbers of prompts"):
        rejudge(saved, "judge:any")


def test_rejudge_names_a_missing_or_foreign_report(tmp_path):
    from raylign.data.readers import DataError
    from raylign.evaluation.alignment_report import read_saved_report

    with pytest.raises(DataError, match="no such report"):
        read_saved_report(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(DataError, match="bad.json: not valid JSON"):
        read_saved_report(str(bad))
    bad.write_text('{"report": [{"policy": "start"}], "config": {}}')
    with pytest.raises(DataError, match="not a report of raylign eval compare"):
        read_saved_report(str(bad))
