"""Jobs: the jobs table, running a job in-process, and the submit / status / wait / result commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark.indexing import IndexReport
from landmark.jobs import JobNotFoundError, Jobs, index_batch, plan_index, run
from landmark.session import Session
from landmark.settings import Settings

pytestmark = pytest.mark.integration

PHOTOS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg")) + sorted((LANDMARKS / "lightglue_building").glob("*.jpg"))


def session(database_url: str, scheduler: str) -> Session:
    settings = cfg.resolve(
        Settings, {"database_url": database_url, "dask_scheduler": scheduler, "extractor": "rootsift"}, environ={}
    )
    return Session(settings, extractor_options={"max_features": "400"})


def test_job_lifecycle_and_unknown_ids(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    with session(database_url, dask_cluster_address) as lm:
        jobs = Jobs(lm.store)
        queued = jobs.create("index", {"sources": [str(p) for p in PHOTOS] + [str(tmp_path / "gone.jpg")]})
        assert (queued.status, queued.done, queued.total, queued.started_at) == ("queued", 0, 0, None)
        finished = run(lm, jobs, queued.id, str(tmp_path / "results"))
        assert finished.status == "succeeded" and finished.finished_at >= finished.started_at
        assert (finished.done, finished.failed, finished.total) == (len(PHOTOS), 1, len(PHOTOS) + 1)
        assert finished.result["stored"] == len(PHOTOS)
        assert finished.result["failed"] == [{"uri": (tmp_path / "gone.jpg").as_uri(), "reason": "no such file"}]

        query = run(lm, jobs, jobs.create("query", {"image": str(PHOTOS[0]), "top_k": 3, "add": False}).id,
                    str(tmp_path / "results"))
        assert query.status == "succeeded"
        assert query.result == {"txt": str(tmp_path / "results" / f"{query.id}.txt"),
                                "json": str(tmp_path / "results" / f"{query.id}.json")}
        first = Path(query.result["txt"]).read_text().splitlines()[0].split("\t")
        assert first[2] == PHOTOS[1].as_uri() or first[2] == PHOTOS[2].as_uri()

        bad = run(lm, jobs, jobs.create("query", {"image": str(tmp_path / "nope.jpg")}).id, str(tmp_path))
        assert bad.status == "failed" and bad.error == f"{(tmp_path / 'nope.jpg').as_uri()}: no such file"
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
    with session(database_url, dask_cluster_address) as lm:
        jobs = Jobs(lm.store)
        job = jobs.create("index", {"sources": sources})
        todo = plan_index(lm, jobs, job.id, batch_size=2)
        assert todo == list(range(-(-len(PHOTOS) // 2)))
        assert plan_index(lm, jobs, job.id, batch_size=2) == todo  # planned once
        assert jobs.get(job.id).total == len(PHOTOS) + 1

        first = index_batch(lm, jobs, job.id, todo[0])
        assert first is not None and (first.done, first.status) == (2, "running")
        assert index_batch(lm, jobs, job.id, todo[0]) is None  # finished already: nothing done
        jobs.finish(job.id, todo[0], IndexReport(stored=2))  # a late second report is ignored
        assert jobs.get(job.id).done == 2

        again = jobs.claim(job.id, todo[1], "host:1")
        assert again is not None and again.attempts == 1
        retaken = jobs.claim(job.id, todo[1], "host:2")  # the first taker died; the batch went back
        assert retaken is not None and retaken.attempts == 2
        for batch in todo[1:]:
            last = index_batch(lm, jobs, job.id, batch)
        assert last is not None and last.status == "succeeded"
        assert (last.done, last.failed, last.total) == (len(PHOTOS), 1, len(PHOTOS) + 1)
        assert last.result["failed"] == [{"uri": str(broken_list), "reason": "a URI list must be UTF-8 text"}]
        assert lm.store.count() == len(PHOTOS)


def test_an_index_job_where_nothing_can_be_stored_fails(database_url: str, dask_cluster_address: str,
                                                          tmp_path: Path) -> None:
    (tmp_path / "note.jpg").write_text("not a picture")
    with session(database_url, dask_cluster_address) as lm:
        jobs = Jobs(lm.store)
        job = run(lm, jobs, jobs.create("index", {"sources": [str(tmp_path / "note.jpg")]}).id, str(tmp_path))
        assert job.status == "failed"
        assert job.error.startswith(f"none of the 1 images could be indexed; first failure: {(tmp_path / 'note.jpg').as_uri()}: ")
        assert (job.done, job.failed, job.total) == (0, 1, 1)


def test_concurrent_indexers_count_what_they_wrote(database_url: str, dask_cluster_address: str) -> None:
    """Two indexers that looked the same images up before either stored them: the second writes
    nothing, and says so, rather than counting them as stored too."""
    from typing import Any

    from landmark.indexing import index_uris
    from landmark.store import Store

    class LookedUpEarly:  # the store as the second indexer saw it: nothing stored yet
        def __init__(self, store: Store) -> None:
            self.store = store

        def content_hashes(self, uris: list[str]) -> dict[str, str]:
            return {}

        def upsert(self, rows: Any) -> int:
            return self.store.upsert(rows)

    uris = [p.as_uri() for p in PHOTOS[:3]]
    with session(database_url, dask_cluster_address) as lm:
        assert index_uris(lm.store, lm.extractor, uris).stored == 3
        late = index_uris(LookedUpEarly(lm.store), lm.extractor, uris)  # type: ignore[arg-type]
        assert (late.stored, late.unchanged, late.failed) == (0, 3, [])
        assert lm.store.count() == 3
