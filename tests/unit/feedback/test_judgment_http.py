"""The HTTP judgment writer against a tiny fake OpenAI-compatible server on loopback (Python's
http.server, canned chat completions): the request it sends, the key from the environment,
retries on 5xx / 429 / timeouts, no retry on other errors, and replies parsed into judgments.
A real `vllm serve` is in tests/integration/test_judgments.py."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raylign.data.adapters import load_rows
from raylign.feedback.config import build_judgment_writer, parse_judgment_spec
from raylign.feedback.judgments import HttpJudgmentWriter, write_judgments
from raylign.feedback.templates import ACCEPTABLE_REPLY, get_judgment_template

ROWS = [
    {"instruction": "What is 2 + 3?", "input": "", "output": "7"},
    {"instruction": "Capital of France?", "input": "", "output": "Paris."},
    {"instruction": "flaky: name a color", "input": "", "output": "Blue."},
    {"instruction": "slow: name a fruit", "input": "one word", "output": "Apple."},
]
REPLIES = {
    "What is 2 + 3?": "The response is incorrect. 2 + 3 is 5, not 7.",
    "Capital of France?": ACCEPTABLE_REPLY,
    "flaky: name a color": "  Judgment: The response is acceptable.  ",
    "slow: name a fruit": None,  # no content at all: nothing to criticise
}


class FakeChat(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions from REPLIES by the instruction in the prompt. Instructions
    starting "flaky" get a 503 and "slow" a late answer the first time; "teapot" always 418,
    "busy" always 429."""

    requests: list = []
    seen: dict = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        instruction = next(k for k in [*REPLIES, "teapot", "busy"] if f"### Instruction:\n{k}" in prompt)
        with self.lock:
            self.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            count = self.seen[instruction] = self.seen.get(instruction, 0) + 1
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": "not found"})
        if instruction == "teapot":
            return self._send(418, {"error": "I'm a teapot"})
        if instruction == "busy":
            return self._send(429, {"error": "rate limited"})
        if instruction.startswith("flaky") and count == 1:
            return self._send(503, {"error": "overloaded"})
        if instruction.startswith("slow") and count == 1:
            time.sleep(1.0)  # past the client's timeout
        message = {"role": "assistant", "content": REPLIES[instruction]}
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


@pytest.fixture
def server():
    FakeChat.requests, FakeChat.seen = [], {}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_writer_requests_retries_and_parses(server, monkeypatch, tmp_path):
    monkeypatch.setenv("JUDGE_KEY", "sekret")
    writer = HttpJudgmentWriter(server, "judge-model", api_key_env="JUDGE_KEY", timeout_s=0.5, retries=2,
                                backoff_s=0.01, max_tokens=100, max_workers=2)
    try:
        out = write_judgments(ROWS, writer, tmp_path / "judged.jsonl", use_ray_data=False)
    finally:
        writer.close()
    assert [r["judgment"] for r in out] == ["The response is incorrect. 2 + 3 is 5, not 7.", None, None, None]
    assert [r["instruction"] for r in out] == [r["instruction"] for r in ROWS]
    assert {r["judge"] for r in out} == {"judgment-http:judge-model@judgment"}
    # every request: the chat path, the key, greedy, the template's messages
    template = get_judgment_template("judgment")
    for request in FakeChat.requests:
        assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sekret"
        body = request["body"]
        assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] == 100
        row = next(r for r in ROWS if f"### Instruction:\n{r['instruction']}" in body["messages"][-1]["content"])
        assert body["messages"] == template.messages(row)
    # the 503 and the timeout were each retried once; the others asked once
    assert FakeChat.seen == {"What is 2 + 3?": 1, "Capital of France?": 1, "flaky: name a color": 2,
                             "slow: name a fruit": 2}
    back = load_rows(tmp_path / "judged.jsonl", "judgment")
    assert [r["judgment"] for r in back] == [r["judgment"] for r in out]


def test_http_writer_gives_up_on_errors(server):
    writer = HttpJudgmentWriter(server + "/v1", "m", api_key_env="NO_SUCH_KEY_SET", timeout_s=5, retries=2,
                                backoff_s=0.01)
    try:
        with pytest.raises(RuntimeError, match="answered 418.*after 1 tries"):
            writer.judge([{"instruction": "teapot", "output": "x"}])
        with pytest.raises(RuntimeError, match="answered 429.*after 3 tries"):
            writer.judge([{"instruction": "busy", "output": "x"}])
    finally:
        writer.close()
    assert FakeChat.seen == {"teapot": 1, "busy": 3}
    assert all(r["auth"] is None for r in FakeChat.requests)  # no key in the environment: no header
    refused = HttpJudgmentWriter("http://127.0.0.1:9", "m", timeout_s=1, retries=1, backoff_s=0.01)
    with pytest.raises(RuntimeError, match="ConnectError.*after 2 tries"):
        refused.judge([{"instruction": "a", "output": "b"}])


def test_http_writer_built_from_its_spec(server):
    config = parse_judgment_spec(f"judgment-http:{server}/v1#judge-model@judgment_alpaca").model_copy(
        update={"max_new_tokens": 32, "retries": 0})
    writer = build_judgment_writer(config)
    try:
        assert writer.judge(ROWS[:2]) == ["The response is incorrect. 2 + 3 is 5, not 7.", None]
    finally:
        writer.close()
    body = FakeChat.requests[0]["body"]
    assert body["max_tokens"] == 32 and body["messages"][-1]["content"].endswith("### Judgment:")
    assert writer.name == f"judgment-http:{server}/v1#judge-model@judgment_alpaca"
