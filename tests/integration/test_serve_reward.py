"""The Serve reward endpoint over real HTTP on loopback: scores, 4xx answers, still serving."""


import httpx
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.integration

TOKEN = "test-token"


@pytest.fixture(scope="module")
def rm_dir(tiny_reward_model_dir):
    return tiny_reward_model_dir


@pytest.fixture(scope="module")
def service(ray_cluster, rm_dir):
    from ray import serve

    from raylign.serving.reward_app import RewardServeConfig, start

    config = RewardServeConfig(model=str(rm_dir), app_name="reward-test", num_cpus=0.25, max_items=8,
                               max_chars=2000, max_length=128, token=TOKEN, torch_threads=1, max_body_bytes=100_000)
    url = start(config, host="127.0.0.1", port=free_port())
    yield url, config
    serve.shutdown()


def _headers(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


ITEMS = [
    {"prompt": "What is the capital of France?", "response": "The capital of France is Paris."},
    {"prompt": [{"role": "user", "content": "Write a poem"}], "response": "The sea, the sky and the wind."},
    {"prompt": "What is the capital of France?", "response": "I cannot help with that request."},
]


def test_scores_match_local_scorer_and_client(service, rm_dir):
    from raylign.scoring.reward_client import RewardClient
    from raylign.scoring.reward_model import RewardScorer

    url, _ = service
    answer = httpx.post(f"{url}/score", json={"items": ITEMS}, headers=_headers(), timeout=60)
    assert answer.status_code == 200, answer.text
    scores = answer.json()["scores"]
    local = RewardScorer(rm_dir, max_length=128).score([i["prompt"] for i in ITEMS], [i["response"] for i in ITEMS])
    assert scores == pytest.approx(local, abs=1e-4)
    with RewardClient(url, token=TOKEN, batch_size=2) as client:
        assert client.health()["status"] == "ok"
        assert client.score(ITEMS) == pytest.approx(scores, abs=1e-5)


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"this is not json", 400, "not valid JSON"),
        (b"", 400, "empty"),
        (b'{"things": []}', 422, "missing field 'items'"),
        (b'{"items": [{"prompt": "a"}]}', 422, "items[0]: missing field 'response'"),
        (b'{"items": [{"prompt": "a", "response": 5}]}', 422, "items[0].response: expected a string"),
        (b'{"items": [{"prompt": {"x": 1}, "response": "b"}]}', 422, "items[0].prompt"),
        (b'{"items": "abc"}', 422, "items: expected a list"),
        (b'{"items": [{"prompt": "a", "response": "b"}, {"prompt": [{"role": 7, "content": "c"}], "response": "d"}]}',
         422, "items[1].prompt[0].role: expected a string, got int"),
        (b'{"items": [{"prompt": "a", "response": null}]}', 422, "items[0].response: expected a string, got null"),
        (b'{"items": [' + b",".join([b'{"prompt": "a", "response": "b"}'] * 9) + b"]}", 413, "more than the limit of 8"),
        (b'{"items": [{"prompt": "a", "response": "' + b"x" * 2001 + b'"}]}', 413, "more than the limit of 2000"),
        (b"[" * 200_000, 413, "more than the limit of 100000"),  # size is checked before anything is parsed
        (b"[" * 50_000, 422, "nests deeper"),
        (b'{"items": [{"prompt": "\\ud800", "response": "b"}]}', 422, "not valid Unicode"),
        (b'{"items": [{"prompt": "a", "response": "b"}], "n": ' + b"9" * 5000 + b"}", 422, "out of range"),
    ],
)
def test_bad_requests_get_4xx_json(service, body, status, fragment):
    url, _ = service
    answer = httpx.post(f"{url}/score", content=body, headers={**_headers(), "Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]


def test_token_is_required(service):
    url, _ = service
    for headers in ({}, _headers("wrong"), {"Authorization": "Basic abc"}):
        answer = httpx.post(f"{url}/score", json={"items": ITEMS}, headers=headers, timeout=60)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]


def test_reward_sources_reach_the_service(service):
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    url, config = service
    rows = [{"prompt": i["prompt"] if isinstance(i["prompt"], str) else "x",
             "messages": i["prompt"] if isinstance(i["prompt"], list) else None, "response": i["response"]} for i in ITEMS]
    http_source = make_reward_source(RewardConfig(kind="http", url=url, token=TOKEN, batch_size=2))
    serve_source = make_reward_source(RewardConfig(kind="serve", app_name=config.app_name, batch_size=2))
    by_http, by_handle = http_source.score(rows), serve_source.score(rows)
    http_source.close()
    assert len(by_http) == 3 and by_handle == pytest.approx(by_http, abs=1e-5)


def test_replica_still_serves_after_bad_requests(service):
    url, _ = service
    assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
    answer = httpx.post(f"{url}/score", json={"items": ITEMS[:1]}, headers=_headers(), timeout=60)
    assert answer.status_code == 200 and len(answer.json()["scores"]) == 1


def test_health_and_docs_reveal_nothing_without_the_token(service):
    url, config = service
    assert httpx.get(f"{url}/health", timeout=30).json() == {"status": "ok"}
    assert httpx.get(f"{url}/health", headers=_headers(), timeout=30).json()["model"] == config.model
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{url}{path}", timeout=30).status_code == 404


def test_non_loopback_host_without_token_refuses(monkeypatch):
    from raylign.serving.reward_app import is_loopback, main

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    monkeypatch.delenv("RAYLIGN_RM_TOKEN", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["--host", "0.0.0.0"])
    assert info.value.code == 2


def test_load_with_bad_requests_mixed_in(service):
    """`raylign bench serve`'s load: concurrent clients, every bad request a 4xx, no valid one lost."""
    from raylign.benchmarks.serve_bench import run_load

    url, _ = service
    load = run_load(url, TOKEN, clients=3, requests=4, bad_fraction=0.5)
    assert load["all_bad_got_4xx"] and load["valid_failed"] == 0
    assert load["valid_requests"] > 0 and load["p99_ms"] >= load["p50_ms"] > 0
