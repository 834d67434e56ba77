"""The HTTP API through HTTP: jobs run inside the server (no broker), auth, uploads, bad requests."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LANDMARKS, _free_port
from landmark.search_page import RESULT_PAGE_POLICY

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
                     upload_limit_mb=0.5, allowed_sources=(str(LANDMARKS),)) as client:
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
                         data={"top_k": "1", "evidence": "true"})
    assert uploaded.status_code == 202, uploaded.text
    image = uploaded.json()["parameters"]["image"]
    assert image.startswith(str(tmp_path / "results" / "uploads")) and image.endswith("/my_photo_1_.jpg")
    assert uploaded.json()["parameters"]["add"] is False and uploaded.json()["parameters"]["evidence"] is True
    ranked = finished(http, uploaded.json()["id"])
    assert ranked["status"] == "succeeded", ranked
    assert http.get(f"/jobs/{ranked['id']}/result.txt").text.split("\t")[2].strip() == PHOTOS[3].as_uri()
    top = http.get(ranked["links"]["json"]).json()["matches"][0]
    assert len(top["correspondences"]) == top["inliers"] and len(top["transform"]["matrix"]) == 3
    page = http.get(ranked["links"]["html"])
    assert page.headers["content-type"] == "text/html; charset=utf-8" and PHOTOS[3].as_uri() in page.text
    assert page.headers["content-security-policy"] == RESULT_PAGE_POLICY
    assert http.get(ranked["links"]["html"], headers={"Authorization": ""}).status_code == 401

    index_result = http.get(f"/jobs/{index['id']}/result.txt")
    assert index_result.status_code == 409
    assert index_result.json() == {
        "detail": f"job {index['id']} is an index job and has no ranking; its status has its counts"
    }


def test_the_search_page_and_its_script_need_no_token_and_nothing_from_elsewhere(http: Any) -> None:
    page = http.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-token-required="true"' in page.text and '<script src="/search.js"></script>' in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text)  # every file it names is this service's
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = http.get("/search.js", headers={"Authorization": ""})
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in script.text and not re.search(r"https?://", script.text)  # relative calls only


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
         "ransac_threshold, ransac_trials, min_inliers, seed, search, shortlist, precision"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, None),
        (dict(content=b"hello", headers={"content-type": "text/plain"}), 415,
         "content type 'text/plain': send application/json, or multipart/form-data with an image file"),
        (dict(files={"image": ("notes.jpg", b"just text", "image/jpeg")}), 422,
         "upload 'notes.jpg': not an image (Pillow cannot identify the format)"),
        (dict(files={"picture": ("a.jpg", b"x", "image/jpeg")}), 422,
         "picture: unknown form field; valid fields: kind, image, top_k, add, evidence, matching"),
        (dict(data={"top_k": "3"}, files={"other": ("a", b"", "text/plain")}), 422,
         "other: unknown form field; valid fields: kind, image, top_k, add, evidence, matching"),
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
    assert (csv.status_code, csv.json()) == (422, {"detail": "fmt: Input should be 'txt', 'json' or 'html'"})


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
    assert http.get("/openapi.json").status_code == 401
    spec = http.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
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


# -- the source policy -------------------------------------------------------------------------

OUTSIDE = "not allowed: outside the sources this service may read (LANDMARK_ALLOWED_SOURCES)"
LINK_OUT = ("not allowed: a symbolic link leads outside the sources this service may read "
            "(LANDMARK_ALLOWED_SOURCES)")


def run(http: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Submit a JSON job and wait for it."""
    posted = http.post("/jobs", json=body)
    assert posted.status_code == 202, posted.text
    return finished(http, posted.json()["id"])


def stored_uris(database_url: str) -> list[str]:
    import psycopg2

    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('landmarks') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute("SELECT uri FROM landmarks ORDER BY uri")
        return [row[0] for row in cur.fetchall()]


@pytest.fixture()
def server_files(tmp_path: Path) -> dict[str, Path]:
    """An allowed root with two photos, a FIFO, links out and a list; the server's files beside it."""
    import os
    import shutil

    root, outside = tmp_path / "allowed", tmp_path / "server"
    (root / "photos").mkdir(parents=True)
    (outside / "private").mkdir(parents=True)
    for photo in PHOTOS[:2]:
        shutil.copy(photo, root / "photos" / photo.name)
    shutil.copy(PHOTOS[2], outside / "private" / "secret.jpg")
    (outside / "passwords.txt").write_text(f"hunter2\n{outside / 'private' / 'secret.jpg'}\n")
    os.mkfifo(root / "photos" / "pipe.jpg")
    (root / "photos" / "private").symlink_to(outside / "private")
    (root / "photos" / "secret.jpg").symlink_to(outside / "private" / "secret.jpg")
    (root / "list.txt").write_text(f"photos/{PHOTOS[0].name}\n{outside}/private/secret.jpg\nhunter2\n"
                                   f"../server/passwords.txt\nphotos/secret.jpg\n")
    return {"root": root, "photos": root / "photos", "outside": outside}


