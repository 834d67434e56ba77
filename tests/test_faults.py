"""Faults, on loopback with real parts: a database, broker, worker or server stops mid-job.

Each test starts what it breaks (a PostgreSQL or Redis of its own, see :mod:`servers`; workers and
servers as subprocesses, as a user would), breaks it mid-job, and asserts that the job ends (or is
resumed and then ends) and that the stored rows are exactly what they should be: every image once.
Leases are short here (``LANDMARK_JOB_LEASE=3``), so recovery takes seconds; each test prints
how long it took (``pytest -s`` shows it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from conftest import LANDMARKS, _free_port, landmark_groups
from servers import Postgres, Redis
from test_workers import index_directly, landmark, rows, worker, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.faults]

LEASE = "3"
PHOTOS = sorted(p for group in landmark_groups().values() for p in group)[:24]
SOME = sorted((LANDMARKS / "berliner_dom").glob("*.jpg")) + sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))


@pytest.fixture()
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.remove()


@pytest.fixture()
def redis() -> Iterator[Redis]:
    server = Redis()
    yield server
    server.remove()


def fault_env(database_url: str, broker_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = worker_env(database_url, broker_url, tmp_path, LANDMARK_JOB_LEASE=LEASE, LANDMARK_EXTRACT_BATCH="2",
                     LANDMARK_ALLOWED_SOURCES=str(LANDMARKS), **extra)
    env["LANDMARK_BROKER_VISIBILITY_TIMEOUT"] = "600"  # recovery must come from the leases, not from this
    if not broker_url:
        del env["LANDMARK_BROKER_URL"]
    return env


def job(database_url: str, job_id: str) -> dict[str, Any]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, done, failed, total, error, attempts, worker, holder FROM jobs WHERE id = %s",
                    (job_id,))
        names = [c.name for c in cur.description]
        row = dict(zip(names, cur.fetchone()))
    conn.close()
    return row


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except psycopg2.OperationalError:
            value = None  # the database is restarting
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.1)


def finished(database_url: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    return wait_for(lambda: (row := job(database_url, job_id))["status"] in ("succeeded", "failed") and row,
                    timeout, f"job {job_id} to finish")


def assert_stored_once(database_url: str, photos: list[Path], outcome: dict[str, Any]) -> None:
    """Every image stored exactly once, and the job's counts saying so."""
    assert outcome["status"] == "succeeded", outcome
    assert (outcome["done"], outcome["failed"], outcome["total"]) == (len(photos), 0, len(photos))
    assert rows(database_url) == (len(photos), len(photos))


@contextmanager
def serve(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    """``landmark serve`` in a subprocess, answering on ``port``."""
    import httpx

    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "landmark.cli", "serve", "--port", str(port)], env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code in (200, 503)
            except httpx.TransportError:
                return False

        wait_for(answers, 60, "the server to answer")
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_database_down_for_longer_than_the_retries_mid_index(postgres: Postgres, redis: Redis, tmp_path: Path) -> None:
    """The give-up cannot be recorded while the database is down; the leases run out, and once it
    is back the sweeper sends the work again: the job completes, every image stored once."""
    env = fault_env(postgres.url, redis.url, tmp_path, LANDMARK_JOB_RETRIES="1")
    log = tmp_path / "extract.log"
    with worker("extract", env, log, "--concurrency", "1"):
        job_id = landmark("submit", "index", *map(str, PHOTOS), env=env).stdout.strip()
        wait_for(lambda: job(postgres.url, job_id)["done"] >= 2, 120, "the first batch")
        postgres.stop()
        wait_for(lambda: "cannot record its failure now" in log.read_text(), 60, "the give-up to fail")
        time.sleep(2)  # down for longer than the retries took
        postgres.start()
        back = time.monotonic()
        before = job(postgres.url, job_id)["done"]
        wait_for(lambda: job(postgres.url, job_id)["done"] > before, 60, "the work to resume")
        resumed = time.monotonic()
        outcome = finished(postgres.url, job_id)
        print(f"\ndatabase back: a batch done {resumed - back:.1f} s later, the job {outcome['status']} "
              f"{time.monotonic() - back:.1f} s later (lease {LEASE} s)")
    assert_stored_once(postgres.url, PHOTOS, outcome)


