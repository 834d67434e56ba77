"""What the HTTP API accepts, checked before anything is parsed into a job.

A body is counted as it arrives, so a chunked upload with no ``Content-Length`` (or one that
lies) is refused once it passes the limit, not after it has been written to disk. JSON is
refused when it is nested deeper than :data:`MAX_JSON_DEPTH` or holds a NUL character
(PostgreSQL's ``jsonb`` cannot store one, and no path or option needs one).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message

MAX_JSON_BYTES = 1_000_000
"""Largest JSON body: a thousand sources of a few hundred characters each fit ten times over."""

MAX_JSON_DEPTH = 8
"""Deepest nesting of arrays and objects in a JSON body (a job request needs three)."""

FORM_FIELD_BYTES = 64_000
"""Largest form field that is not the image (``matching``, ``top_k`` ...), and the room the
form's own framing may take on top of the image."""


class ApiError(Exception):
    """A request refused with HTTP ``status``; ``detail`` names the input and the reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def limited(request: Request, limit: int, too_large: str) -> Request:
    """``request`` whose body raises a 413 :class:`ApiError` (``too_large``) once more than
    ``limit`` bytes have arrived, whatever ``Content-Length`` said (a declared length over the
    limit is refused before reading)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, too_large)
    receive = request.receive
    received = 0

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise ApiError(413, too_large)
        return message

    return Request(request.scope, counted)


async def read_json(request: Request) -> Any:
    """The request's JSON body, at most :data:`MAX_JSON_BYTES`, checked by :func:`parse_json`."""
    body = b"".join([chunk async for chunk in limited(
        request, MAX_JSON_BYTES, f"JSON body is larger than the limit of {MAX_JSON_BYTES} bytes"
    ).stream()])
    return parse_json(body, "request body")


def parse_json(text: str | bytes, what: str) -> Any:
    """``text`` parsed as JSON; a 400 :class:`ApiError` naming ``what`` if it is not JSON, is
    nested deeper than :data:`MAX_JSON_DEPTH` or holds a NUL character."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ApiError(400, f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise ApiError(400, f"{what} is not valid JSON ({error})") from None
    check_json(value, what)
    return value


def check_json(value: Any, what: str) -> None:
    """Refuse (400) nesting deeper than :data:`MAX_JSON_DEPTH` and NUL characters, naming where."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                raise ApiError(400, f"{what}: JSON nested deeper than {MAX_JSON_DEPTH} levels at {where or 'top'}")
            if isinstance(item, list):
                pending.extend((child, f"{where}[{n}]", depth + 1) for n, child in enumerate(item))
                continue
            for key, child in item.items():
                if "\x00" in key:
                    raise ApiError(400, f"{what}: a key under {where or 'top'} holds a NUL character")
                pending.append((child, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(item, str) and "\x00" in item:
            raise ApiError(400, f"{what}: {where or 'value'} holds a NUL character")
