import gzip
import json

import pytest

from raylign.data.adapters import load_rows, split_hh
from raylign.data.readers import DataError


def write_jsonl(path, rows, raw_lines=()):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


HH = {
    "chosen": "\n\nHuman: hi there\n\nAssistant: hello!\n\nHuman: how are you?\n\nAssistant: fine, thanks.",
    "rejected": "\n\nHuman: hi there\n\nAssistant: hello!\n\nHuman: how are you?\n\nAssistant: go away.",
}


def test_hh_preference_splits_dialogue(tmp_path):
    (row,) = load_rows(write_jsonl(tmp_path / "hh.jsonl", [HH]), "preference")
    assert row["chosen"] == "fine, thanks."
    assert row["rejected"] == "go away."
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user"]
    assert row["messages"][-1]["content"] == "how are you?"
    assert row["prompt"].startswith("Human: hi there")


def test_hh_prompt_and_ranklist(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH])
    (prompt,) = load_rows(path, "prompt")
    assert set(prompt) == {"prompt_id", "prompt", "messages"}
    (ranked,) = load_rows(path, "ranklist")
    assert ranked["responses"] == ["fine, thanks.", "go away."]
    assert ranked["scores"] == [1.0, 0.0]


def test_corrupted_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [HH, HH], raw_lines=['{"chosen": "\\n\\nHuman: x'])
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_rows(path, "preference")


