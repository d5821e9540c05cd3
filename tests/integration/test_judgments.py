"""Judgment writers on a real local Ray cluster: the tiny model writing judgments greedily on
transformers sampler actors as a Ray Data job (and through `raylign annotate judgments`), and the
HTTP writer against a real `vllm serve` of the default model (slow; set up as
tests/integration/test_http_judge.py is)."""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
import ray

from raylign.data.adapters import load_rows
from raylign.feedback.judgments import (
    HttpJudgmentWriter,
    SamplerJudgmentWriter,
    judgment_sampling,
    write_judgments,
)
from raylign.feedback.templates import parse_judgment
from tests.helpers import free_port

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
        out = write_judgments(ROWS, writer, path, use_ray_data=True, batch_size=2, concurrency=2)
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


def test_annotate_judgments_command(ray_cluster, tiny_model_dir, tmp_path, capsys):
    from raylign.feedback.judgments import main

    data = tmp_path / "outputs.json"  # AlpacaEval outputs
    data.write_text(json.dumps([{**r, "generator": "g", "dataset": "d"} for r in ROWS[:3]]))
    out = tmp_path / "judged.jsonl"
    assert main(["--data", str(data), "--judge", f"judgment-hf:{tiny_model_dir}", "--output", str(out),
                 "judge.dtype=float32", "judge.max_new_tokens=12", "judge.max_prompt_tokens=256",
                 "judge.num_cpus_per_sampler=0.25", "batch_size=2"]) == 0
    rows = load_rows(out, "judgment")
    assert [r["instruction"] for r in rows] == [r["instruction"] for r in ROWS[:3]]
    assert all(r["judgment"] is None or isinstance(r["judgment"], str) for r in rows)
    assert "judged 3 outputs" in capsys.readouterr().out


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    from raylign.models.registry import resolve_model

    model = resolve_model("SmolLM2-135M-Instruct")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
             "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager"],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vllm serve did not start in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        yield url, str(model)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


SERVED_ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Berlin."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5"},
    {"instruction": "Say hello in Spanish.", "input": "", "output": "Bonjour!"},
]


@pytest.mark.slow
def test_http_writer_against_vllm_serve_matches_the_sampler_writer(ray_cluster, vllm_server, tmp_path):
    url, model = vllm_server
    writer = HttpJudgmentWriter(url + "/v1", "smollm2", "judgment", max_tokens=48, max_workers=2)
    try:
        replies = writer.replies(SERVED_ROWS)
        out = write_judgments(SERVED_ROWS, writer, tmp_path / "judged.jsonl", use_ray_data=True, batch_size=2)
    finally:
        writer.close()
    assert all(isinstance(r, str) and r.strip() for r in replies), replies  # the model wrote something
    assert [r["judgment"] for r in out] == [parse_judgment(r) for r in replies]  # greedy: same over Ray Data
    back = load_rows(tmp_path / "judged.jsonl", "judgment")
    assert [r["output"] for r in back] == [r["output"] for r in SERVED_ROWS]
    # The same greedy judgments from the model on a transformers sampler actor (float32 both sides):
    # the chat template and the decoding agree, so replies share their opening words.
    local = SamplerJudgmentWriter(model, "judgment", judgment_sampling(backend="hf", dtype="float32",
                                                                       max_new_tokens=48), name="local")
    try:
        on_sampler = local.prepare().replies(SERVED_ROWS)
    finally:
        local.close()
    same_start = sum(a.split()[:5] == b.split()[:5] for a, b in zip(replies, on_sampler))
    assert same_start >= 2, (replies, on_sampler)
