"""`raylign eval judges` on human chosen/rejected files: the reference, the split and the shown order."""

import gzip
import json

import pytest

from raylign.data.readers import DataError
from raylign.data.splits import split_of
from raylign.evaluation.judge_agreement import (
    agreement_metrics,
    chosen_shown_first,
    evaluate_annotator,
    read_reference_pairs,
)
from raylign.feedback.config import build_annotator, parse_spec


def _hh_file(tmp_path, n=60):
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(n):
            dialogue = f"\n\nHuman: question {i}?\n\nAssistant:"
            f.write(json.dumps({"chosen": dialogue + " a careful, longer answer", "rejected": dialogue + " no"}) + "\n")
        # a mangled transcript (as in the real file): the dialogues before the replies differ
        f.write(json.dumps({"chosen": "\n\nHuman: a?\n\nAssistant: x", "rejected": "\n\nHuman: b?\n\nAssistant: y"}) + "\n")
    return path


def test_hh_pairs_put_the_human_choice_on_a_seeded_side(tmp_path):
    path = _hh_file(tmp_path)
    with pytest.raises(DataError, match="hh.jsonl.gz:61"):
        read_reference_pairs(path)
    pairs = read_reference_pairs(path, on_error="skip")
    assert len(pairs) == 60
    for p in pairs:
        chosen_side = "output_1" if p["preference"] == 1.0 else "output_2"
        assert p[chosen_side] == "a careful, longer answer" and p["instruction"].startswith("question ")
    firsts = sum(p["preference"] == 1.0 for p in pairs)
    assert 15 < firsts < 45  # both orders are shown (a position-biased judge cannot score 100%)
    assert chosen_shown_first("abc") == chosen_shown_first("abc")


def test_hh_test_split_is_the_recipes_split(tmp_path):
    from raylign.data.adapters import load_rows

    path = _hh_file(tmp_path)
    rows = load_rows(path, "preference", "auto", on_error="skip")
    expected = [r["prompt"] for r in rows if split_of(r["prompt_id"], 0.2, 0.1, 0) == "test"]
    test = read_reference_pairs(path, "test", 0.2, 0.08, 0, on_error="skip")
    assert [p["instruction"] for p in test] == expected and expected
    assert len(read_reference_pairs(path, "test", 0.2, 0.08, 0, limit=3, on_error="skip")) == 3


def test_length_judge_agrees_on_every_hh_pair_and_first_shown_is_balanced(tmp_path):
    pairs = read_reference_pairs(_hh_file(tmp_path), on_error="skip")
    annotator = build_annotator(parse_spec("fn:raylign.feedback.annotators:length_reward"))
    report = evaluate_annotator(annotator, pairs, use_ray_data=False)
    assert report["agreement"] == 1.0 and report["pairs"] == 60
    assert report["first_shown"] == pytest.approx(sum(p["preference"] == 1.0 for p in pairs) / 60)


def test_agreement_metrics_by_hand():
    report = agreement_metrics([1.0, 2.0, 1.5, 1.2], [1.0, 1.0, 2.0, 1.5], swapped=[2.0, 2.0, 1.5, 1.9])
    # decided pairs: (1.0 vs 1.0) agree, (2.0 vs 1.0) disagree, (1.5 tie vs 2.0) half -> 1.5 / 3
    assert report["agreement"] == pytest.approx(0.5)
    assert report["confident_pairs"] == 3 and report["first_shown"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    # swapped back: 3 - 2.0 = 1.0 (same side as 1.0), 1.0 vs 2.0 (not), 1.5 vs 1.5, 1.1 vs 1.2
    assert report["swap_consistency"] == pytest.approx(0.75)
    # both orders: (1.0 + 3 - 2.0) / 2 = 1.0 agree; (2.0 + 3 - 2.0) / 2 = 1.5 tie vs 1.0 -> 1/2;
    # (1.5 + 1.5) / 2 = 1.5 tie vs 2.0 -> 1/2; the 1.5 reference is left out -> 2 / 3
    assert report["both_orders_agreement"] == pytest.approx(2 / 3)


def test_a_judge_that_always_picks_the_first_shown_is_a_tie_in_both_orders():
    ref = [1.0, 2.0, 2.0, 1.0]
    report = agreement_metrics([1.0] * 4, ref, swapped=[1.0] * 4)
    assert report["first_shown"] == 1.0 and report["swap_consistency"] == 0.0
    assert report["agreement"] == 0.5 and report["both_orders_agreement"] == 0.5
