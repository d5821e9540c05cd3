"""Offline trainer data: SFT row mapping, the Ray Data row stages, the split, length batches."""

import pyarrow as pa
import pytest

from raylign.data.config import TrainDataConfig
from raylign.data.datasets import CanonicalRows, SplitFilter
from raylign.data.readers import DataError
from raylign.data.splits import split_of
from raylign.training.batching import length_grouped
from raylign.training.config import OfflineTrainConfig
from raylign.training.trainer import total_steps


def _rows(kind, fmt, records, on_error="raise"):
    table = pa.Table.from_pylist([{**r, "path": "data.jsonl"} for r in records])
    return CanonicalRows(kind, fmt, on_error)(table).to_pylist()


def test_sft_rows_from_alpaca_messages_hh_and_cut():
    alpaca = _rows("sft", "alpaca", [{"instruction": "Add", "input": "2+2", "output": "4"}])[0]
    assert alpaca["messages"] == [{"role": "user", "content": "Add\n\n2+2"}] and alpaca["response"] == "4"
    chat = _rows("sft", "generic", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}])
    assert chat[0]["messages"] == [{"role": "user", "content": "Hi"}] and chat[0]["response"] == "Hello"
    hh = _rows("sft", "hh", [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go"}])
    assert hh[0]["response"] == "Hello"
    cut = _rows("sft", "cut", [{"instruction": "a", "input": "", "output": "ok", "judgment": None},
                               {"instruction": "b", "input": "", "output": "bad", "judgment": "wrong"}])
    assert [r["response"] for r in cut] == ["ok"]  # judged responses are not demonstrations


def test_bad_rows_name_the_file_and_field_or_are_skipped():
    with pytest.raises(DataError, match=r"data.jsonl.*missing field 'output'"):
        _rows("sft", "alpaca", [{"instruction": "x", "input": ""}])
    with pytest.raises(DataError, match="must end with an 'assistant' turn"):
        _rows("sft", "generic", [{"messages": [{"role": "user", "content": "Hi"}]}])
    kept = _rows("sft", "alpaca", [{"instruction": "x", "output": None}, {"instruction": "y", "output": "z"}], "skip")
    assert [r["response"] for r in kept] == ["z"]
    with pytest.raises(DataError, match="gives no 'sft' rows"):
        _rows("sft", "rrhf", [{"query": "q"}])
    pairs = _rows("preference", "auto", [{"prompt": "p", "chosen": "a", "rejected": "b"}])
    assert pairs[0]["chosen"] == "a"


def test_split_filter_matches_the_reward_model_split():
    config = TrainDataConfig(test_fraction=0.3, validation_fraction=0.2, split_seed=1)
    ids = [f"p{i}" for i in range(300)]
    table = pa.table({"prompt_id": ids})
    parts = {s: SplitFilter.of(s, config)(table).column("prompt_id").to_pylist() for s in ("train", "validation", "test")}
    assert sorted(sum(parts.values(), [])) == sorted(ids)
    assert all(split_of(i, 0.3, 0.2, 1) == "test" for i in parts["test"]) and 60 < len(parts["test"]) < 120


def test_length_grouped_batches_cover_every_row_with_similar_lengths():
    rows = [{"length": (i * 37) % 101, "i": i} for i in range(200)]
    batches = list(length_grouped(iter(rows), batch_size=8, window_batches=5, seed=3))
    assert sorted(r["i"] for b in batches for r in b) == list(range(200))
    assert all(len(b) <= 8 for b in batches)
    spread = sum(max(r["length"] for r in b) - min(r["length"] for r in b) for b in batches) / len(batches)
    assert spread < 30  # unsorted batches of 8 from 0..100 would spread ~75
    again = list(length_grouped(iter(rows), batch_size=8, window_batches=5, seed=3))
    assert [[r["i"] for r in b] for b in again] == [[r["i"] for r in b] for b in batches]


def test_total_steps_counts_per_rank_batches_and_caps_at_max_steps():
    config = OfflineTrainConfig(batch_size=4, grad_accum=2, epochs=3)
    assert total_steps(config, 100, 2) == 3 * 7  # 50 rows per rank -> 13 micro-batches -> 7 steps
    assert total_steps(OfflineTrainConfig(batch_size=4, max_steps=5), 100, 2) == 5
