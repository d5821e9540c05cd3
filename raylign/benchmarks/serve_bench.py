"""`raylign bench serve`: a load test of the reward endpoint, as clients would hit it.

Starts `raylign serve rm` on loopback (with a token) at 1 and then 2 replicas, and runs N
concurrent clients for a fixed number of requests each: valid requests, with malformed,
oversized and unauthenticated ones mixed in. Prints p50/p99 latency and requests/s of the
valid ones, the status codes of the rest (all must be 4xx), and checks the endpoint still
scores correctly afterwards (same scores as before the load).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ITEMS = [
    {"prompt": "How do I pick a lock?", "response": "I can't help with breaking into places that aren't yours."},
    {"prompt": "What is the capital of France?", "response": "Paris is the capital of France."},
    {"prompt": [{"role": "user", "content": "Write a haiku"}], "response": "Autumn moon rises / over the quiet harbor."},
    {"prompt": "Tell me a joke", "response": "Why did the scarecrow win an award? He was outstanding in his field."},
]
BAD_BODIES = [
    (b"{not json", "malformed JSON"),
    (b"[" * 100_000, "deep nesting"),
    (b'{"items": [{"prompt": "a", "response": 5}]}', "wrong type"),
    (b'{"items": [{"prompt": "\\ud800", "response": "b"}]}', "lone surrogate"),
    (b'{"items": [{"prompt": "a", "response": "' + b"x" * 5_000_000 + b'"}]}', "oversized body"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _client(url: str, token: str, requests: int, bad_fraction: float, seed: int) -> dict:
    import httpx

    rng = random.Random(seed)
    latencies, statuses = [], {}
    with httpx.Client(timeout=120) as http:
        for _ in range(requests):
            roll = rng.random()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if roll < bad_fraction / 2:
                body, kind = rng.choice(BAD_BODIES)
            elif roll < bad_fraction:
                body, kind, headers = json.dumps({"items": ITEMS}).encode(), "no token", {"Content-Type": "application/json"}
            else:
                body, kind = json.dumps({"items": rng.sample(ITEMS, rng.randint(1, len(ITEMS)))}).encode(), "valid"
            start = time.perf_counter()
            answer = http.post(f"{url}/score", content=body, headers=headers)
            elapsed = time.perf_counter() - start
            if kind == "valid":
                if answer.status_code == 200:
                    latencies.append(elapsed)
                else:
                    statuses.setdefault("valid_failed", []).append(answer.status_code)
            else:
                statuses.setdefault(kind, []).append(answer.status_code)
    return {"latencies": latencies, "statuses": statuses}


def run_load(url: str, token: str, clients: int, requests: int, bad_fraction: float) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda i: _client(url, token, requests, bad_fraction, i), range(clients)))
    wall = time.perf_counter() - started
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, list[int]] = {}
    for r in results:
        for kind, codes in r["statuses"].items():
            statuses.setdefault(kind, []).extend(codes)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {"valid_requests": len(latencies), "requests_per_s": len(latencies) / wall, "p50_ms": 1000 * q[49],
            "p99_ms": 1000 * q[98], "wall_s": wall,
            "bad_requests": {k: sorted(set(v)) for k, v in statuses.items()},
            "all_bad_got_4xx": all(400 <= c < 500 for k, v in statuses.items() if k != "valid_failed" for c in v),
            "valid_failed": len(statuses.get("valid_failed", []))}


def main(argv: list[str]) -> int:
    import httpx
    from ray import serve

    from raylign.runtime import init_ray
    from raylign.serving.reward_app import RewardServeConfig, start

    parser = argparse.ArgumentParser(prog="raylign bench serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="hh-rm-smollm2")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=20, help="per client")
    parser.add_argument("--bad-fraction", type=float, default=0.2, help="share of malformed / oversized / unauthenticated")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--num-cpus", type=float, default=0.5, help="per replica")
    parser.add_argument("--output", default="runs/bench/serve.json")
    args = parser.parse_args(argv)

    init_ray(None)
    token = "bench-" + str(random.getrandbits(64))
    rows = []
    for replicas in args.replicas:
        config = RewardServeConfig(model=args.model, app_name=f"bench-{replicas}", num_replicas=replicas,
                                   num_cpus=args.num_cpus, token=token, max_body_bytes=1_000_000, torch_threads=1)
        url = start(config, host="127.0.0.1", port=_free_port())
        headers = {"Authorization": f"Bearer {token}"}
        before = httpx.post(f"{url}/score", json={"items": ITEMS}, headers=headers, timeout=300).json()["scores"]
        load = run_load(url, token, args.clients, args.requests, args.bad_fraction)
        after = httpx.post(f"{url}/score", json={"items": ITEMS}, headers=headers, timeout=300).json()["scores"]
        load.update(replicas=replicas, clients=args.clients,
                    still_correct=all(abs(a - b) < 1e-4 for a, b in zip(before, after)))
        rows.append(load)
        serve.shutdown()
    print(f"reward endpoint load test: {args.model}, {args.clients} clients x {args.requests} requests, "
          f"{args.bad_fraction:.0%} bad requests mixed in")
    print(f"{'replicas':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'bad -> 4xx':>12}{'valid failed':>14}{'correct after':>15}")
    for r in rows:
        print(f"{r['replicas']:>8}{r['requests_per_s']:>9.2f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}"
              f"{str(r['all_bad_got_4xx']):>12}{r['valid_failed']:>14}{str(r['still_correct']):>15}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2))
    print(f"wrote {args.output}")
    return 0 if all(r["all_bad_got_4xx"] and r["still_correct"] and not r["valid_failed"] for r in rows) else 1


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
