"""Which prompts train at which step (epochs, resume, uids), the corpus checks before Ray, and
the feeder seeing a step only when all of it arrived."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raylign.data.prompt_corpus import ERROR_COLUMN, PromptCorpus, PromptRows
from raylign.data.readers import DataError, iter_records
from raylign.data.step_prompts import StepPrompts, assign_steps
from raylign.engine.loop import StepAssembler, step_is_whole


def chunked(count: int, chunk: int):
    """`open_pass` over rows {"i": 0..count-1} in chunks, counting the passes."""
    def open_pass():
        for start in range(0, count, chunk):
            yield [{"i": i} for i in range(start, min(count, start + chunk))]
    return open_pass


@pytest.mark.parametrize("per_step, keep_rows", [(1, 1), (3, 4), (4, 1000), (7, 6), (30, 2)])
def test_step_s_gets_rows_s_times_p_onward_cycling_as_epochs(per_step, keep_rows):
    steps = StepPrompts(chunked(23, 5), per_step, keep_rows=keep_rows)
    # forward, then a resume-like jump back and a jump ahead past the end of the corpus
    for step in list(range(12)) + [3, 40, 0]:
        assert [r["i"] for r in steps.rows(step)] == [(step * per_step + j) % 23 for j in range(per_step)]
    assert steps.size == 23


def test_rows_carry_step_uid_and_step_size():
    rows = StepPrompts(chunked(3, 2), 2).rows(5)
    assert [(r["i"], r["batch_index"], r["prompt_uid"], r["step_prompts"]) for r in rows] == [
        (1, 5, "5:0", 2), (2, 5, "5:1", 2)]


def test_a_resumed_run_gets_the_prompts_it_would_have_had():
    full = assign_steps([{"i": i} for i in range(5)], 3, 0, 8)
    resumed = assign_steps([{"i": i} for i in range(5)], 3, 5, 8)
    assert resumed == [r for r in full if r["batch_index"] >= 5]


def test_a_corpus_that_fits_the_window_is_read_once_and_a_larger_one_once_per_epoch():
    small = StepPrompts(chunked(10, 4), 4, keep_rows=100)
    for step in range(10):  # four epochs
        small.rows(step)
    assert small.passes == 1
    large = StepPrompts(chunked(40, 4), 4, keep_rows=8)
    for step in range(30):  # three epochs
        large.rows(step)
    assert large.passes == 3
    assert len(large._kept) <= 8 // 4 + 2  # only a window of chunks is held


def test_an_empty_corpus_or_split_names_it():
    with pytest.raises(DataError, match=r"^data.jsonl \(split 'test'\): no prompts to train on"):
        StepPrompts(lambda: iter([]), 2, name="data.jsonl (split 'test')").rows(0)
    with pytest.raises(ValueError):
        assign_steps([], 2, 0, 1)


def test_a_corpus_that_shrinks_between_passes_is_an_error():
    sizes = iter([10, 6])

    def open_pass():
        count = next(sizes)
        yield from ([{"i": i} for i in range(start, min(count, start + 2))] for start in range(0, count, 2))

    steps = StepPrompts(open_pass, 4, keep_rows=0)
    steps.rows(2)  # rows 8, 9, 0, 1: the first pass ends, the second starts
    with pytest.raises(DataError, match="changed while training"):
        steps.rows(4)  # row 16 % 10 = 6 is past the end of the second pass


def write_jsonl_gz(path, rows):
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def test_corpus_check_finds_bad_input_before_ray(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        PromptCorpus(str(tmp_path / "missing.jsonl")).check()
    (tmp_path / "p.csv").write_text("prompt\nhi\n")
    with pytest.raises(DataError, match="unknown data format"):
        PromptCorpus(str(tmp_path / "p.csv")).check()
    rrhf = write_jsonl_gz(tmp_path / "r.jsonl.gz", [{"query": "q", "responses": ["a"], "scores": [1]}])
    with pytest.raises(DataError, match="format 'rrhf' gives .* not 'preference' rows"):
        PromptCorpus(rrhf, kind="preference").check()
    with pytest.raises(DataError, match="unknown data format 'yaml'"):
        PromptCorpus(rrhf, format="yaml").check()
    assert PromptCorpus(rrhf, kind="prompt").check().format == "rrhf"  # resolved for every Ray Data block


def test_parquet_records_are_read_batch_by_batch(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(3000)]}), path, row_group_size=1000)
    assert [r.data["prompt"] for r in iter_records(path, limit=2)] == ["q0", "q1"]
    assert sum(1 for _ in iter_records(path)) == 3000
    assert PromptCorpus(str(path), kind="prompt").check().format == "generic"


def test_prompt_rows_stage_keeps_one_split_and_turns_a_bad_record_into_an_error_block():
    records = pa.Table.from_pylist([{"prompt": f"q{i}", "path": "d.jsonl"} for i in range(200)])
    whole = PromptRows(PromptCorpus("d.jsonl", kind="prompt", format="generic"))(records)
    test = PromptRows(PromptCorpus("d.jsonl", kind="prompt", format="generic", split="test"))(records)
    train = PromptRows(PromptCorpus("d.jsonl", kind="prompt", format="generic", split="train"))(records)
    assert whole.num_rows == 200 and 20 < test.num_rows < 60
    assert not set(test.column("prompt_id").to_pylist()) & set(train.column("prompt_id").to_pylist())
    bad = pa.Table.from_pylist([{"prompt": "q", "path": "d.jsonl"}, {"prompt": None, "path": "d.jsonl"}])
    error = PromptRows(PromptCorpus("d.jsonl", kind="prompt", format="generic", on_error="raise"))(bad)
    assert error.column_names == [ERROR_COLUMN] and "missing field 'prompt'" in error.column(ERROR_COLUMN)[0].as_py()


def rollouts(step: int, part: str, prompts: int, rows: int, step_prompts: int = 4):
    """Rows as `sample_batch` stamps them for one part of a step."""
    return [{"batch_index": step, "part": part, "rows_in_batch": rows, "part_prompts": prompts,
             "step_prompts": step_prompts, "n": n} for n in range(rows)]


def test_a_step_in_several_pieces_is_whole_only_when_every_row_arrived():
    steps = StepAssembler()
    first, second = rollouts(0, "0:0", 2, 4), rollouts(0, "0:2", 2, 3)  # one prompt of the second part rejected
    assert steps.add(first[:3]) == []
    assert steps.add(first[3:] + rollouts(1, "1:0", 4, 8)) == [(1, rollouts(1, "1:0", 4, 8))]
    assert steps.add(second[:2]) == []  # half the step's prompts, and one row still missing
    ((step, rows),) = steps.add(second[2:])
    assert step == 0 and rows == first + second and steps.pending == {}


def test_whole_step_rule():
    assert step_is_whole(rollouts(0, "0:0", 4, 8))
    assert not step_is_whole(rollouts(0, "0:0", 3, 6))  # the fourth prompt's part has not come
    assert not step_is_whole(rollouts(0, "0:0", 4, 8)[:-1])
    # rows from before parts were stamped: the call's row count alone
    assert step_is_whole([{"batch_index": 0, "rows_in_batch": 2}] * 2)
