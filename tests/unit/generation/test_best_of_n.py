"""Prompt selection and the multi-sample output of `raylign generate` (no Ray, no model)."""

import json

import pytest

from raylign.data.prompt_list import PromptListConfig, read_prompts
from raylign.data.readers import DataError
from raylign.data.splits import split_of
from raylign.generation.best_of_n import to_multisamples


@pytest.fixture
def instructions(tmp_path):
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Question number {i}?", "dataset": "t"}) + "\n" for i in range(60)))
    return path


def test_split_keeps_exactly_the_prompts_hashed_to_it(instructions):
    everything = read_prompts(PromptListConfig(path=str(instructions)))
    test = read_prompts(PromptListConfig(path=str(instructions), split="test", test_fraction=0.3))
    train = read_prompts(PromptListConfig(path=str(instructions), split="train", test_fraction=0.3))
    assert len(test) + len(train) == len(everything) == 60 and 0 < len(test) < 60
    assert all(split_of(r["prompt_id"], 0.3, 0.0, 0) == "test" for r in test)
    assert {r["prompt_id"] for r in test}.isdisjoint(r["prompt_id"] for r in train)
    # limit counts kept prompts, in file order
    first = read_prompts(PromptListConfig(path=str(instructions), split="test", test_fraction=0.3, limit=3))
    assert [r["instruction"] for r in first] == [r["instruction"] for r in test[:3]]


def test_an_empty_split_names_the_file_and_split(instructions):
    with pytest.raises(DataError, match=r"instructions.jsonl: no prompts in split 'validation'"):
        read_prompts(PromptListConfig(path=str(instructions), split="validation", validation_fraction=0.0))


def test_multisamples_group_samples_per_prompt_in_order():
    candidates = [
        {"prompt_uid": "0", "instruction": "a", "response": " x ", "sample_index": 0, "dataset": "d"},
        {"prompt_uid": "1", "instruction": "b", "input": "ctx", "response": "y", "sample_index": 0},
        {"prompt_uid": "0", "instruction": "a", "response": "z", "sample_index": 1, "dataset": "d"},
    ]
    assert to_multisamples(candidates, "gen") == [
        {"instruction": "a", "input": "", "output": ["x", "z"], "generator": "gen", "dataset": "d"},
        {"instruction": "b", "input": "ctx", "output": ["y"], "generator": "gen", "dataset": None},
    ]


def test_a_prompt_repeated_in_the_file_is_listed_once(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": p, "chosen": "a", "rejected": "b"} for p in ("one?", "two?", "one?")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [r["instruction"] for r in read_prompts(PromptListConfig(path=str(path)))] == ["one?", "two?"]
