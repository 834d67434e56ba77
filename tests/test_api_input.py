"""Request bodies the HTTP API refuses before they become jobs: pure checks, no server."""

from __future__ import annotations

import json

import pytest

from landmark.api_input import MAX_JSON_DEPTH, ApiError, parse_json


def refusal(text: str | bytes) -> tuple[int, str]:
    with pytest.raises(ApiError) as error:
        parse_json(text, "request body")
    return error.value.status, error.value.detail


def test_a_nul_character_is_refused_naming_where_it_is() -> None:
    body = json.dumps({"kind": "index", "sources": ["a.jpg", "b\x00.jpg"]})
    assert refusal(body) == (400, "request body: sources[1] holds a NUL character")
    assert refusal(json.dumps({"matching": {"ra\x00tio": 1}})) == (
        400, "request body: a key under matching holds a NUL character")


def test_deep_nesting_is_refused_not_a_server_error() -> None:
    at_limit = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(at_limit, "request body") == eval(at_limit)  # noqa: S307 - lists only
    one_more = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    assert refusal(one_more)[0] == 400
    assert refusal("[" * 200_000 + "]" * 200_000) == (
        400, f"request body: JSON nested deeper than {MAX_JSON_DEPTH} levels")


def test_what_is_not_json_says_so() -> None:
    status, detail = refusal(b"{not json")
    assert status == 400 and detail.startswith("request body is not valid JSON (")
    assert parse_json(b'{"kind": "query", "image": "q.jpg"}', "request body") == {"kind": "query", "image": "q.jpg"}
