"""The arithmetic generator: seeded, disjoint splits by problem, answers that are right."""

import gzip
import json

import pytest

from raylign.data.arithmetic import HELD_OUT_PHRASINGS, PHRASINGS, SUFFIX, generate, split_of_problem, write_rows


def test_same_seed_same_rows_and_other_seed_other_rows():
    assert generate(30, seed=1) == generate(30, seed=1)
    assert generate(30, seed=1) != generate(30, seed=2)


def test_train_and_test_never_share_a_problem_in_any_wording():
    train = generate(600, "train", seed=0)
    test = generate(200, "test", seed=5)  # another seed draws other wordings of the test problems
    assert not {r["problem"] for r in train} & {r["problem"] for r in test}
    for row in test:
        task, a, b = row["problem"].split(":")
        assert split_of_problem(task, int(a), int(b), 0.2, 0) == "test"


def test_answers_operands_and_phrasings():
    rows = generate(300, "train")
    assert {r["task"] for r in rows} == {"add", "sub", "mul"}
    for row in rows:
        task, a, b = row["problem"].split(":")
        a, b = int(a), int(b)
        assert int(row["answer"]) == {"add": a + b, "sub": a - b, "mul": a * b}[task] and int(row["answer"]) >= 0
        assert row["prompt"].endswith(SUFFIX)
        assert any(p.format(a=a, b=b) + SUFFIX == row["prompt"] for p in PHRASINGS[task])
        assert (10 <= a <= 99 and 10 <= b <= 99) if task != "mul" else (2 <= a <= 9 and 10 <= b <= 99)
    assert len({r["problem"] for r in rows}) == len(rows)


def test_held_out_phrasings_are_wordings_the_generator_never_trains_on():
    def template(prompt, a, b):
        return prompt.removesuffix(SUFFIX).replace(str(a), "{a}", 1).replace(str(b), "{b}", 1)

    rows = generate(60, "test", seed=3, held_out_phrasings=True)
    for row in rows:
        task, a, b = row["problem"].split(":")
        assert template(row["prompt"], a, b) in HELD_OUT_PHRASINGS[task]
        assert template(row["prompt"], a, b) not in PHRASINGS[task]
    assert {r["problem"] for r in rows} == {r["problem"] for r in generate(60, "test", seed=3)}  # same problems


def test_bad_requests_are_clear(tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        generate(3, "dev")
    with pytest.raises(ValueError, match=r"unknown tasks \['div'\]"):
        generate(3, tasks=("add", "div"))
    with pytest.raises(ValueError, match="distinct test problems"):
        generate(5000, "test", tasks=("mul",))


def test_write_rows_round_trips(tmp_path):
    rows = generate(5)
    path = write_rows(rows, tmp_path / "deep" / "a.jsonl.gz")
    assert [json.loads(line) for line in gzip.open(path, "rt")] == rows
