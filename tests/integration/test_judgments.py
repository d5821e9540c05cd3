"""Judgment writers on a real local Ray cluster: the tiny model writing judgments greedily on
transformers sampler actors as a Ray Data job, and judgment text landing on its rows. The HTTP
writer against a real `vllm serve` is in tests/integration/test_http_judge.py (it shares the server)."""


import pytest
import ray

from raylign.data.adapters import load_rows
from raylign.feedback.judgments import SamplerJudgmentWriter, judgment_sampling, write_judgments
from raylign.feedback.templates import parse_judgment

pytestmark = pytest.mark.integration

ROWS = [
    {"instruction": f"Question {i}: what is {i} plus {i}?", "input": "" if i % 3 else "be brief",
     "output": f"It is {2 * i + i % 2}." if i % 4 else "I do not know."}
    for i in range(6)
]


def tiny_writer(model_dir, max_chars=2048):
    sampling = judgment_sampling(backend="hf", dtype="float32", num_cpus_per_sampler=0.25, max_prompt_tokens=256,
                                 max_new_tokens=12)
    return SamplerJudgmentWriter(str(model_dir), "judgment", sampling, name="tiny", max_chars=max_chars)


def test_sampler_writer_judges_rows_in_order_as_a_ray_data_job(ray_cluster, tiny_model_dir, tmp_path):
    writer = tiny_writer(tiny_model_dir, max_chars=24).prepare()
    try:
        path = tmp_path / "judged.jsonl"
        out = write_judgments(ROWS, writer, path, use_ray_data=True, batch_size=2, concurrency=1)
        in_process = writer.judge(ROWS)
        # the judgment is the greedy reply to the judgment template, parsed
        direct = ray.get(writer._samplers[0].generate.remote(
            [{"messages": writer.template.messages(r)} for r in ROWS], 1))
    finally:
        writer.close()
    assert [(r["instruction"], r["input"], r["output"]) for r in out] == [
        (r["instruction"], r["input"], r["output"]) for r in ROWS]
    judgments = [r["judgment"] for r in out]  # the tiny model writes blank lines: None (the next test has text)
    assert all(j is None or (isinstance(j, str) and j == j.strip() and 0 < len(j) <= 24) for j in judgments)
    assert judgments == in_process == [parse_judgment(d["response"], 24) for d in direct]  # greedy: the same
    assert {r["judge"] for r in out} == {"tiny"}
    back = load_rows(path, "judgment")
    assert [(r["instruction"], r["input"], r["output"], r["judgment"]) for r in back] == [
        (r["instruction"], r["input"], r["output"], r["judgment"]) for r in out]


def test_judgments_from_several_samplers_land_on_their_rows(ray_cluster, tmp_path):
    """The tiny model only writes blank lines (acceptable), so sampler stand-ins that judge each prompt by
    its instruction check the other half: real judgment text, rows spread over two samplers and two Ray
    Data actors, each judgment back on its own row."""

    @ray.remote(num_cpus=0)
    class Echo:
        def __init__(self, name):
            self.name = name

        def generate(self, rows, n):
            out = []
            for row in rows:
                prompt = row["messages"][-1]["content"]
                instruction = prompt.split("### Instruction:\n")[1].split("\n")[0]
                wrong = "I do not know" in prompt
                reply = f"The response is wrong about: {instruction}" if wrong else "The response is acceptable."
                out.append({**row, "response": f"  {reply}\n", "sampler": self.name})
            return out

    samplers = [Echo.remote("a"), Echo.remote("b")]
    writer = SamplerJudgmentWriter("unused", "judgment", samplers=samplers, name="echo")
    out = write_judgments(ROWS, writer, tmp_path / "judged.jsonl", use_ray_data=True, batch_size=3, concurrency=2)
    expected = [f"The response is wrong about: {r['instruction']}" if r["output"] == "I do not know." else None
                for r in ROWS]
    assert [r["judgment"] for r in out] == expected and any(expected) and not all(expected)
    assert [r["judgment"] for r in load_rows(tmp_path / "judged.jsonl", "judgment")] == expected
    for actor in samplers:
        ray.kill(actor)
