"""The iterative mode's rules: which of a policy's samples are hacks, and the pairs made of them."""

import json

import pytest

from raylign.data.readers import DataError
from raylign.feedback.hack_pairs import hack_flags, main, pairs_of

GOOD = "A locksmith can open it for you. Please don't try to force the lock yourself."


@pytest.mark.parametrize("text, flag", [
    ("", "empty"),
    ("Sure.", "empty"),
    ("I'm so sorry. " * 6, "repetition"),
    ("I'm so sorry. " * 6, "apology"),
    ("Break the window first.<|im_end|>\n<|im_start|>assistant\nI can't help with that.", "marker"),
    ("Break the window first.< |im_end| > I can't help with that.", "marker"),
    ("Here is one way to do it: you take the tension wrench and", "truncated"),
    ("That's an interesting question. Let me think about it.", "noncommittal"),
    ("That's a tough question.", "noncommittal"),
    ("That's a pretty tough one.", "noncommittal"),
    ("That's a complex topic that goes all the way back to Einstein's theory of relativity.", "noncommittal"),
    (GOOD + " Let me know if you have any other questions! " * 2, "padding"),
    ("You're referring to your car?", "echo_question"),
    ("You're referring to the legendary singer, aren't you?", "echo_question"),
    ("Are you asking about the price of rice?", "echo_question"),
])
def test_rules_flag_each_hack_form(text, flag):
    assert flag in hack_flags(text)


def test_ordinary_answers_pass():
    assert hack_flags(GOOD) == []
    assert hack_flags("No. I won't help with that, because it could hurt someone.") == []
    # a clarifying question with substance is an answer, not an echo
    assert hack_flags("Do you mean the lock on the front door? If so, a locksmith can open it for you.") == []
    assert hack_flags("What kind of car is it?") == []
    assert hack_flags("That's a tough question, so here is the long answer: the treaty was signed in 1648 after "
                      "thirty years of war, and it settled borders across the whole of Europe.") == []


def test_flagged_top_responses_become_rejected_against_the_best_passing_one():
    row = {"prompt": "q", "messages": [{"role": "user", "content": "q"}],
           "responses": ["I'm so sorry. " * 6, GOOD, "", "Ok then you just"], "scores": [0.9, 0.5, 0.7, 0.1],
           "sources": ["policy", "dataset:chosen", "policy", "policy"]}
    pairs = pairs_of(row, top_k=2)
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(GOOD, row["responses"][0]), (GOOD, "")]
    assert pairs[0]["hack"] == "repetition,apology" and pairs[0]["chosen_source"] == "dataset:chosen"
    assert pairs_of({**row, "scores": [0.1, 0.9, 0.2, 0.0]}, top_k=2) == []  # the best is not a hack
    assert pairs_of({**row, "responses": ["", "", "", ""]}, top_k=2) == []  # nothing passes: no pair


def test_command_writes_preference_rows_and_names_a_bad_file(tmp_path, capsys):
    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text(json.dumps({"prompt": "q", "messages": [{"role": "user", "content": "q"}],
                                  "responses": ["", GOOD], "scores": [1.0, 0.0]}) + "\n")
    main(["--ranked", str(ranked), "--output", str(tmp_path / "pairs.jsonl")])
    (row,) = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert row["chosen"] == GOOD and row["rejected"] == "" and "1 hack pairs from 1 prompts" in capsys.readouterr().out
    ranked.write_text(json.dumps({"prompt": "q", "responses": []}) + "\n")
    with pytest.raises(DataError, match=r"ranked.jsonl.*missing field\(s\) \['messages', 'scores'\]"):
        main(["--ranked", str(ranked), "--output", str(tmp_path / "pairs.jsonl")])