@pytest.mark.timeout(300)
def test_the_api_reads_only_what_the_operator_allows(
    database_url: str, dask_cluster_address: str, tmp_path: Path, server_files: dict[str, Path]
) -> None:
    root, photos, outside = server_files["root"], server_files["photos"], server_files["outside"]
    with make_client(database_url, dask_cluster_address, tmp_path, allowed_sources=(str(root),)) as http:
        # Refused at submit, without a look at the disk: 403, and the same answer for what exists and what does not.
        for source in (str(outside), str(outside / "passwords.txt"), "/dev/zero", f"{root}/../server/private",
                       (outside / "passwords.txt").as_uri(), "/etc/shadow", "/etc/no-such-file"):
            answer = http.post("/jobs", json={"kind": "index", "sources": [str(photos), source]})
            assert (answer.status_code, answer.json()) == (403, {"detail": f"{source}: {OUTSIDE}"}), source
        existing = http.post("/jobs", json={"kind": "query", "image": str(outside / "private" / "secret.jpg")})
        missing = http.post("/jobs", json={"kind": "query", "image": str(outside / "private" / "absent.jpg")})
        assert existing.status_code == missing.status_code == 403
        assert existing.json()["detail"].replace("secret", "X") == missing.json()["detail"].replace("absent", "X")
        unusable = {
            "ftp://x/a.jpg": "ftp://x/a.jpg: unsupported URI scheme (use a path, file:// or s3://)",
            f"{root}/\ud800.jpg": f"'{root}/\\ud800.jpg': not a file name this system can hold",
        }
        for source, detail in unusable.items():  # sent as JSON escapes: a lone \ud800
            answer = http.post("/jobs", content=json.dumps({"kind": "index", "sources": [source]}),
                               headers={"content-type": "application/json"})
            assert (answer.status_code, answer.json()) == (422, {"detail": f"sources: {detail}"})

        # Inside the root: links out are not followed, the FIFO is not opened, the rest is stored.
        walked = run(http, {"kind": "index", "sources": [str(photos)]})
        assert walked["status"] == "succeeded" and walked["result"]["stored"] == 2
        assert "allowed_sources" not in walked["parameters"]  # carried by the job, not shown to the caller
        assert walked["result"]["failed"] == [
            {"uri": (photos / "pipe.jpg").as_uri(), "reason": "not a regular file (a FIFO)"},
            {"uri": (photos / "private").as_uri(), "reason": LINK_OUT},
            {"uri": (photos / "secret.jpg").as_uri(), "reason": LINK_OUT},
        ]
        stored = sorted((photos / p.name).as_uri() for p in PHOTOS[:2])
        assert stored_uris(database_url) == stored

        # A list inside the root: each bad line reported by number, none of its text shown.
        listed = run(http, {"kind": "index", "sources": [str(root / "list.txt")]})
        where = f"{(root / 'list.txt').as_uri()} line"
        assert listed["result"]["failed"] == [
            {"uri": f"{where} 2", "reason": OUTSIDE}, {"uri": f"{where} 3", "reason": "no such file"},
            {"uri": f"{where} 4", "reason": OUTSIDE}, {"uri": f"{where} 5", "reason": LINK_OUT},
        ]
        assert (listed["status"], listed["result"]["unchanged"]) == ("succeeded", 1)
        assert "hunter2" not in json.dumps(listed) and "secret" not in json.dumps(listed)

        # A FIFO named directly ends its job instead of hanging it; so does a query through a link out.
        fifo = run(http, {"kind": "index", "sources": [str(photos / "pipe.jpg")]})
        assert fifo["status"] == "failed" and fifo["result"]["failed"] == [
            {"uri": (photos / "pipe.jpg").as_uri(), "reason": "not a regular file (a FIFO)"}]
        linked = run(http, {"kind": "query", "image": str(photos / "secret.jpg"), "add": True})
        assert linked["status"] == "failed" and linked["error"] == f"{(photos / 'secret.jpg').as_uri()}: {LINK_OUT}"
    assert stored_uris(database_url) == stored


def test_with_no_policy_only_uploads_are_queried(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    import io

    from PIL import Image

    with make_client(database_url, dask_cluster_address, tmp_path, max_image_pixels=400_000) as http:
        empty = "not allowed: this service reads no sources named in requests (LANDMARK_ALLOWED_SOURCES is empty)"
        for body in ({"kind": "index", "sources": [str(PHOTOS[0])]}, {"kind": "query", "image": str(PHOTOS[0])},
                     {"kind": "index", "sources": ["s3://bucket/photos/"]}):
            answer = http.post("/jobs", json=body)
            name = body.get("image") or body["sources"][0]
            assert (answer.status_code, answer.json()) == (403, {"detail": f"{name}: {empty}"})

        big = io.BytesIO()
        Image.open(PHOTOS[0]).convert("RGB").resize((1000, 800)).save(big, format="JPEG")
        refused = http.post("/jobs", files={"image": ("big.jpg", big.getvalue(), "image/jpeg")})
        assert (refused.status_code, refused.json()["detail"]) == (422, (
            "upload 'big.jpg': image too large (1000x800 = 800000 pixels, limit 400000); "
            "refusing to decode a possible decompression bomb"))

        uploaded = http.post("/jobs", files={"image": ("q.jpg", small_jpeg(PHOTOS[0]), "image/jpeg")},
                             data={"add": "true"})
        assert uploaded.status_code == 202, uploaded.text
        assert "allowed_sources" not in uploaded.json()["parameters"]
        folder = Path(uploaded.json()["parameters"]["image"]).parent
        done = finished(http, uploaded.json()["id"])
        assert done["status"] == "succeeded", done
    assert stored_uris(database_url) == [(folder / "q.jpg").as_uri()]
