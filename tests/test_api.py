"""The HTTP API through HTTP: jobs run inside the server (no broker), auth, uploads, bad requests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LANDMARKS, _free_port

pytestmark = pytest.mark.integration

PHOTOS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg")) + sorted((LANDMARKS / "lightglue_building").glob("*.jpg"))
TOKEN = "s3cret-token"


def make_client(database_url: str, scheduler: str, tmp_path: Path, **settings: Any):  # noqa: ANN201
    from fastapi.testclient import TestClient

    from landmark import config as cfg
    from landmark.api import create_api
    from landmark.settings import Settings

    values = {"database_url": database_url, "dask_scheduler": scheduler, "extractor": "rootsift",
              "results": str(tmp_path / "results"), **settings}
    return TestClient(create_api(cfg.resolve(Settings, values, environ={})))


@pytest.fixture()
def http(database_url: str, dask_cluster_address: str, tmp_path: Path) -> Iterator[Any]:
    with make_client(database_url, dask_cluster_address, tmp_path, api_token=TOKEN,
                     upload_limit_mb=0.5) as client:
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        yield client


def finished(http: Any, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = http.get(f"/jobs/{job_id}").json()
        if document["status"] in ("succeeded", "failed"):
            return document
        assert time.monotonic() < deadline, document
        time.sleep(0.2)


def small_jpeg(path: Path) -> bytes:
    """``path`` re-encoded at 640 px, under the test's upload limit."""
    import io

    from PIL import Image

    image = Image.open(path)
    image.thumbnail((640, 640))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def test_index_query_and_fetch_results_over_http(http: Any, tmp_path: Path) -> None:
    posted = http.post("/jobs", json={"kind": "index", "sources": [str(p) for p in PHOTOS]})
    assert posted.status_code == 202, posted.text
    assert posted.headers["location"] == f"/jobs/{posted.json()['id']}"
    index = finished(http, posted.json()["id"])
    assert (index["status"], index["done"], index["failed"], index["total"]) == ("succeeded", 5, 0, 5)
    assert index["result"]["stored"] == 5 and index["links"] == {"self": f"/jobs/{index['id']}"}

    query = http.post("/jobs", json={"kind": "query", "image": str(PHOTOS[0]), "top_k": 2, "add": False,
                                     "matching": {"min_inliers": 10}}).json()
    done = finished(http, query["id"])
    assert done["status"] == "succeeded", done
    text = http.get(f"/jobs/{query['id']}/result.txt")
    assert text.headers["content-type"].startswith("text/plain")
    lines = text.text.splitlines()
    assert len(lines) == 2 and {line.split("\t")[2] for line in lines} == {PHOTOS[1].as_uri(), PHOTOS[2].as_uri()}
    document = http.get(f"/jobs/{query['id']}/result.json").json()
    assert document["matching"]["min_inliers"] == 10 and document["query"] == PHOTOS[0].as_uri()

    uploaded = http.post("/jobs", files={"image": ("my photo (1).jpg", small_jpeg(PHOTOS[3]), "image/jpeg")},
                         data={"top_k": "1"})
    assert uploaded.status_code == 202, uploaded.text
    image = uploaded.json()["parameters"]["image"]
    assert image.startswith(str(tmp_path / "results" / "uploads")) and image.endswith("/my_photo_1_.jpg")
    assert uploaded.json()["parameters"]["add"] is False
    ranked = finished(http, uploaded.json()["id"])
    assert ranked["status"] == "succeeded", ranked
    assert http.get(f"/jobs/{ranked['id']}/result.txt").text.split("\t")[2].strip() == PHOTOS[3].as_uri()

    index_result = http.get(f"/jobs/{index['id']}/result.txt")
    assert index_result.status_code == 409
    assert index_result.json() == {
        "detail": f"job {index['id']} is an index job and has no ranking; its status has its counts"
    }


