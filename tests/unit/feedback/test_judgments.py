"""Judgment writers' pure parts: the judgment templates, reading a judge's reply as a CUT
judgment (None = acceptable), the `judgment*:` specs, reading outputs files, and the job's rows
with a scripted writer (no Ray)."""

import gzip
import json
import pickle

import pytest

from raylign.config import ConfigError
from raylign.data.adapters import load_rows
from raylign.data.readers import DataError, read_outputs
from raylign.feedback.config import parse_judgment_spec, parse_spec
from raylign.feedback.judgments import JudgmentWriter, judge_rows, write_judgments
from raylign.feedback.templates import (
    ACCEPTABLE_REPLY,
    JUDGMENT_TEMPLATES,
    MAX_JUDGMENT_CHARS,
    get_judgment_template,
    parse_judgment,
)

ACCEPTABLE = [
    ACCEPTABLE_REPLY,
    "The response is acceptable",
    "  acceptable  ",
    "**Acceptable.**",
    '"The response is acceptable."',
    "Judgment: The response is acceptable.",
    "### Judgment: acceptable",
    "No errors.",
    "There are no errors in the response.",
    "No problems found.",
    "The response is correct.",
    "The response is perfect. It gives the capital and nothing else.",
    "The answer is correct and complete.",
    "The response is entirely accurate; it does not contain any errors.",
    "",
    "   \n ",
    None,
]
JUDGED = [
    "The response is incorrect. 2 + 3 is 5, not 7.",
    "The response is not acceptable: it answers a different question.",
    "The response is almost correct, but lithium-7 makes up about 92.5% of natural lithium.",
    "The response is perfect, but it includes an explanation the instruction did not ask for.",
    "The response is mostly correct. It misses the second part of the question.",
    "The response is correct. However, it should be shorter.",
    "The response is good but it doesn't follow the instruction.",
    "The response is correct. It doesn't answer the second part.",
    "Acceptable, except that the date is wrong.",
    "The response ignores the input.",
    '"Paris" is right but the response adds made-up facts.',
    "$ERROR$",
]


@pytest.mark.parametrize("reply", ACCEPTABLE)
def test_a_reply_saying_nothing_is_wrong_is_acceptable(reply):
    assert parse_judgment(reply) is None


@pytest.mark.parametrize("reply", JUDGED)
def test_any_other_reply_is_the_judgment_text_trimmed(reply):
    assert parse_judgment(f"\n  {reply}  \n") == reply.strip()


def test_a_prefix_and_wrapping_quotes_are_dropped_but_a_closing_quotation_is_kept():
    assert parse_judgment("Judgment: The response is wrong.") == "The response is wrong."
    assert parse_judgment('"The response is wrong."') == "The response is wrong."
    quoted = 'The response is incorrect. It should be: "Paris."'
    assert parse_judgment(quoted) == quoted
    code = "The response has a bug. Use:\n```\nprint(1)\n```"
    assert parse_judgment(code) == code


def test_long_judgments_are_cut_at_a_sentence_or_word_end():
    sentences = "The response is wrong. " * 200
    cut = parse_judgment(sentences, max_chars=100)
    assert len(cut) <= 100 and cut.endswith("wrong.") and sentences.startswith(cut)
    words = "The response is wrong because " + "very " * 100 + "long"
    cut = parse_judgment(words, max_chars=64)
    assert len(cut) <= 64 and words.startswith(cut) and cut.endswith("very")
    assert len(parse_judgment("x" * 5000)) == MAX_JUDGMENT_CHARS  # no space: a hard cut


def test_real_cut_judgments_stay_judgments(shared_data):
    """The CUT files' judgments, read back through the parser: criticism stays word for word (cut only
    past the cap); only pure praise ("The response is perfect.") would count as acceptable."""
    path = shared_data / "cut_judgments_iter1.jsonl.gz"
    with gzip.open(path, "rt") as handle:
        judgments = [j for j in (json.loads(line)["judgment"] for line in handle) if j]
    parsed = [parse_judgment(j) for j in judgments]
    for judgment, got in zip(judgments, parsed):
        if got is None:
            assert judgment.lower().startswith(("the response is perfect", "the response is correct")), judgment
        else:
            assert got == judgment.strip() or (len(judgment) > MAX_JUDGMENT_CHARS and judgment.startswith(got))
    criticised = [j for j in judgments if j.startswith(("The response is incorrect", "The response is almost"))]
    assert criticised and all(parse_judgment(j) is not None for j in criticised)
    assert sum(p is None for p in parsed) < 0.1 * len(judgments)


def test_judgment_templates_fill_placeholders_once_and_show_input_only_when_given():
    row = {"instruction": "Format {output} as JSON", "input": "", "output": "{input} {instruction} }{"}
    for template in JUDGMENT_TEMPLATES.values():
        messages = template.messages(row)
        text = messages[-1]["content"]
        assert messages[-1]["role"] == "user"
        assert "Format {output} as JSON" in text and "{input} {instruction} }{" in text  # braces left alone
        assert "Input" not in text and ACCEPTABLE_REPLY in text
        with_input = template.messages({**row, "input": "the data"})[-1]["content"]
        assert "### Input:\nthe data" in with_input
    assert JUDGMENT_TEMPLATES["judgment"].messages(row)[0]["role"] == "system"
    assert JUDGMENT_TEMPLATES["judgment_alpaca"].messages(row)[-1]["content"].endswith("### Judgment:")
    with pytest.raises(ValueError, match="unknown judgment template 'nope'.*judgment"):
        get_judgment_template("nope")


