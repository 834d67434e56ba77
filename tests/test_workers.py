"""Jobs through a real broker (Redis and RabbitMQ) and real worker processes.

Workers are started as a user would, with ``landmark worker``, in subprocesses; the jobs table
lives in the embedded PostgreSQL; images come from a real S3 server on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import pytest

from conftest import LANDMARKS, landmark_groups

pytestmark = pytest.mark.integration

PHOTOS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg")) + sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))


def worker_env(database_url: str, broker_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    env.update(
        LANDMARK_DATABASE_URL=database_url, LANDMARK_BROKER_URL=broker_url, LANDMARK_EXTRACTOR="rootsift",
        LANDMARK_HOME=str(tmp_path / "home"), LANDMARK_RESULTS=str(tmp_path / "results"),
        LANDMARK_BROKER_VISIBILITY_TIMEOUT="30", **extra,
    )
    return env


@contextmanager
def worker(queues: str, env: dict[str, str], log: Path, *options: str) -> Iterator[subprocess.Popen]:
    """``landmark worker --queues QUEUES`` in a subprocess, ready to take tasks."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "landmark.cli", "worker", "--queues", queues, *options],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while " ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker for {queues} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()  # warm shutdown: finishes the task at hand
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


def landmark(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "landmark.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def upload(bucket: str, photos: list[Path], prefix: str) -> list[str]:
    from landmark import s3

    uris = []
    for photo in photos:
        key = f"{prefix}{photo.parent.name}-{photo.name}"
        s3.client().put_object(Bucket=bucket, Key=key, Body=photo.read_bytes())
        uris.append(f"s3://{bucket}/{key}")
    return uris


def rows(database_url: str) -> tuple[int, int]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT uri) FROM landmarks")
        return cur.fetchone()


