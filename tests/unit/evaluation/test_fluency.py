"""Outputs files as prompt + response rows for `raylign eval fluency` (no Ray, no model)."""

import json

import pytest

from raylign.data.readers import DataError
from raylign.evaluation.fluency import outputs_rollouts


def test_outputs_become_user_turns_with_their_input(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps([{"instruction": "Add.", "input": "1 + 2", "output": "3", "generator": "g"},
                                {"instruction": "Hi?", "output": "Hello.", "generator": "g"}]))
    assert outputs_rollouts(path) == [
        {"messages": [{"role": "user", "content": "Add.\n\n1 + 2"}], "response": "3"},
        {"messages": [{"role": "user", "content": "Hi?"}], "response": "Hello."},
    ]


def test_a_missing_output_names_the_field(tmp_path):
    path = tmp_path / "outputs.jsonl"
    path.write_text(json.dumps({"instruction": "Hi?"}) + "\n")
    with pytest.raises(DataError, match="output"):
        outputs_rollouts(path)


def test_repeated_ngram_fraction_by_hand():
    from raylign.scoring.repetition import repeated_ngram_fraction

    # "a b c d a b c d": 5 four-grams, unique {abcd, bcda, cdab, dabc} = 4 -> 1 - 4/5
    assert repeated_ngram_fraction("a b c d a b c d") == pytest.approx(0.2)
    # the same sentence three times: 12 words, 9 four-grams, 4 unique -> 5/9; case is ignored
    assert repeated_ngram_fraction("I am so sorry. I am so sorry. i AM so sorry.") == pytest.approx(5 / 9)
    assert repeated_ngram_fraction("one two three four five") == 0.0  # no n-gram repeats
    assert repeated_ngram_fraction("too short") == 0.0 and repeated_ngram_fraction("") == 0.0
    assert repeated_ngram_fraction("x y x y x", n=2) == pytest.approx(1 - 2 / 4)
