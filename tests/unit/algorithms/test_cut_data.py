"""CUT data: contrasts from judgment rows, seeded positive downsampling, aligned encodings."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from raylign.algorithms.cut import CUTConfig
from raylign.algorithms.cut_data import (
    CUTExample,
    aligned_logprobs,
    check_alignment,
    downsample_positives,
    encode_examples,
    is_negative,
    judged_messages,
    load_judgments,
    pack_examples,
)
from raylign.data.readers import DataError
from raylign.models.sequences import pack_prompt_responses

ROWS = [
    {"id": 0, "instruction": "Say hi.", "input": "", "output": "Hi there!", "judgment": None},
    {"id": 1, "instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 6.",
     "judgment": "The sum is wrong: 2 + 3 = 5."},
    {"id": 2, "instruction": "Name a colour.", "input": "", "output": "Blue.", "judgment": None},
    {"id": 3, "instruction": "Capital of France?", "input": "", "output": "Lyon is the capital of France.",
     "judgment": "Incorrect, the capital of France is Paris."},
]


def _write(path, rows, raw_lines=()):
    with gzip.open(path, "wt") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in raw_lines:
            handle.write(line + "\n")
    return path


def test_load_judgments_maps_null_to_positive_and_merges_files(tmp_path):
    first = _write(tmp_path / "a.jsonl.gz", ROWS[:2])
    second = _write(tmp_path / "b.jsonl.gz", ROWS[2:])
    rows = load_judgments([first, second])
    assert [is_negative(r) for r in rows] == [False, True, False, True]
    assert rows[1]["prompt"] == "Add the numbers.\n\n2 and 3" and rows[1]["output"] == "2 + 3 = 6."


def test_bad_judgment_row_names_file_line_and_field(tmp_path):
    path = _write(tmp_path / "bad.jsonl.gz", ROWS[:1] + [{"instruction": "x", "input": "", "judgment": None}])
    with pytest.raises(DataError, match=r"bad.jsonl.gz:2: missing field 'output'"):
        load_judgments(path)
    path = _write(tmp_path / "typed.jsonl.gz", [{**ROWS[1], "judgment": 3}])
    with pytest.raises(DataError, match=r"typed.jsonl.gz:1: field 'judgment' should be str"):
        load_judgments(path)


def test_downsampling_keeps_all_negatives_and_a_seeded_share_of_positives():
    rows = [{"judgment": None, "output": f"ok {i}", "i": i} for i in range(20)]
    rows += [{"judgment": "bad", "output": f"bad {i}", "i": 100 + i} for i in range(8)]
    kept = downsample_positives(rows, 0.25, seed=0)
    assert sum(is_negative(r) for r in kept) == 8
    assert sum(not is_negative(r) for r in kept) == 2  # int(0.25 * 8)
    assert kept == downsample_positives(rows, 0.25, seed=0)  # reproducible
    assert [r["i"] for r in kept] == sorted(r["i"] for r in kept)  # file order kept
    others = {tuple(r["i"] for r in downsample_positives(rows, 0.25, seed=s)) for s in range(6)}
    assert len(others) > 1  # the seed matters
    shuffled = rows[::-1]  # the choice depends on the rows, not on their order
    assert sorted(r["i"] for r in downsample_positives(shuffled, 0.25, 0)) == [r["i"] for r in kept]
    assert downsample_positives(rows, None) == rows
    assert downsample_positives(rows, 5.0) == rows  # asks for more positives than exist


def test_judgment_prompt_holds_instruction_and_judgment():
    content = judged_messages({**ROWS[1], "prompt": "Add the numbers.\n\n2 and 3"}, CUTConfig().judgment_template)
    text = content[0]["content"]
    assert "### Judgment:\nThe sum is wrong: 2 + 3 = 5." in text and "Add the numbers.\n\n2 and 3" in text


def _check_encodings(tokenizer, rows, config, max_length):
    examples = encode_examples(tokenizer, rows, config, max_length)
    packed = pack_examples(examples, tokenizer.pad_token_id)  # asserts the alignment itself
    negative, n, batch = packed["negative"], packed["n"], packed["batch"]
    assert negative.tolist() == [is_negative(r) for r in rows] and n == len(rows)
    assert batch["input_ids"].shape[0] == n + int(negative.sum())
    for example, row in zip(examples, rows):
        assert example.response[-1] == tokenizer.eos_token_id
        assert len(example.plain_prompt) + len(example.response) <= max_length
        text = tokenizer.decode(example.response[:-1])
        assert row["output"].startswith(text) and text  # the response tokens spell the output (maybe cut)
        if example.negative:
            assert len(example.judged_prompt) > len(example.plain_prompt)
            assert len(example.judged_prompt) + len(example.response) <= max_length
    # response-aligned log-probs: judged rows (after the N plain ones) land on the negatives
    logprobs = torch.randn(batch["input_ids"].shape)
    plain, judged, mask = aligned_logprobs(logprobs, packed)
    response_mask = batch["response_mask"].bool()
    for j, i in enumerate(negative.nonzero().squeeze(-1).tolist()):
        width = int(mask[i].sum())
        assert torch.equal(judged[i, :width], logprobs[n + j][response_mask[n + j]])
        assert torch.equal(plain[i, :width], logprobs[i][response_mask[i]])
    assert not judged[~negative].any()
    return examples


def test_encodings_align_token_for_token_with_the_tiny_tokenizer(tiny_model_dir, tmp_path):
    from raylign.models.chat import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = load_judgments(_write(tmp_path / "rows.jsonl.gz", ROWS))
    _check_encodings(tokenizer, rows, CUTConfig(max_response_tokens=12), 48)


def test_encodings_align_with_the_default_tokenizer_on_real_judgments(shared_data):
    from raylign.models.chat import load_tokenizer
    from raylign.models.local import ModelNotFoundError
    from raylign.models.registry import resolve_model

    try:
        path = resolve_model("SmolLM2-135M-Instruct")
    except ModelNotFoundError:
        pytest.skip("the default model is not prepared here")
    tokenizer = load_tokenizer(str(path))
    rows = load_judgments(shared_data / "cut_judgments_iter3.jsonl.gz", limit=40)
    assert any(is_negative(r) for r in rows) and not all(is_negative(r) for r in rows)
    examples = _check_encodings(tokenizer, rows, CUTConfig(max_response_tokens=128), 256)
    assert any(len(e.response) == 128 for e in examples)  # long outputs were cut (EOS kept)


def test_misaligned_encodings_are_refused():
    plain = pack_prompt_responses([[1, 2], [1]], [[5, 6, 7], [8, 9]], pad_id=0)
    judged = pack_prompt_responses([[1, 2, 3, 4], [3, 4, 1]], [[5, 6, 7], [8, 4]], pad_id=0)
    with pytest.raises(AssertionError, match=r"row\(s\) \[1\]"):
        check_alignment(plain, judged)
    check_alignment(plain, pack_prompt_responses([[4], [3, 4, 1]], [[5, 6, 7], [8, 9]], pad_id=0))
    packed = pack_examples([CUTExample("a", True, [1, 2], [1, 2, 3], [5, 6]), CUTExample("b", False, [4], None, [7])], 0)
    assert packed["batch"]["input_ids"].tolist() == [[1, 2, 5, 6, 0], [4, 7, 0, 0, 0], [1, 2, 3, 5, 6]]

