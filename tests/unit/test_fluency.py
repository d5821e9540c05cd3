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
