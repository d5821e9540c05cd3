"""Validation of `/score` request bodies, kept apart from Serve so it is unit-testable.

The raw body is checked before parsing (size by the app, nesting depth here, then
`json.loads`, whose errors on huge integers are caught); the parsed value is validated by
pydantic models (`ScoreRequest`). Every bad request maps to a `RequestError` carrying an
HTTP status and a message that names the offending field (`items[3].response: ...`),
never to an exception that would take the replica down.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError


class RequestError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict:
        return {"error": self.message, "status": self.status}


MAX_DEPTH = 8  # {"items": [{"prompt": [{"content": ...}]}]} needs 5
TOO_LARGE = "too_large"  # the error type of a passed limit: 413, not 422


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


def _limits(info: ValidationInfo) -> tuple[int, int]:
    """(max_items, max_chars): the server's limits, handed to the validators as pydantic's context."""
    return info.context["max_items"], info.context["max_chars"]


def _check_text(value: str, info: ValidationInfo) -> str:
    _, max_chars = _limits(info)
    if len(value) > max_chars:
        raise PydanticCustomError(TOO_LARGE, "{count} characters, more than the limit of {limit}",
                                  {"count": len(value), "limit": max_chars})
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800", valid JSON but not text
        raise PydanticCustomError("unicode", "not valid Unicode text (lone surrogate)") from None
    return value


Text = Annotated[str, Field(strict=True), AfterValidator(_check_text)]


ROLES = ("system", "user", "assistant")


class ChatMessage(BaseModel):
    """One turn of a chat prompt in a role the chat templates know (a `root` or `tool` turn would
    be rendered as whatever the template makes of it). OpenAI's optional keys (`name`) are dropped."""

    model_config = ConfigDict(extra="ignore")
    role: Literal[ROLES]
    content: Text


def _prompt_kind(value: Any) -> str | None:
    return "text" if isinstance(value, str) else "messages" if isinstance(value, list) else None


# A prompt is a string or a non-empty list of messages; the tag picks the branch, so an error
# names the field, not every branch of the union.
Prompt = Annotated[
    Union[Annotated[Text, Tag("text")], Annotated[list[ChatMessage], Field(min_length=1), Tag("messages")]],
    Discriminator(_prompt_kind, custom_error_type="prompt_type",
                  custom_error_message="expected a string or a list of chat messages"),
]
_UNION_TAGS = ("text", "messages")


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Prompt
    response: Text

    @field_validator("prompt")
    @classmethod
    def _messages_fit(cls, value: str | list[ChatMessage], info: ValidationInfo):
        _, max_chars = _limits(info)
        total = sum(len(m.content) for m in value) if isinstance(value, list) else 0
        if total > max_chars:
            raise PydanticCustomError(TOO_LARGE, "{count} characters of messages, more than the limit of {limit}",
                                      {"count": total, "limit": max_chars})
        return value


class ScoreRequest(BaseModel):
    """`{"items": [{"prompt": str | [{"role", "content"}...], "response": str}, ...]}`; an unknown key
    is a 422 (a misspelt field is never silently dropped)."""

    model_config = ConfigDict(extra="forbid")
    items: Annotated[list[ScoreItem], Field(min_length=1)]

    @field_validator("items", mode="before")
    @classmethod
    def _few_enough(cls, value: Any, info: ValidationInfo):
        max_items, _ = _limits(info)
        if isinstance(value, list) and len(value) > max_items:  # before any item is validated
            raise PydanticCustomError(TOO_LARGE, "{count} items, more than the limit of {limit} per request",
                                      {"count": len(value), "limit": max_items})
        return value


_FIELDS = {model.__name__: list(model.model_fields) for model in (ChatMessage, ScoreItem, ScoreRequest)}


def field_path(loc: tuple) -> str:
    """pydantic's error location as the request spells it: ('items', 3, 'prompt', 'messages', 0,
    'content') -> items[3].prompt[0].content (the union's branch tag left out)."""
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif not (part in _UNION_TAGS and i and loc[i - 1] == "prompt"):
            path += f".{part}" if path else part
    return path


def _model_at(loc: tuple) -> str:
    """Which model holds the field at `loc`: () is the request, ('items', 0) an item."""
    names = [part for part in loc if isinstance(part, str)]
    return "ScoreRequest" if not names else "ScoreItem"


def _describe(error: dict, payload: Any) -> str:
    """One validation error as '<field>: <problem>' in the request's own terms."""
    loc, kind = tuple(error["loc"]), error["type"]
    given = "null" if error.get("input") is None else type(error.get("input")).__name__
    where = field_path(loc)
    if kind == "missing":
        parent = field_path(loc[:-1])
        if not parent:
            present = sorted(payload) if isinstance(payload, dict) else []
            return f"missing field '{loc[-1]}' (fields present: {present})"
        return f"{parent}: missing field '{loc[-1]}'"
    if kind == "model_type":
        fields = ", ".join(repr(f) for f in _FIELDS.get((error.get("ctx") or {}).get("class_name"), []))
        if not where:
            return f"request body must be a JSON object with 'items', got {given}"
        return f"{where}: expected an object with {fields}, got {given}"
    if kind == "string_type":
        return f"{where}: expected a string, got {given}"
    if kind == "list_type":
        return f"{where}: expected a list, got {given}"
    if kind == "extra_forbidden":
        allowed = _FIELDS[_model_at(loc[:-1])]
        return f"{where}: unknown field (expected only {', '.join(repr(f) for f in allowed)})"
    if kind == "literal_error" and not isinstance(error.get("input"), str):
        return f"{where}: expected a string, got {given}"
    if kind == "literal_error":
        return f"{where}: {error.get('input')!r} is not a role (choose from {', '.join(ROLES)})"
    if kind == "too_short":
        return f"{where}: the {'messages ' if where.endswith('prompt') else ''}list is empty"
    return f"{where}: {error['msg']}" if where else error["msg"]


def parse_score_request(payload: Any, max_items: int, max_chars: int) -> list[tuple[str | list[dict], str]]:
    """(prompt, response) pairs of a parsed body, validated by `ScoreRequest`: a 422 names the
    field and what is wrong with it (413 when a limit is passed); up to 3 problems are listed."""
    try:
        request = ScoreRequest.model_validate(payload, context={"max_items": max_items, "max_chars": max_chars})
    except ValidationError as err:
        errors = err.errors(include_url=False)
        status = 413 if errors[0]["type"] == TOO_LARGE else 422
        message = "; ".join(_describe(e, payload) for e in errors[:3])
        if len(errors) > 3:
            message += f" (and {len(errors) - 3} more)"
        raise RequestError(status, message) from None
    return [(item.prompt if isinstance(item.prompt, str) else [m.model_dump() for m in item.prompt], item.response)
            for item in request.items]


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


class AdmissionGate:
    """Score requests a replica holds at once (waiting for a batch or being scored).

    Past `limit` a request is refused with 429 and a Retry-After at once, before its body is
    read, so a burst costs the replica nothing and the client knows to back off; Serve's own
    queue (`max_queued_requests`, 503) only bounds what waits in front of the replicas.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def enter(self) -> None:
        if self.held >= self.limit:
            raise RequestError(429, f"replica busy: {self.held} score requests in flight (limit {self.limit}); retry shortly")
        self.held += 1

    def leave(self) -> None:
        self.held -= 1