def test_bad_requests_name_the_problem(http: Any) -> None:
    cases = [
        (dict(json={"kind": "index"}), 422, "sources: Field required"),
        (dict(json={"kind": "index", "sources": []}), 422,
         "sources: List should have at least 1 item after validation, not 0"),
        (dict(json={"kind": "crop", "image": "x.jpg"}), 422,
         "kind: Input tag 'crop' found using 'kind' does not match any of the expected tags: 'index', 'query'"),
        (dict(json={"kind": "query", "image": "q.jpg", "top_k": 0}), 422,
         "top_k: Input should be greater than or equal to 1"),
        (dict(json={"kind": "query", "image": "q.jpg", "matching": {"ratio": "x"}}), 400,
         "ratio: 'x' is not a valid float"),
        (dict(json={"kind": "query", "image": "q.jpg", "matching": {"shine": 1}}), 400,
         "unknown option 'shine' for MatchConfig; valid options: rule, max_distance, ratio, verification, "
         "ransac_threshold, ransac_trials, min_inliers, seed, precision"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, None),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415,
         "content type 'text/plain': send application/json, or multipart/form-data with an image file"),
        (dict(files={"image": ("notes.jpg", b"just text", "image/jpeg")}), 422,
         "upload 'notes.jpg': not an image (Pillow cannot identify the format)"),
        (dict(files={"picture": ("a.jpg", b"x", "image/jpeg")}), 422,
         "picture: unknown form field; valid fields: kind, image, top_k, add, matching"),
        (dict(data={"top_k": "3"}, files={"other": ("a", b"", "text/plain")}), 422,
         "other: unknown form field; valid fields: kind, image, top_k, add, matching"),
        (dict(files={"image": ("big.jpg", b"\xff" * 600_000, "image/jpeg")}), 413,
         "image upload is larger than the limit of 0.5 MB (LANDMARK_UPLOAD_LIMIT_MB)"),
    ]
    for request, status, detail in cases:
        answer = http.post("/jobs", **request)
        assert answer.status_code == status, (request, answer.text)
        if detail is None:
            assert answer.json()["detail"].startswith("request body is not valid JSON")
        else:
            assert answer.json() == {"detail": detail}, request

    unknown = "0" * 32
    assert http.get(f"/jobs/{unknown}").json() == {"detail": f"no job '{unknown}' in this store"}
    assert http.get(f"/jobs/{unknown}").status_code == 404
    assert http.get("/jobs/../etc/result.txt").status_code == 404
    csv = http.get(f"/jobs/{unknown}/result.csv")
    assert (csv.status_code, csv.json()) == (422, {"detail": "fmt: Input should be 'txt' or 'json'"})


def test_a_token_guards_everything_but_health(http: Any) -> None:
    del http.headers["Authorization"]
    missing = http.get("/jobs/" + "0" * 32)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"detail": "missing bearer token: send Authorization: Bearer <LANDMARK_API_TOKEN>"}
    wrong = http.post("/jobs", json={"kind": "index", "sources": ["x"]}, headers={"Authorization": "Bearer nope"})
    assert (wrong.status_code, wrong.json()) == (401, {"detail": "invalid bearer token"})
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json()["database"]["ok"] is True
    assert health.json()["broker"] == {"ok": True, "detail": "none: jobs run in this server"}
    assert health.json()["runner"] == {"ok": True, "detail": "idle"}
    spec = http.get("/openapi.json").json()
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/result.{fmt}", "/health"} <= set(spec["paths"])
    assert set(spec["paths"]["/jobs"]["post"]["requestBody"]["content"]) == {"application/json", "multipart/form-data"}


def test_health_says_what_is_unreachable(database_url: str, tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    with make_client(database_url, f"tcp://127.0.0.1:{port}", tmp_path,
                     broker_url=f"redis://127.0.0.1:{port}/0") as client:
        health = client.get("/health")
    assert health.status_code == 503
    report = health.json()
    assert report["status"] == "unavailable" and report["database"]["ok"] is True
    assert report["broker"]["ok"] is False and report["dask"]["ok"] is False
    assert report["runner"] == {"ok": True, "detail": "none here: queue workers run the jobs"}
    assert str(port) in report["broker"]["detail"] or "refused" in report["broker"]["detail"].lower()
