"""Validation of `/score` request bodies, kept apart from Serve so it is unit-testable.

Every bad request maps to a `RequestError` carrying an HTTP status and a message that
names the offending field (`items[3].response: ...`), never to an exception that
would take the replica down.
"""

from __future__ import annotations

import json
from typing import Any


class RequestError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}


MAX_DEPTH = 8  # {"items": [{"prompt": [{"content": ...}]}]} needs 5


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether brackets nest deeper than `limit` (outside strings), checked before parsing:
    200,000 nested '[' must not reach the recursive parser."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise RequestError(400, "request body is empty; send JSON like {\"items\": [{\"prompt\": ..., \"response\": ...}]}")
    if json_depth_exceeds(raw, MAX_DEPTH):
        raise RequestError(422, f"request body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"request body is not valid JSON: {err}") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer of thousands of digits
        raise RequestError(422, f"request body has a value out of range: {str(err)[:120]}") from None


def _check_text(value: Any, where: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"{where}: expected a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise RequestError(413, f"{where}: {len(value)} characters, more than the limit of {max_chars}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800", valid JSON but not text
        raise RequestError(422, f"{where}: not valid Unicode text (lone surrogate)") from None
    return value


def _require_fields(value: Any, where: str, keys: tuple[str, ...]) -> dict:
    """A JSON object holding every key in `keys`, or a 422 naming what is wrong."""
    if not isinstance(value, dict):
        raise RequestError(422, f"{where}: expected an object with {', '.join(repr(k) for k in keys)}, "
                                f"got {type(value).__name__}")
    for key in keys:
        if key not in value:
            raise RequestError(422, f"{where}: missing field '{key}'")
    return value


def _check_prompt(value: Any, where: str, max_chars: int) -> str | list[dict]:
    if isinstance(value, str):
        return _check_text(value, where, max_chars)
    if not isinstance(value, list):
        raise RequestError(422, f"{where}: expected a string or a list of chat messages, got {type(value).__name__}")
    if not value:
        raise RequestError(422, f"{where}: the messages list is empty")
    messages, total = [], 0
    for i, message in enumerate(value):
        _require_fields(message, f"{where}[{i}]", ("role", "content"))
        for key in ("role", "content"):
            _check_text(message[key], f"{where}[{i}].{key}", max_chars)
        total += len(message["content"])
        messages.append({"role": message["role"], "content": message["content"]})
    if total > max_chars:
        raise RequestError(413, f"{where}: {total} characters of messages, more than the limit of {max_chars}")
    return messages


def parse_score_request(payload: Any, max_items: int, max_chars: int) -> list[tuple[str | list[dict], str]]:
    """(prompt, response) pairs from `{"items": [{"prompt": str | messages, "response": str}, ...]}`."""
    if not isinstance(payload, dict):
        raise RequestError(422, f"request body must be a JSON object with 'items', got {type(payload).__name__}")
    if "items" not in payload:
        raise RequestError(422, f"missing field 'items' (fields present: {sorted(payload)})")
    items = payload["items"]
    if not isinstance(items, list):
        raise RequestError(422, f"items: expected a list, got {type(items).__name__}")
    if not items:
        raise RequestError(422, "items: the list is empty")
    if len(items) > max_items:
        raise RequestError(413, f"items: {len(items)} items, more than the limit of {max_items} per request")
    pairs = []
    for i, item in enumerate(items):
        _require_fields(item, f"items[{i}]", ("prompt", "response"))
        prompt = _check_prompt(item["prompt"], f"items[{i}].prompt", max_chars)
        response = _check_text(item["response"], f"items[{i}].response", max_chars)
        pairs.append((prompt, response))
    return pairs


def check_bearer(header: str | None, token: str | None) -> None:
    """401 for a missing or wrong bearer token (RFC 6750 uses 401 for both)."""
    if not token:
        return
    if not header:
        raise RequestError(401, "missing 'Authorization: Bearer <token>' header")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise RequestError(401, "the Authorization header must be 'Bearer <token>'")
    import hmac

    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise RequestError(401, "invalid bearer token")
