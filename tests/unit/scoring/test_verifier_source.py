"""The verifier as a reward source: a check that raises or hangs scores 0 or stops the run, as
configured, in this process and in Ray tasks; mixes and penalties on top of it."""

import time

import pytest

from raylign.scoring.base import RewardConfig
from raylign.scoring.sources import make_reward_source, overlong_fraction
from raylign.scoring.verifier_source import VerifierError, VerifierRewardSource
from raylign.scoring.verifiers import VerifierConfig


def rows(*responses, answer="7"):
    return [{"prompt_id": f"p{i}", "prompt": "What is 3 + 4?", "answer": answer, "response": r,
             "response_token_ids": list(range(len(r.split())))} for i, r in enumerate(responses)]


def explode(response, answer, extracted):
    if "boom" in response:
        raise ZeroDivisionError("a broken check")
    return 1.0


def hang(response, answer, extracted):
    if "slow" in response:
        time.sleep(30)
    return 1.0


def source(check: str, on_error="zero", **extra) -> VerifierRewardSource:
    return VerifierRewardSource(VerifierConfig(checks={f"{__name__}:{check}": 1.0, "numeric": 1.0},
                                               on_error=on_error, **extra))


def test_scores_in_process():
    assert VerifierRewardSource(VerifierConfig()).score(rows("7", "3 + 4 = 7", "8")) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("check,bad", [("explode", "boom 7"), ("hang", "slow 7")])
def test_a_failing_check_scores_zero_and_the_rest_still_count(check, bad):
    started = time.perf_counter()
    # a limit well above a real check's time, so a busy machine does not time out the good rows
    assert source(check, timeout_s=2.0).score(rows("7", bad, "6")) == [2.0, 0.0, 1.0]
    assert time.perf_counter() - started < 15


@pytest.mark.parametrize("check,bad,message", [
    ("explode", "boom", "row p1: a check raised ZeroDivisionError: a broken check"),
    ("hang", "slow", "row p1: a check took longer than reward.verifier.timeout_s=0.3"),
])
def test_on_error_raise_names_the_row_and_the_cause(check, bad, message):
    with pytest.raises(VerifierError, match=message):
        source(check, on_error="raise", timeout_s=0.3).score(rows("7", bad))


def test_a_prompt_without_an_answer_is_a_clear_error():
    with pytest.raises(VerifierError, match="row p0 has no 'answer'"):
        VerifierRewardSource(VerifierConfig()).score(rows("7", answer=""))


def test_in_ray_tasks_a_hang_or_raise_scores_zero(ray_cluster):
    many = rows(*(["7", "boom", "slow 7", "5"] * 3))
    assert source("explode", timeout_s=2.0, rows_per_task=4).score(many) == [2.0, 0.0, 2.0, 1.0] * 3
    hung = source("hang", timeout_s=2.0, rows_per_task=5).score(many)
    assert hung == [2.0, 1.0, 0.0, 1.0] * 3


def test_mix_of_a_verifier_and_another_source_with_overlong_shaping():
    config = RewardConfig(kind="mix", overlong_buffer=2, overlong_penalty=0.5, mix=[
        {"weight": 1.0, "source": {"kind": "verifier"}},
        {"weight": 0.5, "source": {"kind": "function", "function": f"{__name__}:length_reward"}},
    ])
    reward = make_reward_source(config, max_new_tokens=4)
    # tokens (words) 1, 3, 4: overlong share 0, 1/2, 1 of the 0.5 penalty
    assert reward.score(rows("7", "it is 7", "so it is 7")) == [1.0 + 0.5, 1.0 + 1.5 - 0.25, 1.0 + 2.0 - 0.5]


def length_reward(rows):
    return [float(len(r["response"].split())) for r in rows]


@pytest.mark.parametrize("tokens,expected", [(10, 0.0), (12, 0.0), (13, 0.25), (15, 0.75), (16, 1.0), (20, 1.0)])
def test_overlong_fraction_hand_values(tokens, expected):
    assert overlong_fraction(tokens, max_tokens=16, buffer=4) == expected
    assert overlong_fraction(tokens, max_tokens=16, buffer=0) == 0.0


def test_overlong_shaping_needs_the_sampling_limit():
    with pytest.raises(ValueError, match="sampling.max_new_tokens"):
        make_reward_source(RewardConfig(kind="verifier", overlong_buffer=4))