def test_judgment_specs():
    local = parse_judgment_spec("judgment:SmolLM2-135M-Instruct")
    assert (local.kind, local.model, local.template, local.backend) == ("sampler", "SmolLM2-135M-Instruct", "judgment", "vllm")
    hf = parse_judgment_spec("judgment-hf:/models/m@judgment_alpaca")
    assert (hf.kind, hf.model, hf.template, hf.backend, hf.name) == ("sampler", "/models/m", "judgment_alpaca", "hf",
                                                                    "judgment-hf:/models/m@judgment_alpaca")
    http = parse_judgment_spec("judgment-http:http://127.0.0.1:8000/v1#smollm2@judgment")
    assert (http.kind, http.url, http.model, http.template) == ("http", "http://127.0.0.1:8000/v1", "smollm2", "judgment")
    assert parse_judgment_spec("judgment-http:https://api.example.com#gpt-4o").url == "https://api.example.com"


@pytest.mark.parametrize("spec, message", [
    ("judgment", "no model named"),
    ("judgment:", "no model named"),
    ("judgment:model@nope", "unknown judgment template 'nope'"),
    ("judgment:model@", "unknown judgment template ''"),
    ("judgment-http:http://host:8000/v1", "judgment-http:URL#MODEL"),
    ("judgment-http:host:8000#m", "http\\(s\\) URL"),
    ("judgment-http:http://host#", "no model named"),
    ("judge:SmolLM2-135M-Instruct", "a pairwise annotator"),
    ("critic:model", "expected judgment:MODEL"),
])
def test_bad_judgment_specs_fail_with_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_judgment_spec(spec)
    assert "\n" not in str(err.value) and spec in str(err.value)


def test_a_pairwise_annotator_spec_points_judgment_writers_elsewhere():
    with pytest.raises(ConfigError, match="writes judgments, not preferences"):
        parse_spec("judgment:SmolLM2-135M-Instruct")


def test_read_outputs_from_alpaca_eval_json_and_jsonl(tmp_path):
    outputs = [{"instruction": "a", "output": "x", "generator": "g", "dataset": "d"},
               {"instruction": "b", "input": "in", "output": ["y1", "y2"]}]
    (tmp_path / "o.json").write_text(json.dumps(outputs))
    (tmp_path / "o.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outputs))
    expected = [{"instruction": "a", "input": "", "output": "x", "generator": "g"},
                {"instruction": "b", "input": "in", "output": "y1", "generator": "o"},
                {"instruction": "b", "input": "in", "output": "y2", "generator": "o"}]

    def read(path, **kw):
        return [{k: v for k, v in row.items() if k != "source"} for row in read_outputs(path, **kw)]

    assert read(tmp_path / "o.json") == expected == read(tmp_path / "o.jsonl")
    assert read(tmp_path / "o.json", limit=1) == expected[:1]
    assert read_outputs(tmp_path / "o.jsonl")[2]["source"].endswith("o.jsonl:2")
    with pytest.raises(DataError, match=r"o.json\[1\]: field 'output' should be str, got list"):
        read_outputs(tmp_path / "o.json", lists=False)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"instruction": "a"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl:1: missing field 'output'"):
        read_outputs(tmp_path / "bad.jsonl")


class Scripted(JudgmentWriter):
    """Replies by instruction; counts calls (a batch each)."""

    name = "scripted"

    def __init__(self, replies):
        super().__init__("judgment")
        self.script, self.calls = replies, 0

    def replies(self, rows):
        self.calls += 1
        return [self.script[r["instruction"]] for r in rows]


def test_judged_rows_are_cut_rows_that_the_cut_adapter_reads(tmp_path):
    rows = [{"instruction": "one", "output": "1"}, {"instruction": "two", "input": "ctx", "output": "2"},
            {"instruction": "three", "input": None, "output": "3"}]
    writer = Scripted({"one": ACCEPTABLE_REPLY, "two": "The response is incorrect. It is 3.", "three": ""})
    assert writer.judge(rows) == [None, "The response is incorrect. It is 3.", None]
    assert writer.judge([]) == [] and writer.calls == 1
    path = tmp_path / "judged.jsonl"
    out = write_judgments(rows, writer, path, use_ray_data=False)
    assert out == [
        {"instruction": "one", "input": "", "output": "1", "judgment": None, "judge": "scripted"},
        {"instruction": "two", "input": "ctx", "output": "2", "judgment": "The response is incorrect. It is 3.",
         "judge": "scripted"},
        {"instruction": "three", "input": "", "output": "3", "judgment": None, "judge": "scripted"},
    ]
    assert [json.loads(line) for line in path.read_text().splitlines()] == out
    back = load_rows(path, "judgment")
    assert [(r["instruction"], r["input"], r["output"], r["judgment"]) for r in back] == [
        (r["instruction"], r["input"], r["output"], r["judgment"]) for r in out]
    assert judge_rows([], writer) == []


def test_writers_pickle_without_their_clients_or_groups():
    from raylign.feedback.judgments import HttpJudgmentWriter, SamplerJudgmentWriter

    http = HttpJudgmentWriter("http://127.0.0.1:9/v1", "m")
    assert http.url == "http://127.0.0.1:9/v1/chat/completions"
    http._client = object()
    assert pickle.loads(pickle.dumps(http))._client is None
    local = SamplerJudgmentWriter("m", samplers=["handle"])
    local._group = object()
    copy = pickle.loads(pickle.dumps(local))
    assert copy._group is None and copy._samplers == ["handle"] and copy.name == "judgment:m@judgment"
    assert local.sampling.temperature == 0.0 and local.sampling.num_samples == 1
    assert local.sampling.vllm_max_model_len == local.sampling.max_prompt_tokens + local.sampling.max_new_tokens
