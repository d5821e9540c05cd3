"""`raylign serve rm`: a reward model behind HTTP on Ray Serve, with dynamic batching.

    POST /score   {"items": [{"prompt": "..." | [{"role", "content"}...], "response": "..."}]}
                  -> {"scores": [float, ...]}
    GET  /health  -> {"status": "ok", "model": ...}

The ingress validates and tokenizes each request (bad input -> 4xx JSON naming the
field, the replica keeps serving); `@serve.batch` then merges items from concurrent
requests into one forward pass. `build_app` is the import path for
`serve run` / `serve deploy` configs (cluster/serve_rm.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from ray import serve

from raylign.config import ModelName, StrictModel, build_config
from raylign.serving.reward_request import (
    AdmissionGate,
    RequestError,
    check_bearer,
    parse_json,
    parse_score_request,
)


class AutoscalingSettings(StrictModel):
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 4.0


class RewardServeConfig(StrictModel):
    model: ModelName = "hh-rm-smollm2"  # HF reward-model dir or shipped name
    app_name: str = "reward"
    route_prefix: str = "/"
    num_replicas: int = 1
    autoscaling: AutoscalingSettings | None = None  # replaces num_replicas when set
    num_cpus: float = 0.25  # per replica; fractional so replicas fit beside trainers
    num_gpus: float = 0.0
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.02
    max_items: int = Field(64, ge=1)  # per request
    max_chars: int = Field(32_000, ge=1)  # per prompt or response
    max_length: int | None = None  # tokens; default: the model's training max_length
    over_long: Literal["truncate", "reject"] = "truncate"  # reject: 413 naming the item
    dtype: Literal["float32", "bfloat16"] = "float32"
    torch_threads: int | None = None
    token: str | None = Field(None, repr=False)  # bearer token; env RAYLIGN_RM_TOKEN also works
    require_token: bool = False  # refuse to start without a token (cluster/serve_rm.yaml binds 0.0.0.0)
    max_body_bytes: int = Field(4_000_000, ge=1)  # larger bodies get 413 before they are read
    max_queued_requests: int = Field(64, ge=-1)  # beyond this Serve answers 503; -1 = unbounded
    # score requests one replica holds at once (batching or scoring); beyond it 429 + Retry-After
    max_requests_per_replica: int = Field(24, ge=1)


# Docs routes off: they are not needed to score, and /docs pulls scripts from a CDN.
app = FastAPI(title="raylign reward model", docs_url=None, redoc_url=None, openapi_url=None)


def _error(err: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    if err.status == 429:
        headers = {"Retry-After": "1"}
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it (or its declared length) passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes, more than the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=32)
@serve.ingress(app)
class RewardModelServer:
    def __init__(self, config: dict):
        import torch

        from raylign.models.registry import resolve_model
        from raylign.scoring.ensemble import load_scorer
        from raylign.scoring.reward_model import trained_max_length

        self.config = RewardServeConfig.model_validate(config)
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        model_dir = resolve_model(self.config.model)
        self.max_length = self.config.max_length or trained_max_length(model_dir)
        over_long = "drop" if self.config.over_long == "reject" else "truncate"
        # a reward model, or an ensemble directory (`train rm` with rm.ensemble): the same interface
        self.scorer = load_scorer(model_dir, self.max_length, self.config.max_batch_size, self.config.dtype, over_long)
        self.token = self.config.token or os.environ.get("RAYLIGN_RM_TOKEN") or None
        if self.config.require_token and not self.token:
            raise RuntimeError("require_token is set but no token was given: export RAYLIGN_RM_TOKEN on the "
                               "cluster's nodes (before `ray start`) or in the app's runtime_env")
        self._score_batch.set_max_batch_size(self.config.max_batch_size)
        self._score_batch.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)
        self.served = 0
        self.gate = AdmissionGate(self.config.max_requests_per_replica)

    @app.get("/health")
    async def health(self, request: Request) -> dict:
        """Liveness for anyone; the model and counters only for holders of the token."""
        try:
            check_bearer(request.headers.get("authorization"), self.token)
        except RequestError:
            return {"status": "ok"}
        return {"status": "ok", "model": self.config.model, "max_length": self.max_length, "served": self.served}

    @app.post("/score")
    async def score(self, request: Request):
        try:
            check_bearer(request.headers.get("authorization"), self.token)
            self.gate.enter()
        except RequestError as err:
            return _error(err)
        try:
            raw = await read_capped_body(request, self.config.max_body_bytes)
            pairs = parse_score_request(parse_json(raw), self.config.max_items, self.config.max_chars)
            # Tokenising long texts takes a while: off the event loop, so /health stays prompt.
            sequences = await asyncio.to_thread(self._encode, pairs)
            started = time.perf_counter()
            scores = await asyncio.gather(*(self._score_batch(seq) for seq in sequences))
        except RequestError as err:
            return _error(err)
        finally:
            self.gate.leave()
        self.served += len(scores)
        return {"scores": scores, "model": self.config.model, "seconds": round(time.perf_counter() - started, 4)}

    def _encode(self, pairs: list) -> list[list[int]]:
        from raylign.scoring.text import PairTooLongError

        sequences = []
        for i, (prompt, response) in enumerate(pairs):
            try:
                sequences.append(self.scorer.encode(prompt, response))
            except PairTooLongError as err:
                raise RequestError(413, f"items[{i}]: {err}") from None
        return sequences

    async def score_rows(self, rows: list[dict]) -> list[float]:
        """For deployment handles (RewardConfig kind 'serve'): rows with messages/prompt and response."""
        sequences = [self.scorer.encode(row.get("messages") or row["prompt"], row["response"]) for row in rows]
        return list(await asyncio.gather(*(self._score_batch(seq) for seq in sequences)))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.02)
    async def _score_batch(self, sequences: list[list[int]]) -> list[float]:
        # The forward pass runs in a thread so /health stays responsive meanwhile.
        return await asyncio.to_thread(self.scorer.score_ids, sequences)


def build_app(args: dict | None = None):
    """Serve application builder: `import_path: raylign.serving.reward_app:build_app`."""
    config = build_config(RewardServeConfig, dict(args or {}), "reward serve args")
    options: dict = {
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "name": "RewardModelServer",
        "max_queued_requests": config.max_queued_requests,
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = config.autoscaling.model_dump()
    else:
        options["num_replicas"] = config.num_replicas
    return RewardModelServer.options(**options).bind(config.model_dump())


def start(config: RewardServeConfig, host: str = "127.0.0.1", port: int = 8000, blocking: bool = False):
    """Deploy on the running (or a new local) Ray cluster; returns the app's base URL."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config.model_dump()), name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)
    return f"http://{host}:{port}{config.route_prefix.rstrip('/')}"


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    from raylign.config import load_config
    from raylign.preflight import check_config
    from raylign.runtime import init_ray

    parser = argparse.ArgumentParser(prog="raylign serve rm", description="Serve a reward model over HTTP with Ray Serve.")
    parser.add_argument("--model", help="reward-model directory or shipped name (default hh-rm-smollm2)")
    parser.add_argument("--config", "-c", help="YAML with RewardServeConfig keys (see cluster/serve_rm.yaml args)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, help="number of replicas (fixed)")
    parser.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (or set RAYLIGN_RM_TOKEN)")
    parser.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without a token (anyone who can reach it may score)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_batch_size=32")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
    if args.replicas:
        overrides.append(f"num_replicas={args.replicas}")
    config = load_config(RewardServeConfig, args.config, overrides)
    if args.token:
        config.token = args.token
    token = config.token or os.environ.get("RAYLIGN_RM_TOKEN")
    if not is_loopback(args.host) and not token and not args.insecure:
        parser.error(f"--host {args.host} is reachable from other machines and no token is set: pass --token "
                     "(or set RAYLIGN_RM_TOKEN), or --insecure to serve it open anyway")
    if not is_loopback(args.host) and not token:
        print(f"[raylign] WARNING: serving on {args.host} with no token (--insecure)", file=sys.stderr, flush=True)
    check_config(config)  # a missing model ends here in one line, not inside Serve
    init_ray(args.ray_address)
    url = start(config, args.host, args.port)
    print(f"[raylign] reward model '{config.model}' serving at {url}/score (health: {url}/health); Ctrl-C stops", flush=True)
    # SIGTERM (and SIGINT, which background jobs ignore) stop Serve cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return 0