def test_broker_restarted_mid_job(database_url: str, redis: Redis, tmp_path: Path) -> None:
    """Redis restarted without its data: the messages of the batches not yet done are gone. Their
    leases run out, nothing moves on the queue, and the sweeper sends them again."""
    env = fault_env(database_url, redis.url, tmp_path)
    with worker("extract", env, tmp_path / "extract.log", "--concurrency", "1"):
        job_id = landmark("submit", "index", *map(str, PHOTOS), env=env).stdout.strip()
        wait_for(lambda: job(database_url, job_id)["done"] >= 2, 120, "the first batch")
        redis.stop()
        redis.start()
        back = time.monotonic()
        before = job(database_url, job_id)["done"]
        wait_for(lambda: job(database_url, job_id)["done"] > before + 2, 60, "the work to resume")
        resumed = time.monotonic()
        outcome = finished(database_url, job_id)
        print(f"\nbroker back: batches done again {resumed - back:.1f} s later, the job {outcome['status']} "
              f"{time.monotonic() - back:.1f} s later (lease {LEASE} s)")
    assert_stored_once(database_url, PHOTOS, outcome)


def test_match_worker_stopped_then_killed_mid_query(database_url: str, redis: Redis, workerless_scheduler: str,
                                                    dask_cluster_address: str, tmp_path: Path) -> None:
    """A query that will not finish (its Dask scheduler has no workers). SIGTERM: the worker gives
    it the grace period, then exits, the task back on the queue, and the next worker takes it at
    once. kill -9 of that one: its lease runs out, and the sweeper of the worker started after it
    sends the job again (Redis would hold the lost task for its visibility timeout, 10 minutes)."""
    index_directly(database_url, SOME, tmp_path)
    stuck = fault_env(database_url, redis.url, tmp_path, LANDMARK_DASK_SCHEDULER=workerless_scheduler,
                      LANDMARK_SHUTDOWN_GRACE="2")
    with worker("match", stuck, tmp_path / "match-1.log") as first:
        job_id = landmark("submit", "query", str(SOME[0]), "--no-add", "--top-k", "3", env=stuck).stdout.strip()
        wait_for(lambda: job(database_url, job_id)["status"] == "running", 60, "the query to start")
        stopping = time.monotonic()
        first.terminate()
        first.wait(30)
        print(f"\nSIGTERM: the match worker exited after {time.monotonic() - stopping:.1f} s (grace 2 s)")
    with worker("match", stuck, tmp_path / "match-2.log") as second:
        taken = wait_for(lambda: (row := job(database_url, job_id))["attempts"] == 2 and row, 60, "the next worker")
        print(f"SIGTERM: the next worker took the query {time.monotonic() - stopping:.1f} s after the signal")
        assert taken["worker"].endswith(f":{second.pid}")
        time.sleep(2)  # mid-query: waiting on Dask, its heartbeat renewing the lease
        os.killpg(second.pid, signal.SIGKILL)
        killed = time.monotonic()
    healthy = fault_env(database_url, redis.url, tmp_path, LANDMARK_DASK_SCHEDULER=dask_cluster_address)
    with worker("match", healthy, tmp_path / "match-3.log"):
        wait_for(lambda: job(database_url, job_id)["attempts"] == 3, 60, "the sweeper to send it again")
        print(f"kill -9: the query was taken again {time.monotonic() - killed:.1f} s later (lease {LEASE} s)")
        outcome = finished(database_url, job_id)
    assert outcome["status"] == "succeeded" and outcome["attempts"] == 3, outcome
    assert (tmp_path / "results" / f"{job_id}.txt").read_text().count("\n") == 3
    assert rows(database_url) == (len(SOME), len(SOME))  # --no-add: the store as it was


def test_server_killed_mid_job_and_restarted(database_url: str, tmp_path: Path) -> None:
    """kill -9 of a server running an index job itself (no broker): the restarted server's sweeper
    resumes it once its lease has run out, and it finishes with each image stored once."""
    env = fault_env(database_url, "", tmp_path)
    port = _free_port()
    import httpx

    with serve(env, port, tmp_path / "serve-1.log") as first:
        posted = httpx.post(f"http://127.0.0.1:{port}/jobs", json={"kind": "index", "sources": list(map(str, PHOTOS))})
        job_id = posted.json()["id"]
        wait_for(lambda: job(database_url, job_id)["done"] >= 2, 120, "the first batches")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
        killed = time.monotonic()
    assert job(database_url, job_id)["status"] == "running"  # left behind
    with serve(env, port, tmp_path / "serve-2.log"):
        ready = time.monotonic()
        wait_for(lambda: job(database_url, job_id)["attempts"] == 2, 60, "the job to be resumed")
        print(f"\nserver killed: the restarted server (answering {ready - killed:.1f} s after the kill) resumed the "
              f"job {time.monotonic() - killed:.1f} s after the kill (lease {LEASE} s)")
        outcome = finished(database_url, job_id)
    assert outcome["attempts"] == 2
    assert_stored_once(database_url, PHOTOS, outcome)


