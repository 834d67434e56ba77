"""The HTTP API's limits through HTTP: body sizes whatever the headers say, list lengths, NUL
characters and deep JSON, uploads that leave nothing behind when refused, and the schema pages."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import _free_port
from test_api import PHOTOS, TOKEN, make_client, small_jpeg

pytestmark = pytest.mark.integration


@pytest.fixture()
def http(database_url: str, dask_cluster_address: str, tmp_path: Path) -> Iterator[Any]:
    with make_client(database_url, dask_cluster_address, tmp_path, upload_limit_mb=0.5) as client:
        yield client


def uploads(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "results" / "uploads").rglob("*") if p.is_file()]


def test_json_bodies_are_limited_in_size_and_length(http: Any) -> None:
    huge = json.dumps({"kind": "index", "sources": ["x" * 1000] * 1500}).encode()
    declared = http.post("/jobs", content=huge, headers={"content-type": "application/json"})
    assert (declared.status_code, declared.json()) == (413, {"detail": "JSON body is larger than the limit of "
                                                                       "1000000 bytes"})
    chunked = http.post("/jobs", content=iter([huge[:600_000], huge[600_000:]]),
                        headers={"content-type": "application/json"})
    assert chunked.status_code == 413, chunked.text
    many = http.post("/jobs", json={"kind": "index", "sources": [f"{n}.jpg" for n in range(1001)]})
    assert (many.status_code, many.json()) == (422, {"detail": "sources: List should have at most 1000 items "
                                                               "after validation, not 1001"})


def test_nul_characters_and_deep_json_are_bad_requests(http: Any, tmp_path: Path) -> None:
    nul = http.post("/jobs", json={"kind": "index", "sources": ["a\x00.jpg"]})
    assert (nul.status_code, nul.json()) == (400, {"detail": "request body: sources[0] holds a NUL character"})
    deep = http.post("/jobs", content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
    assert (deep.status_code, deep.json()) == (400, {"detail": "request body: JSON nested deeper than 8 levels"})
    form = http.post("/jobs", files={"image": ("q.jpg", small_jpeg(PHOTOS[0]), "image/jpeg")},
                     data={"matching": '{"ratio": "\\u0000"}'})
    assert (form.status_code, form.json()) == (400, {"detail": "matching: ratio holds a NUL character"})
    assert uploads(tmp_path) == []


def test_a_refused_upload_leaves_no_file(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    image = small_jpeg(PHOTOS[0])
    with make_client(database_url, dask_cluster_address, tmp_path) as client:
        option = client.post("/jobs", files={"image": ("q.jpg", image, "image/jpeg")}, data={"matching": '{"x": 1}'})
        assert option.status_code == 400 and "unknown option 'x'" in option.json()["detail"]
        assert uploads(tmp_path) == []
    port = _free_port()  # no broker listens there: the job cannot be queued
    with make_client(database_url, dask_cluster_address, tmp_path, broker_url=f"redis://127.0.0.1:{port}/0") as client:
        unqueued = client.post("/jobs", files={"image": ("q.jpg", image, "image/jpeg")})
    assert unqueued.status_code == 503 and "cannot reach the broker" in unqueued.json()["detail"]
    assert uploads(tmp_path) == []


def test_the_schema_needs_the_token_and_the_pages_are_off(
    database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    with make_client(database_url, dask_cluster_address, tmp_path, api_token=TOKEN) as client:
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
        spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
        assert spec.status_code == 200 and "/jobs" in spec.json()["paths"]
    with make_client(database_url, dask_cluster_address, tmp_path) as client:  # no token: all open
        assert client.get("/docs").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_a_chunked_upload_is_cut_off_at_the_limit(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    """A real server, a body with no Content-Length: the 413 comes long before the body ends."""
    import uvicorn

    from landmark import config as cfg
    from landmark.api import create_api
    from landmark.settings import Settings

    settings = cfg.resolve(Settings, {"database_url": database_url, "dask_scheduler": dask_cluster_address,
                                      "results": str(tmp_path / "results"), "upload_limit_mb": 0.5}, environ={})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_api(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        boundary = "b0undary"
        head = (f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()
        part = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n").encode()
        chunk = f"{65536:x}\r\n".encode() + b"\xff" * 65536 + b"\r\n"
        sent, total = 0, 200_000_000
        answered = threading.Event()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")

            def send_body() -> None:
                nonlocal sent
                with contextlib.suppress(OSError):  # the server closes the connection after its answer
                    while sent < total and not answered.is_set():
                        sock.sendall(chunk)
                        sent += 65536

            sender = threading.Thread(target=send_body, daemon=True)
            sender.start()
            reply = b""
            while b"}" not in reply:  # the JSON body of the answer, or the connection closed
                more = sock.recv(4096)
                if not more:
                    break
                reply += more
            answered.set()
            sender.join(30)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"larger than the limit of 0.5 MB" in reply
        # The server stopped reading at the limit; what else was sent sat in socket buffers.
        assert sent < 0.1 * total, sent
    finally:
        server.should_exit = True
        thread.join(10)
    assert uploads(tmp_path) == []
