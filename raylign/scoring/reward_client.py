"""A small Python client for `raylign serve rm` (and the engine's `http` reward source)."""

from __future__ import annotations

import time
from typing import Iterable, Sequence

import httpx


class RewardServiceError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"reward service answered {status}: {message}")
        self.status = status
        self.message = message


class RewardClient:
    """Scores (prompt, response) pairs over HTTP; prompts are strings or chat-message lists.

    >>> client = RewardClient("http://127.0.0.1:8000", token=None)
    >>> client.score([{"prompt": "Hi", "response": "Hello! How can I help?"}])
    """

    # A busy endpoint answers 429 (replica full) or 503 (Serve's queue full): both mean "later".
    RETRY_STATUSES = (429, 503)

    def __init__(self, url: str, token: str | None = None, timeout: float = 120.0, batch_size: int = 64,
                 busy_retries: int = 5, backoff_s: float = 0.5):
        self.url = url.rstrip("/")
        self.batch_size = batch_size
        self.busy_retries, self.backoff_s = busy_retries, backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=timeout, headers=headers)

    def _check(self, response: httpx.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if response.status_code >= 400:
            raise RewardServiceError(response.status_code, body.get("error", str(body)))
        return body

    def health(self) -> dict:
        return self._check(self.http.get(f"{self.url}/health"))

    def score(self, items: Iterable[dict]) -> list[float]:
        """items: dicts with `prompt` (or `messages`) and `response`; sent in chunks of batch_size."""
        payload = [{"prompt": i.get("messages") or i["prompt"], "response": i["response"]} for i in items]
        scores: list[float] = []
        for start in range(0, len(payload), self.batch_size):
            body = self._check(self._post_score({"items": payload[start : start + self.batch_size]}))
            scores += body["scores"]
        return scores

    def _post_score(self, body: dict) -> httpx.Response:
        """POST /score, waiting and retrying while the endpoint says it is busy (Retry-After or backoff)."""
        for attempt in range(self.busy_retries + 1):
            response = self.http.post(f"{self.url}/score", json=body)
            if response.status_code not in self.RETRY_STATUSES or attempt == self.busy_retries:
                return response
            retry_after = response.headers.get("retry-after", "")
            time.sleep(float(retry_after) if retry_after.isdigit() else self.backoff_s * 2**attempt)
        return response

    def score_pairs(self, prompts: Sequence, responses: Sequence[str]) -> list[float]:
        return self.score({"prompt": p, "response": r} for p, r in zip(prompts, responses))

    def close(self) -> None:
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
