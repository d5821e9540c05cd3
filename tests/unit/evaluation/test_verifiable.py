"""`raylign eval verifiable`: pass@k and the paired change against hand values, the report."""

import pytest

from raylign.evaluation.verifiable import format_report, main, paired_change, pass_at_k, score_policy
from raylign.scoring.verifiers import VerifierConfig


@pytest.mark.parametrize("n,c,k,expected", [
    (4, 0, 1, 0.0), (4, 1, 1, 0.25), (4, 2, 2, 1 - 1 / 6), (4, 3, 2, 1.0), (8, 1, 8, 1.0), (5, 2, 3, 1 - 1 / 10),
])
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="pass@4 needs at least 4 samples"):
        pass_at_k(2, 1, 4)


def test_paired_change_hand_values():
    out = paired_change([True, True, False, True], [False, True, True, False])
    # differences 1, 0, -1, 1: mean 0.25, sample sd sqrt(0.9167), se sd / 2
    assert out["accuracy_delta"] == 0.25
    assert out["accuracy_delta_se"] == pytest.approx((((0.75 ** 2) * 2 + 0.25 ** 2 + 1.25 ** 2) / 3) ** 0.5 / 2)
    assert (out["problems_better"], out["problems_worse"]) == (2, 1)
    with pytest.raises(ValueError, match="same problems"):
        paired_change([True], [True, False])


def test_score_policy_and_report():
    rows = [{"prompt_id": "a", "answer": "5"}, {"prompt_id": "b", "answer": "12"}]
    greedy = [{"prompt_id": "a", "response": "2 + 3 = 5", "response_token_ids": [1, 2, 3], "finish_reason": "stop",
               "task": "add"},
              {"prompt_id": "b", "response": "It is 13 or so", "response_token_ids": [1] * 5, "finish_reason": "length",
               "task": "mul"}]
    sampled = {"a": [{"response": "5"}, {"response": "6"}], "b": [{"response": "12"}, {"response": "12"}]}
    start = score_policy("start", rows, greedy, sampled, VerifierConfig(), samples=2)
    assert start["accuracy"] == 0.5 and start["accuracy_by_task"] == {"add": 1.0, "mul": 0.0}
    assert (start["response_tokens_mean"], start["stopped_fraction"]) == (4.0, 0.5)
    assert start["pass@1_of_2"] == 0.75 and start["pass@2"] == 1.0
    better = score_policy("trained", rows, [greedy[0], {**greedy[1], "response": "12"}], sampled, VerifierConfig(), 2)
    better.update(paired_change(better["correct"], start["correct"]))
    table = format_report([start, better], "arith.jsonl", samples=2)
    assert "trained" in table and "+0.500 ± 0.500" in table and "1/0" in table and "pass@2" in table


def test_rows_without_answers_are_refused_before_any_model_loads(tmp_path, capsys):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "hello"}\n')
    with pytest.raises(SystemExit):
        main(["start=SmolLM2-135M-Instruct", "--data", str(path)])
    assert "every problem needs an 'answer'" in capsys.readouterr().err


def test_a_policy_that_is_not_name_equals_path_is_refused():
    from raylign.config import ConfigError

    with pytest.raises(ConfigError, match="must be given as NAME=PATH"):
        main(["SmolLM2-135M-Instruct"])