def test_jobs_by_cli_and_http_are_run_by_separate_workers(
    database_url: str, broker_url: str, bucket: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from landmark import config as cfg
    from landmark.api import create_api
    from landmark.settings import Settings

    uris = upload(bucket, PHOTOS, "photos/")
    missing = f"s3://{bucket}/nope/missing.jpg"
    env = worker_env(database_url, broker_url, tmp_path, LANDMARK_DASK_SCHEDULER=dask_cluster_address,
                     LANDMARK_EXTRACT_BATCH="4")
    with worker("extract", env, tmp_path / "extract.log", "--concurrency", "2"), \
            worker("match", env, tmp_path / "match.log"):
        submitted = landmark("submit", "index", f"s3://{bucket}/photos/", missing, env=env)
        assert submitted.returncode == 0, submitted.stderr
        index_id = submitted.stdout.strip()
        waited = landmark("wait", index_id, "--timeout", "240", env=env)
        assert waited.stdout.strip() == f"{index_id} succeeded", waited.stdout + waited.stderr
        status = landmark("status", index_id, env=env).stdout
        assert f"progress: {len(PHOTOS)} of {len(PHOTOS) + 1} done, 1 failed" in status
        assert f"result:   stored {len(PHOTOS)}, skipped 0 unchanged, failed 1" in status
        assert rows(database_url) == (len(PHOTOS), len(PHOTOS))

        settings = cfg.resolve(Settings, {"database_url": database_url, "broker_url": broker_url,
                                          "results": str(tmp_path / "results"),
                                          "allowed_sources": (f"s3://{bucket}/",)}, environ={})
        with TestClient(create_api(settings)) as http:
            query = uris[PHOTOS.index(LANDMARKS / "sacre_coeur" / "lightglue_sacre_coeur1.jpg")]
            answer = http.post("/jobs", json={"kind": "query", "image": query, "top_k": 5, "add": False})
            assert answer.status_code == 202, answer.text
            assert answer.json()["status"] == "queued"
            query_id = answer.json()["id"]
            second = http.post("/jobs", json={"kind": "query", "image": uris[0], "top_k": 2, "add": False}).json()
            bad = http.post("/jobs", json={"kind": "query", "image": missing}).json()
            for job_id in (query_id, second["id"], bad["id"]):
                assert landmark("wait", job_id, "--timeout", "240", env=env).returncode in (0, 1)
            document = http.get(f"/jobs/{query_id}").json()
            assert document["status"] == "succeeded", document
            ranking = http.get(f"/jobs/{query_id}/result.txt").text.splitlines()
            sacre_coeur = {u for u, p in zip(uris, PHOTOS) if p.parent.name == "sacre_coeur"}
            assert len(ranking) == 5 and all(line.split("\t")[2] in sacre_coeur for line in ranking)
            assert http.get(f"/jobs/{query_id}/result.json").json()["query"] == query
            failed = http.get(f"/jobs/{bad['id']}").json()
            assert failed["status"] == "failed"
            assert failed["error"] == f"{missing}: cannot read from S3 (no such object)"

        text = landmark("result", query_id, env=env)
        assert text.stdout.splitlines() == ranking
        match_log = (tmp_path / "match.log").read_text()
        assert match_log.count("dask: connected to") == 1  # one client, kept across the three jobs
        assert match_log.count("landmark.query[") >= 6  # received and succeeded, three times


def test_a_worker_killed_mid_batch_loses_nothing(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    """SIGKILL the process running an extract task: the batch is redelivered and the job completes
    with exactly one row per image."""
    photos = [p for group in landmark_groups().values() for p in group]
    env = worker_env(database_url, broker_url, tmp_path, LANDMARK_EXTRACT_BATCH="3")
    with worker("extract", env, tmp_path / "extract.log", "--concurrency", "2") as process:
        submitted = landmark("submit", "index", str(LANDMARKS), env=env)
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        with psycopg2.connect(database_url) as conn:
            conn.autocommit = True
            deadline = time.monotonic() + 120
            while True:  # wait for a batch in the middle of its extraction
                with conn.cursor() as cur:
                    cur.execute("SELECT batch, worker FROM job_batches WHERE job_id = %s AND attempts = 1 "
                                "AND finished_at IS NULL AND worker IS NOT NULL ORDER BY batch LIMIT 1", (job_id,))
                    found = cur.fetchone()
                if found or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert found, "no extract task was seen running"
            batch, taken_by = found
            pid = int(taken_by.rsplit(":", 1)[1])
            assert pid != process.pid  # a pool process, not the worker's main process
            os.kill(pid, signal.SIGKILL)

            waited = landmark("wait", job_id, "--timeout", "240", env=env)
            assert waited.stdout.strip() == f"{job_id} succeeded", waited.stdout + waited.stderr
            with conn.cursor() as cur:
                cur.execute("SELECT attempts FROM job_batches WHERE job_id = %s AND batch = %s", (job_id, batch))
                assert cur.fetchone()[0] >= 2  # taken again after its process died
                cur.execute("SELECT done, failed, total FROM jobs WHERE id = %s", (job_id,))
                assert cur.fetchone() == (len(photos), 0, len(photos))
    assert rows(database_url) == (len(photos), len(photos))
    assert "WorkerLostError" in (tmp_path / "extract.log").read_text()


def index_directly(database_url: str, photos: list[Path], tmp_path: Path) -> None:
    """Store ``photos`` without a queue (for tests of query jobs)."""
    from landmark import config as cfg
    from landmark.session import Session
    from landmark.settings import Settings

    settings = cfg.resolve(Settings, {"database_url": database_url, "extractor": "rootsift",
                                      "home": str(tmp_path / "home")}, environ={})
    with Session(settings) as session:
        assert session.index([str(p) for p in photos]).stored == len(photos)


def job_state(database_url: str, job_id: str) -> tuple[str, int]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, attempts FROM jobs WHERE id = %s", (job_id,))
        return cur.fetchone()


def test_a_match_worker_killed_mid_query_is_replaced_within_the_lease(
    database_url: str, broker_url: str, workerless_scheduler: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    """kill -9 of a match worker (the whole worker) mid-query. RabbitMQ gives its task back when the
    connection drops, and the next worker takes it at once: the task keeps its id, and with it the
    lease. Redis would keep it for the visibility timeout (10 minutes here): the next worker's
    sweeper sends the job again once its lease has run out. Either way, within the lease."""
    index_directly(database_url, PHOTOS[:4], tmp_path)
    lease = 4.0
    stuck = worker_env(database_url, broker_url, tmp_path, LANDMARK_JOB_LEASE=str(lease),
                       LANDMARK_DASK_SCHEDULER=workerless_scheduler)
    stuck["LANDMARK_BROKER_VISIBILITY_TIMEOUT"] = "600"
    with worker("match", stuck, tmp_path / "match-1.log") as first:
        job_id = landmark("submit", "query", str(PHOTOS[0]), "--no-add", env=stuck).stdout.strip()
        deadline = time.monotonic() + 60
        while job_state(database_url, job_id) != ("running", 1):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1)  # mid-query: waiting on Dask
        os.killpg(first.pid, signal.SIGKILL)
        killed = time.monotonic()
    healthy = dict(stuck, LANDMARK_DASK_SCHEDULER=dask_cluster_address)
    with worker("match", healthy, tmp_path / "match-2.log"):
        ready = time.monotonic()
        while job_state(database_url, job_id)[1] < 2:
            assert time.monotonic() < killed + 60
            time.sleep(0.1)
        taken = time.monotonic()
        waited = landmark("wait", job_id, "--timeout", "120", env=healthy)
    print(f"\n{broker_url.split(':')[0]}: match worker killed; query taken again {taken - killed:.1f} s later "
          f"(the next worker was ready after {ready - killed:.1f} s; lease {lease:g} s)")
    assert waited.stdout.strip() == f"{job_id} succeeded", waited.stdout + waited.stderr
    assert taken - ready < lease + lease / 3 + 2
    assert rows(database_url) == (4, 4)


def test_transient_s3_failures_are_retried_until_the_server_is_back(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """S3 down when the job starts: the task backs off and retries; once S3 is back, the job succeeds."""
    from moto.server import ThreadedMotoServer

    from conftest import _free_port

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="flaky")
    for photo in PHOTOS[:3]:
        client.put_object(Bucket="flaky", Key=f"p/{photo.name}", Body=photo.read_bytes())
    server.stop()  # moto keeps its objects in this process; they are there again on restart

    env = worker_env(database_url, redis_url, tmp_path, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing",
                     AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    log = tmp_path / "extract.log"
    server = None
    try:
        with worker("extract", env, log, "--concurrency", "1"):
            job_id = landmark("submit", "index", "s3://flaky/p/", env=env).stdout.strip()
            deadline = time.monotonic() + 60
            while "retry 2 of 5" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            waited = landmark("wait", job_id, "--timeout", "120", env=env)
            assert waited.stdout.strip() == f"{job_id} succeeded", waited.stdout + log.read_text()
    finally:
        if server is not None:
            server.stop()
    assert rows(database_url) == (3, 3)
    assert "cannot list S3 prefix" in log.read_text()


def test_a_job_the_broker_cannot_take_fails_with_the_reason(database_url: str, tmp_path: Path) -> None:
    from conftest import _free_port

    port = _free_port()  # nothing listens there
    env = worker_env(database_url, f"redis://127.0.0.1:{port}/0", tmp_path)
    submitted = landmark("submit", "index", str(PHOTOS[0]), env=env)
    assert submitted.returncode == 2
    job_id = submitted.stdout.strip()
    assert submitted.stderr.startswith(f"landmark submit: error: cannot reach the broker at redis://127.0.0.1:{port}/0: ")
    status = landmark("status", job_id, env=env)
    assert "status:   failed" in status.stdout and f"error:    cannot reach the broker" in status.stdout

    refused = landmark("submit", "index", str(PHOTOS[0]), "-E", "max_features=10", env=env)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (
        "landmark submit: error: --extractor and --extractor-option cannot travel with a queued job: the workers' "
        "own settings (LANDMARK_EXTRACTOR, LANDMARK_DELF_MODEL, ...) and the store's extractor decide"
    )
