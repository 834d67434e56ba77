"""Jobs: the jobs tables, leases and the sweeper, running a job in-process, and the submit / status /
wait / result commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark.indexing import IndexReport
from landmark.jobs import Holder, JobNotFoundError, Jobs, Work, index_batch, plan_index, run, submit, sweep
from landmark.session import Session
from landmark.settings import Settings
from landmark.store import Store

pytestmark = pytest.mark.integration

PHOTOS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg")) + sorted((LANDMARKS / "lightglue_building").glob("*.jpg"))
DATA = Path(__file__).parent / "data"


def session(database_url: str, scheduler: str, tmp_path: Path, **settings: Any) -> Session:
    values = {"database_url": database_url, "dask_scheduler": scheduler, "extractor": "rootsift",
              "results": str(tmp_path / "results"), **settings}
    return Session(cfg.resolve(Settings, values, environ={}), extractor_options={"max_features": "400"})


def sql(database_url: str, statement: str, params: tuple = ()) -> list[tuple]:
    with psycopg2.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute(statement, params or None)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def test_job_lifecycle_and_unknown_ids(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    with session(database_url, dask_cluster_address, tmp_path) as lm:
        jobs = Jobs(lm.store)
        queued = jobs.create("index", {"sources": [str(p) for p in PHOTOS] + [str(tmp_path / "gone.jpg")]},
                             lease_s=60)
        assert (queued.status, queued.done, queued.total, queued.started_at, queued.attempts) == (
            "queued", 0, 0, None, 0)
        finished = run(lm, queued.id)
        assert finished.status == "succeeded" and finished.finished_at >= finished.started_at
        assert (finished.done, finished.failed, finished.total) == (len(PHOTOS), 1, len(PHOTOS) + 1)
        assert finished.result["stored"] == len(PHOTOS)
        assert finished.result["failed"] == [{"uri": (tmp_path / "gone.jpg").as_uri(), "reason": "no such file"}]
        assert finished.lease_until is None and finished.last_progress_at >= finished.started_at
        assert finished.attempts == 1 and finished.worker.endswith(f":{os.getpid()}")

        query = run(lm, jobs.create("query", {"image": str(PHOTOS[0]), "top_k": 3, "add": False}, lease_s=60).id)
        assert query.status == "succeeded"
        files = {fmt: str(tmp_path / "results" / f"{query.id}.{fmt}") for fmt in ("txt", "json", "html")}
        assert query.result == files
        first = Path(query.result["txt"]).read_text().splitlines()[0].split("\t")
        assert first[2] == PHOTOS[1].as_uri() or first[2] == PHOTOS[2].as_uri()

        bad = run(lm, jobs.create("query", {"image": str(tmp_path / "nope.jpg")}, lease_s=60).id)
        assert bad.status == "failed" and bad.error == f"{(tmp_path / 'nope.jpg').as_uri()}: no such file"
        assert jobs.succeed(bad.id, {"txt": "x", "json": "y"}).status == "failed"  # the first outcome stands
        with pytest.raises(JobNotFoundError) as error:
            jobs.get("0" * 32)
        assert str(error.value) == f"no job '{'0' * 32}' in this store"


def cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    env["LANDMARK_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "landmark.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_submit_status_wait_result_on_the_embedded_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    indexed = cli("submit", "index", *map(str, PHOTOS), "--extractor", "rootsift", home=home)
    assert indexed.returncode == 0, indexed.stderr
    index_id = indexed.stdout.split()[0]
    queried = cli("submit", "query", str(PHOTOS[0]), "--top-k", "2", "--no-add", home=home)
    assert queried.returncode == 0, queried.stderr
    job_id = queried.stdout.split()[0]

    status = cli("status", job_id, "--json", home=home)
    document = json.loads(status.stdout)
    assert (document["id"], document["kind"], document["status"]) == (job_id, "query", "succeeded")
    assert document["attempts"] == 1 and document["last_progress_at"] >= document["started_at"]
    assert cli("wait", job_id, home=home).stdout.strip() == f"{job_id} succeeded"

    text = cli("result", job_id, home=home).stdout
    assert len(text.splitlines()) == 2 and text.splitlines()[0].startswith("1\t")
    saved = tmp_path / "ranking.json"
    assert cli("result", job_id, "--format", "json", "--out", str(saved), home=home).returncode == 0
    assert json.loads(saved.read_text())["query"] == PHOTOS[0].as_uri()

    no_ranking = cli("result", index_id, home=home)
    assert no_ranking.returncode == 2
    assert no_ranking.stderr.strip() == (
        f"landmark result: error: job {index_id} is an index job and has no ranking; its status has its counts"
    )
    unknown = cli("status", "nope", home=home)
    assert unknown.returncode == 2 and unknown.stderr.strip() == "landmark status: error: no job 'nope' in this store"


def test_batches_delivered_twice_are_counted_once(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    """What a queue worker's redelivery does: plan again, take a batch again, report it again."""
    broken_list = tmp_path / "list.txt"
    broken_list.write_bytes(b"\xff\xfe not text")
    sources = [str(p) for p in PHOTOS] + [str(broken_list)]
    with session(database_url, dask_cluster_address, tmp_path, extract_batch=2) as lm:
        jobs = Jobs(lm.store)
        job = jobs.create("index", {"sources": sources}, lease_s=60)
        with Holder(jobs, "task-1", 60) as first_task, Holder(jobs, "task-2", 60) as second_task:
            todo = plan_index(lm, first_task, job.id)
            assert todo == list(range(-(-len(PHOTOS) // 2)))
            assert plan_index(lm, first_task, job.id) == todo  # planned once
            assert jobs.get(job.id).total == len(PHOTOS) + 1

            first = index_batch(lm, first_task, job.id, todo[0])
            assert first is not None and (first.done, first.status) == (2, "running")
            assert index_batch(lm, first_task, job.id, todo[0]) is None  # finished already: nothing done
            jobs.finish(job.id, todo[0], IndexReport(stored=2))  # a late second report is ignored
            assert jobs.get(job.id).done == 2

            taken = jobs.claim(job.id, todo[1], holder="task-1", worker="host:1", lease_s=60)
            assert taken is not None and taken.attempts == 1
            # another task (the sweeper's second message) finds it held while the lease runs ...
            assert jobs.claim(job.id, todo[1], holder="task-2", worker="host:2", lease_s=60) is None
            # ... but the same task, redelivered after its process died, takes it back at once
            retaken = jobs.claim(job.id, todo[1], holder="task-1", worker="host:3", lease_s=60)
            assert retaken is not None and retaken.attempts == 2
            for batch in todo[1:]:
                last = index_batch(lm, first_task, job.id, batch)
        assert last is not None and last.status == "succeeded"
        assert (last.done, last.failed, last.total) == (len(PHOTOS), 1, len(PHOTOS) + 1)
        assert last.result["failed"] == [{"uri": str(broken_list), "reason": "a URI list must be UTF-8 text"}]
        assert last.lease_until is None
        assert lm.store.count() == len(PHOTOS)


def test_an_index_job_where_nothing_can_be_stored_fails(database_url: str, dask_cluster_address: str,
                                                          tmp_path: Path) -> None:
    (tmp_path / "note.jpg").write_text("not a picture")
    with session(database_url, dask_cluster_address, tmp_path) as lm:
        jobs = Jobs(lm.store)
        job = run(lm, jobs.create("index", {"sources": [str(tmp_path / "note.jpg")]}, lease_s=60).id)
        assert job.status == "failed"
        assert job.error.startswith(f"none of the 1 images could be indexed; first failure: {(tmp_path / 'note.jpg').as_uri()}: ")
        assert (job.done, job.failed, job.total) == (0, 1, 1)


def test_concurrent_indexers_count_what_they_wrote(database_url: str, dask_cluster_address: str,
                                                   tmp_path: Path) -> None:
    """Two indexers that looked the same images up before either stored them: the second writes
    nothing, and says so, rather than counting them as stored too."""
    from landmark.indexing import index_uris

    class LookedUpEarly:  # the store as the second indexer saw it: nothing stored yet
        def __init__(self, store: Store) -> None:
            self.store = store

        def content_hashes(self, uris: list[str]) -> dict[str, str]:
            return {}

        def __getattr__(self, name: str) -> Any:  # the rest as it is
            return getattr(self.store, name)

    uris = [p.as_uri() for p in PHOTOS[:3]]
    with session(database_url, dask_cluster_address, tmp_path) as lm:
        assert index_uris(lm.store, lm.extractor, uris).stored == 3
        late = index_uris(LookedUpEarly(lm.store), lm.extractor, uris)  # type: ignore[arg-type]
        assert (late.stored, late.unchanged, late.failed) == (0, 3, [])
        assert lm.store.count() == 3


# -- leases and the sweeper ----------------------------------------------------------------------


def test_a_heartbeat_keeps_a_lease_and_a_stopped_one_lets_it_run_out(database_url: str) -> None:
    with Store(database_url) as store:
        jobs = Jobs(store)
        job = jobs.create("query", {"image": "q.jpg"}, lease_s=60)
        with Holder(jobs, "alive", 1.5) as holder:
            assert jobs.start(job.id, holder="alive", worker=holder.worker, lease_s=1.5) is not None
            with holder.hold(Work(job.id, "query")):
                time.sleep(2.5)  # longer than the lease: only the heartbeat keeps it
                assert jobs.start(job.id, holder="other", worker="x", lease_s=1.5) is None
                renewed = jobs.get(job.id)
                assert renewed.lease_until > renewed.started_at and renewed.last_progress_at > renewed.started_at
        time.sleep(2)  # no heartbeat: the lease runs out and another takes it
        taken = jobs.start(job.id, holder="other", worker="x", lease_s=60)
        assert taken is not None and (taken.attempts, taken.worker) == (2, "x")


def test_the_sweeper_resends_lost_work_and_gives_up_past_the_attempts(database_url: str, tmp_path: Path) -> None:
    settings = cfg.resolve(Settings, {"database_url": database_url, "job_lease": 1, "job_retries": 0}, environ={})
    sent: list[Work] = []
    with Store(database_url) as store:
        jobs = Jobs(store)
        index = jobs.create("index", {"sources": ["a"]}, lease_s=1)
        jobs.start(index.id, holder="planner", worker="h:1", lease_s=1)
        jobs.plan(index.id, [["file:///a.jpg", "file:///b.jpg"], ["file:///c.jpg"]], [], sent_lease_s=1)
        assert jobs.get(index.id).lease_until is None  # the batches carry the job now
        jobs.claim(index.id, 0, holder="dead-task", worker="h:2", lease_s=1)
        query = jobs.create("query", {"image": "q.jpg"}, lease_s=1)
        jobs.start(query.id, holder="dead-task-2", worker="h:3", lease_s=1)
        assert sweep(jobs, sent.append, settings, resend_waiting=False).resend == []  # no lease has run out

        time.sleep(1.5)
        swept = sweep(jobs, sent.append, settings, resend_waiting=False)
        # held work goes on at once; the never-taken batch 1 too, as nothing of its kind moves
        assert sent == [Work(index.id, "index", 0), Work(index.id, "index", 1), Work(query.id, "query")]
        assert swept.given_up == [] and jobs.get(query.id).status == "queued"
        assert sql(database_url, "SELECT batch, holder FROM job_batches WHERE job_id = %s ORDER BY batch",
                   (index.id,)) == [(0, None), (1, None)]

        # taken again, and lost again: past its attempts (0 retries + 3), it is given up with the reason
        sent.clear()
        for n in (2, 3):
            jobs.claim(index.id, 0, holder=f"dead-task-{n}", worker=f"h:{n}", lease_s=0.1)
            jobs.start(query.id, holder=f"dead-task-{n}", worker=f"h:{n}", lease_s=0.1)
            time.sleep(0.3)
        swept = sweep(jobs, sent.append, settings, resend_waiting=False)
        reason = "given up after 3 attempts: its worker (h:3) stopped renewing its lease each time (it died, hung or " \
                 "lost the database)"
        assert swept.given_up == [(Work(index.id, "index", 0), reason), (Work(query.id, "query"), reason)]
        failed = jobs.get(query.id)
        assert (failed.status, failed.error, failed.lease_until) == ("failed", reason, None)
        assert sql(database_url, "SELECT failures FROM job_batches WHERE job_id = %s AND batch = 0", (index.id,)) == [
            ([["file:///a.jpg", reason], ["file:///b.jpg", reason]],)]
        assert jobs.get(index.id).status == "running"  # batch 1 is still to do


def test_waiting_work_is_sent_again_only_when_its_queue_stands_still(database_url: str) -> None:
    settings = cfg.resolve(Settings, {"database_url": database_url, "job_lease": 1}, environ={})
    sent: list[Work] = []
    with Store(database_url) as store:
        jobs = Jobs(store)
        waiting = jobs.create("query", {"image": "q.jpg"}, lease_s=0.1)
        busy = jobs.create("query", {"image": "r.jpg"}, lease_s=60)
        jobs.start(busy.id, holder="alive", worker="h:1", lease_s=60)  # a match worker at work
        time.sleep(0.3)
        assert sweep(jobs, sent.append, settings, resend_waiting=False).resend == []  # its turn will come
        assert sweep(jobs, sent.append, settings, resend_waiting=True).resend == [Work(waiting.id, "query")]
        assert jobs.get(waiting.id).lease_until > jobs.get(waiting.id).created_at  # sent again: a new lease
        sql(database_url, "UPDATE jobs SET last_progress_at = now() - interval '1 minute'")  # the worker went quiet
        sql(database_url, "UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = %s", (waiting.id,))
        assert sweep(jobs, sent.append, settings, resend_waiting=False).resend == [Work(waiting.id, "query")]


def test_a_job_handed_back_is_queued_for_the_next_sweep(database_url: str) -> None:
    with Store(database_url) as store:
        jobs = Jobs(store)
        job = jobs.create("index", {"sources": ["a"]}, lease_s=60)
        jobs.start(job.id, holder="server-1", worker="h:1", lease_s=60)
        jobs.plan(job.id, [["file:///a.jpg"], ["file:///b.jpg"]], [], sent_lease_s=None)
        jobs.claim(job.id, 1, holder="server-1", lease_s=60)
        assert jobs.hand_back(job.id, "someone-else").status == "running"  # not theirs to give
        assert jobs.hand_back(job.id, "server-1").status == "queued"
        assert sql(database_url, "SELECT holder, lease_until <= now() FROM jobs") == [(None, True)]
        assert sql(database_url, "SELECT holder, lease_until <= now() FROM job_batches WHERE batch = 1") == [
            (None, True)]
        sent: list[Work] = []
        settings = cfg.resolve(Settings, {"database_url": database_url}, environ={})
        assert sweep(jobs, sent.append, settings, resend_waiting=True).resend == [
            Work(job.id, "index", 1), Work(job.id, "index")]


def test_submit_hands_the_job_to_its_sender_and_fails_it_if_refused(database_url: str) -> None:
    from landmark.errors import LandmarkError

    with Store(database_url) as store:
        jobs = Jobs(store)
        sent: list[Work] = []
        job = submit(jobs, "query", {"image": "q.jpg"}, sent.append, lease_s=60)
        assert sent == [Work(job.id, "query")] and job.status == "queued"

        def refuse(work: Work) -> None:
            raise LandmarkError("cannot reach the broker at redis://nowhere")

        with pytest.raises(LandmarkError):
            submit(jobs, "index", {"sources": ["a"]}, refuse, lease_s=60)
        [(status, error)] = sql(store.url, "SELECT status, error FROM jobs WHERE kind = 'index'")
        assert (status, error) == ("failed", "cannot reach the broker at redis://nowhere")


def test_a_store_of_the_schema_before_leases_upgrades_with_its_jobs(database_url: str) -> None:
    """A store made before the jobs package owned its tables (store schema version 6, jobs tables
    made by the store's migrations 4 and 5), with a job left running, upgrades in place."""
    sql(database_url, (DATA / "store-schema-v6.sql").read_text())
    sql(database_url, "INSERT INTO jobs (id, kind, status, parameters, total) VALUES "
        "('a' || repeat('0', 31), 'index', 'running', '{\"sources\": [\"x\"]}', 2), "
        "('b' || repeat('0', 31), 'query', 'queued', '{\"image\": \"q.jpg\"}', 0)")
    sql(database_url, "INSERT INTO job_batches (job_id, batch, uris, attempts) VALUES "
        "('a' || repeat('0', 31), 0, '[\"file:///a.jpg\"]', 1), ('a' || repeat('0', 31), 1, '[\"file:///b.jpg\"]', 0)")
    with Store(database_url) as store:
        jobs = Jobs(store)
        assert jobs.get("a" + "0" * 31).attempts == 0
        settings = cfg.resolve(Settings, {"database_url": database_url}, environ={})
        sent: list[Work] = []
        sweep(jobs, sent.append, settings, resend_waiting=True)  # left unfinished: taken up at once
        assert sorted(sent, key=str) == [Work("a" + "0" * 31, "index", 0), Work("a" + "0" * 31, "index", 1),
                                         Work("b" + "0" * 31, "query")]
    assert sql(database_url, "SELECT version FROM landmark_schema") == [(6,)]
    assert sql(database_url, "SELECT version FROM landmark_jobs_schema") == [(3,)]
    Store(database_url).close()  # and again: nothing to do
    assert sql(database_url, "SELECT count(*) FROM job_batches") == [(2,)]