def test_missing_field_names_field_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [HH, {"chosen": HH["chosen"]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: missing field 'rejected'"):
        load_rows(path, "preference", fmt="hh")


def test_wrong_type_names_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "responses": ["a", "b"], "scores": [1, "x"]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'scores'"):
        load_rows(path, "ranklist")


def test_skip_mode_keeps_good_rows(tmp_path):
    broken = {"chosen": HH["chosen"], "rejected": "\n\nHuman: other\n\nAssistant: x"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [HH, broken, HH])
    with pytest.raises(DataError, match=r"mixed\.jsonl:2"):
        load_rows(path, "preference")
    assert len(load_rows(path, "preference", on_error="skip")) == 2


def test_unsupported_kind_for_format(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [HH])
    with pytest.raises(DataError, match="not 'judgment' rows"):
        load_rows(path, "judgment")


def test_alpaca_eval_pairs_orientation_and_ties(tmp_path):
    rows = [
        {"instruction": "i1", "output_1": "A", "output_2": "B", "preference": 1.0},
        {"instruction": "i2", "output_1": "A", "output_2": "B", "preference": 1.9},
        {"instruction": "i3", "output_1": "A", "output_2": "B", "preference": 1.5},
    ]
    out = load_rows(write_jsonl(tmp_path / "p.jsonl", rows), "preference")
    assert [(r["chosen"], r["rejected"]) for r in out] == [("A", "B"), ("B", "A")]
    assert out[1]["preference"] == 1.9


def test_generic_jsonl_parquet_and_hf_dataset(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "p1", "chosen": "c1", "rejected": "r1"}, {"prompt": "p2", "chosen": "c2", "rejected": "r2"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prefs.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "prefs_ds"))
    for path in [write_jsonl(tmp_path / "prefs.jsonl", rows), tmp_path / "prefs.parquet", tmp_path / "prefs_ds"]:
        out = load_rows(path, "preference")
        assert [r["chosen"] for r in out] == ["c1", "c2"]
        assert out[0]["messages"] == [{"role": "user", "content": "p1"}]


def test_split_hh_requires_assistant_reply():
    with pytest.raises(DataError, match="does not end with an 'Assistant:' turn"):
        split_hh("\n\nHuman: only a question", "x:1")


# --- the real files in ../shared/data -------------------------------------------------


@pytest.mark.parametrize(
    "name, kind, at_least",
    [
        ("hh_rlhf_harmless.jsonl.gz", "preference", 1800),
        ("hh_rlhf_harmless.jsonl.gz", "prompt", 1800),
        ("alpaca_eval_instructions.jsonl.gz", "prompt", 600),
        ("alpaca_eval_gpt4_pairs.jsonl.gz", "preference", 19000),
        ("cut_judgments_iter1.jsonl.gz", "judgment", 1000),
        ("cut_judgments_iter2.jsonl.gz", "judgment", 1000),
        ("alpaca_farm_outputs_pairs.json", "prompt", 6),
        ("alpaca_farm_multisamples_sft.json", "prompt", 8),
        ("gsm8k_train.jsonl.gz", "prompt", 7473),
        ("gsm8k_test_dev.jsonl.gz", "prompt", 300),
        ("gsm8k_train.jsonl.gz", "sft", 7473),
    ],
)
def test_shared_data_files(shared_data, name, kind, at_least):
    rows = load_rows(shared_data / name, kind, on_error="skip")
    assert len(rows) >= at_least
    assert all(r["prompt"] for r in rows)


def test_cut_judgments_keep_null_judgment(shared_data):
    rows = load_rows(shared_data / "cut_judgments_iter1.jsonl.gz", "judgment")
    assert {"instruction", "input", "output", "judgment"} <= set(rows[0])
    assert any(r["judgment"] is None for r in rows) and any(r["judgment"] for r in rows)


def test_corrupted_copy_of_shared_file(shared_data, tmp_path):
    lines = gzip.open(shared_data / "hh_rlhf_harmless.jsonl.gz", "rt").read().splitlines()[:20]
    lines[11] = lines[11][: len(lines[11]) // 2]
    bad = tmp_path / "hh_corrupt.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"hh_corrupt\.jsonl\.gz:12: not valid JSON"):
        load_rows(bad, "preference")


def test_ray_dataset_from_adapter(shared_data, ray_cluster):
    from raylign.data.adapters import read_dataset

    ds = read_dataset(shared_data / "alpaca_eval_instructions.jsonl.gz", "prompt", limit=16)
    assert ds.count() == 16
    assert set(ds.take(1)[0]) >= {"prompt_id", "prompt", "messages"}


def test_truncated_or_fake_gzip_and_directories_name_the_problem(tmp_path):
    import gzip
    import json

    from raylign.data.readers import DataError, iter_records

    good = tmp_path / "good.jsonl.gz"
    with gzip.open(good, "wt") as handle:
        for i in range(3000):
            handle.write(json.dumps({"prompt": f"prompt number {i} " * 4}) + "\n")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text('{"prompt": "x"}\n')
    folder = tmp_path / "folder"
    folder.mkdir()
    for path, fragment in ((truncated, "truncated"), (plain, "not a valid gzip file"), (folder, "is a directory")):
        with pytest.raises(DataError, match=fragment) as info:
            list(iter_records(path))
        assert str(path) in str(info.value)


# --- verifiable tasks -----------------------------------------------------------------


def test_gsm8k_rows_carry_the_final_answer(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Tom has 2 apples and buys 1,000 more. How many?", "answer": "2 + 1000 = <<2+1000=1002>>1002\n#### 1,002"},
    ])
    prompt = load_rows(path, "prompt")[0]
    assert prompt["answer"] == "1002" and prompt["task"] == "gsm8k"
    assert prompt["prompt"].startswith("Tom has 2 apples") and "'#### <number>'" in prompt["prompt"]
    sft = load_rows(path, "sft")[0]
    assert sft["response"] == "2 + 1000 = 1002\n#### 1,002"  # the calculator notes go


def test_gsm8k_solution_without_an_answer_line_names_the_line(tmp_path):
    path = write_jsonl(tmp_path / "gsm.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "4"}])
    with pytest.raises(DataError, match="gsm.jsonl:2.*'answer' has no '#### <number>' line"):
        load_rows(path, "prompt")


def test_generic_prompts_keep_answer_and_task(tmp_path):
    path = write_jsonl(tmp_path / "arith.jsonl", [{"prompt": "What is 2 + 3?", "answer": 5, "task": "add"},
                                                  {"prompt": "hello"}])
    rows = load_rows(path, "prompt")
    assert (rows[0]["answer"], rows[0]["task"]) == ("5", "add")
    assert "answer" not in rows[1]


def test_bundled_verifiable_samples():
    from raylign.data.bundled import ARITH_TEST, ARITH_TRAIN, GSM8K_TEST, GSM8K_TRAIN

    for path, count in [(ARITH_TRAIN, 1500), (ARITH_TEST, 300), (GSM8K_TRAIN, 500), (GSM8K_TEST, 100)]:
        rows = load_rows(path, "prompt")
        assert len(rows) == count and all(r["answer"] for r in rows), path
    train = {r["prompt_id"] for r in load_rows(GSM8K_TRAIN, "prompt")}
    assert not train & {r["prompt_id"] for r in load_rows(GSM8K_TEST, "prompt")}