def test_server_stopped_hands_its_job_back_within_the_grace_period(
    database_url: str, workerless_scheduler: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    """SIGTERM while a query runs in the server and will not finish: the server exits after the
    grace period, the job queued again; the next server resumes it at once."""
    import httpx

    index_directly(database_url, SOME, tmp_path)
    port = _free_port()
    env = fault_env(database_url, "", tmp_path, LANDMARK_DASK_SCHEDULER=workerless_scheduler,
                    LANDMARK_SHUTDOWN_GRACE="2")
    with serve(env, port, tmp_path / "serve-1.log") as first:
        posted = httpx.post(f"http://127.0.0.1:{port}/jobs", json={"kind": "query", "image": str(SOME[0]),
                                                                   "top_k": 3, "add": False})
        job_id = posted.json()["id"]
        wait_for(lambda: job(database_url, job_id)["status"] == "running", 60, "the query to start")
        runner = httpx.get(f"http://127.0.0.1:{port}/health").json()["runner"]
        assert runner["ok"] and runner["detail"].startswith(f"running job {job_id} since "), runner
        stopping = time.monotonic()
        first.send_signal(signal.SIGTERM)
        first.wait(30)
        print(f"\nSIGTERM: the server exited after {time.monotonic() - stopping:.1f} s (grace 2 s)")
    left = job(database_url, job_id)
    assert (left["status"], left["holder"]) == ("queued", None), left
    env["LANDMARK_DASK_SCHEDULER"] = dask_cluster_address
    with serve(env, port, tmp_path / "serve-2.log"):
        outcome = finished(database_url, job_id)
    assert outcome["status"] == "succeeded" and outcome["attempts"] == 2, outcome
    assert rows(database_url) == (len(SOME), len(SOME))


def test_server_without_a_broker_runs_jobs_after_a_database_restart(postgres: Postgres, tmp_path: Path) -> None:
    """The in-process runner and the server's reads reconnect; /health says what is true; a job
    running across the restart ends (succeeded, or failed with the reason), never stays running."""
    from fastapi.testclient import TestClient

    from landmark import config as cfg
    from landmark.api import create_api
    from landmark.settings import Settings

    settings = cfg.resolve(Settings, {"database_url": postgres.url, "extractor": "rootsift", "job_lease": 3,
                                      "extract_batch": 2, "results": str(tmp_path / "results"),
                                      "allowed_sources": str(LANDMARKS)}, environ={})
    with TestClient(create_api(settings)) as http:
        first = http.post("/jobs", json={"kind": "index", "sources": list(map(str, SOME))}).json()
        assert finished(postgres.url, first["id"])["status"] == "succeeded"

        postgres.stop()
        postgres.start()
        after = http.get(f"/jobs/{first['id']}")  # the first request after the restart
        assert after.status_code == 200 and after.json()["status"] == "succeeded"
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["runner"] == {"ok": True, "detail": "idle"}

        across = http.post("/jobs", json={"kind": "index", "sources": list(map(str, PHOTOS))}).json()
        wait_for(lambda: job(postgres.url, across["id"])["done"] >= 2, 120, "the first batches")
        postgres.stop()
        down = http.get("/health")
        assert down.status_code == 503
        assert down.json()["database"]["ok"] is False and down.json()["runner"]["ok"] is False
        refused = http.post("/jobs", json={"kind": "index", "sources": [str(SOME[0])]})
        assert refused.status_code == 503 and "PostgreSQL" in refused.json()["detail"]
        time.sleep(1)
        postgres.start()
        outcome = finished(postgres.url, across["id"])
        assert outcome["status"] == "succeeded" or outcome["error"], outcome
        everything = len(set(SOME) | set(PHOTOS))
        if outcome["status"] == "succeeded":
            assert (outcome["done"], outcome["failed"], outcome["total"]) == (len(PHOTOS), 0, len(PHOTOS))
            assert rows(postgres.url) == (everything, everything)
        else:
            stored, unique = rows(postgres.url)
            assert stored == unique <= everything

        again = http.post("/jobs", json={"kind": "index", "sources": list(map(str, SOME))}).json()
        assert finished(postgres.url, again["id"])["status"] == "succeeded"
        wait_for(lambda: http.get("/health").status_code == 200, 10, "/health to say 200 again")
