"""Jobs: a unit of work (index some sources, or query one image) with a status people can follow.

The ``jobs`` table lives in the same PostgreSQL as ``landmarks``:

=================  ============  ===============================================================
column             type          meaning
=================  ============  ===============================================================
id                 text          32 hex digits (a UUID)
kind               text          ``index`` or ``query``
status             text          ``queued`` -> ``running`` -> ``succeeded`` or ``failed``
parameters         jsonb         index: ``{"sources": [...]}``;
                                 query: ``{"image", "top_k", "add", "matching": {overrides}}``
done, failed,      integer       progress. index: images stored or unchanged, images that could
total                            not be stored, images in all; query: partitions matched
error              text          why a failed job failed
result             jsonb         index: ``{"stored", "unchanged", "failed": [{uri, reason}]}``;
                                 query: ``{"txt": uri, "json": uri}``
created_at, ...    timestamptz   created, started, finished
=================  ============  ===============================================================

An index job runs in two steps, each a function here that a queue worker's task calls as it is:
:func:`plan_index` expands the sources into image URIs and records them as numbered batches in
``job_batches``; :func:`index_batch` extracts and stores one batch. A batch is finished once:
a batch delivered twice (a worker died before acknowledging it) is stored again, harmlessly
(rows are upserted by URI), and counted once. The job is settled when its last batch finishes.

Without a broker, :func:`run` carries a job out in this process through the same functions.
Query results are written under the results location as ``<job id>.txt`` and ``.json``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import config as cfg
from .errors import ConfigError, LandmarkError
from .indexing import IndexReport, chunks, gather, index_uris
from .matching import MatchConfig
from .policy import from_parameters

if TYPE_CHECKING:
    from .session import Session
    from .settings import Settings
    from .store import Store

KINDS = ("index", "query")
FINISHED = ("succeeded", "failed")


class JobNotFoundError(LandmarkError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} in this store")
        self.job_id = job_id


class NoResultError(LandmarkError):
    """The job has no ranking to fetch: an index job, or a query job that has not succeeded."""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str
    status: str
    parameters: dict[str, Any]
    done: int
    failed: int
    total: int
    error: str | None
    result: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        document = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("created_at", "started_at", "finished_at"):
            document[key] = document[key].isoformat() if document[key] else None
        return document


@dataclass(frozen=True)
class Claim:
    """A batch a worker has taken: its URIs and how many times it has been taken (this one included)."""

    uris: list[str]
    attempts: int


_COLUMNS = "id, kind, status, parameters, done, failed, total, error, result, created_at, started_at, finished_at"


def index_parameters(sources: Sequence[str]) -> dict[str, Any]:
    if isinstance(sources, str) or not sources or not all(isinstance(s, str) and s.strip() for s in sources):
        raise ConfigError("sources: give at least one source (a path or URI), as a list of strings")
    return {"sources": list(sources)}


def query_parameters(
    image: str, *, top_k: int, add: bool, matching: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A query job's parameters, checked now so that a bad request fails before it is queued."""
    if not isinstance(image, str) or not image.strip():
        raise ConfigError("image: give the query image's path or URI")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"top_k: must be a whole number of at least 1, got {top_k!r}")
    overrides = {k: v for k, v in (matching or {}).items() if v is not None}
    cfg.resolve(MatchConfig, overrides, environ={})  # unknown options and bad values fail here
    return {"image": image, "top_k": top_k, "add": bool(add), "matching": overrides}


class Jobs:
    """The ``jobs`` and ``job_batches`` tables of one store."""

    def __init__(self, store: Store) -> None:
        self._conn = store.connection

    def create(self, kind: str, parameters: dict[str, Any]) -> Job:
        if kind not in KINDS:
            raise ConfigError(f"kind: unknown job kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return self._one(
            f"INSERT INTO jobs (id, kind, status, parameters) VALUES (%s, %s, 'queued', %s) RETURNING {_COLUMNS}",
            (uuid.uuid4().hex, kind, json.dumps(parameters)),
        )

    def get(self, job_id: str) -> Job:
        return self._one(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,), job_id)

    def start(self, job_id: str) -> Job:
        """Mark the job running (again, after a redelivery); a finished job is left as it is."""
        return self._one(
            f"UPDATE jobs SET status = CASE WHEN status IN ('succeeded', 'failed') THEN status ELSE 'running' END, "
            f"started_at = COALESCE(started_at, now()) WHERE id = %s RETURNING {_COLUMNS}",
            (job_id,), job_id,
        )

    def progress(self, job_id: str, *, done: int, failed: int, total: int) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("UPDATE jobs SET done = %s, failed = %s, total = %s WHERE id = %s",
                        (done, failed, total, job_id))

    def succeed(self, job_id: str, result: dict[str, Any]) -> Job:
        return self._one(
            f"UPDATE jobs SET status = 'succeeded', result = %s, error = NULL, finished_at = now() WHERE id = %s "
            f"RETURNING {_COLUMNS}", (json.dumps(result), job_id), job_id,
        )

    def fail(self, job_id: str, error: str) -> Job:
        return self._one(
            f"UPDATE jobs SET status = 'failed', error = %s, finished_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (error, job_id), job_id,
        )

    # -- an index job's batches -------------------------------------------------------

    def plan(self, job_id: str, batches: Sequence[Sequence[str]], unusable: Sequence[tuple[str, str]]) -> list[int]:
        """Record ``batches`` of image URIs (numbered from 0) and the sources that could not be
        expanded; returns the numbers of the batches still to do. Planning a planned job again
        changes nothing and returns its unfinished batches."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            if cur.fetchone() is None:
                raise JobNotFoundError(job_id)
            cur.execute("SELECT count(*) FROM job_batches WHERE job_id = %s", (job_id,))
            if cur.fetchone()[0] == 0:
                rows = [(job_id, n, json.dumps(list(uris))) for n, uris in enumerate(batches)]
                cur.executemany("INSERT INTO job_batches (job_id, batch, uris) VALUES (%s, %s, %s)", rows)
                if unusable:  # a batch finished at once, holding the failures
                    cur.execute(
                        "INSERT INTO job_batches (job_id, batch, uris, failures, finished_at) "
                        "VALUES (%s, %s, %s, %s, now())",
                        (job_id, len(rows), json.dumps([s for s, _ in unusable]),
                         json.dumps([list(f) for f in unusable])),
                    )
                total = sum(len(uris) for uris in batches) + len(unusable)
                cur.execute("UPDATE jobs SET total = %s WHERE id = %s", (total, job_id))
            cur.execute(
                "SELECT batch FROM job_batches WHERE job_id = %s AND finished_at IS NULL ORDER BY batch", (job_id,)
            )
            todo = [row[0] for row in cur.fetchall()]
        if not todo:
            self._settle(job_id)
        return todo

    def claim(self, job_id: str, batch: int, worker: str = "") -> Claim | None:
        """Take batch ``batch`` of job ``job_id``: counts the attempt and records who took it.
        ``None`` when the batch is already finished (a message delivered again)."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "UPDATE job_batches SET attempts = attempts + 1, worker = %s "
                "WHERE job_id = %s AND batch = %s AND finished_at IS NULL RETURNING uris, attempts",
                (worker or None, job_id, batch),
            )
            row = cur.fetchone()
        return Claim(row[0], row[1]) if row else None

    def finish(self, job_id: str, batch: int, report: IndexReport) -> Job:
        """Record what happened to a batch (once: a second report of it is ignored) and settle
        the job if it was the last."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "UPDATE job_batches SET stored = %s, unchanged = %s, failures = %s, finished_at = now() "
                "WHERE job_id = %s AND batch = %s AND finished_at IS NULL",
                (report.stored, report.unchanged, json.dumps([list(f) for f in report.failed]), job_id, batch),
            )
        return self._settle(job_id)

    def _settle(self, job_id: str) -> Job:
        """Bring the job's counts up to date from its batches; finish it when none is left.

        Runs under a lock on the job's row, so that two workers finishing its last two batches
        at once settle it once, each seeing the other's batch."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT status FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = cur.fetchone()
            if row is None:
                raise JobNotFoundError(job_id)
            cur.execute(
                "SELECT count(*) FILTER (WHERE finished_at IS NULL), COALESCE(sum(stored), 0), "
                "COALESCE(sum(unchanged), 0), COALESCE(sum(jsonb_array_length(failures)), 0) "
                "FROM job_batches WHERE job_id = %s",
                (job_id,),
            )
            left, stored, unchanged, failed = cur.fetchone()
            cur.execute("UPDATE jobs SET done = %s, failed = %s WHERE id = %s", (stored + unchanged, failed, job_id))
            if left or row[0] in FINISHED:
                cur.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
                return Job(*cur.fetchone())
            cur.execute(
                "SELECT f->>0, f->>1 FROM job_batches, jsonb_array_elements(failures) f "
                "WHERE job_id = %s ORDER BY batch", (job_id,),
            )
            failures = [{"uri": uri, "reason": reason} for uri, reason in cur.fetchall()]
            result = {"stored": int(stored), "unchanged": int(unchanged), "failed": failures}
            if failures and stored + unchanged == 0:
                first = failures[0]
                error = (f"none of the {len(failures)} images could be indexed; "
                         f"first failure: {first['uri']}: {first['reason']}")
                cur.execute(
                    f"UPDATE jobs SET status = 'failed', error = %s, result = %s, finished_at = now() "
                    f"WHERE id = %s RETURNING {_COLUMNS}", (error, json.dumps(result), job_id),
                )
            else:
                cur.execute(
                    f"UPDATE jobs SET status = 'succeeded', result = %s, finished_at = now() "
                    f"WHERE id = %s RETURNING {_COLUMNS}", (json.dumps(result), job_id),
                )
            return Job(*cur.fetchone())

    def _one(self, sql: str, params: tuple, job_id: str | None = None) -> Job:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            raise JobNotFoundError(job_id or "?")
        return Job(*row)


# -- the steps of a job, shared by the in-process runner and the queue workers ----------------


def plan_index(session: Session, jobs: Jobs, job_id: str, *, batch_size: int, raise_transient: bool = False) -> list[int]:
    """Expand an index job's sources into batches of ``batch_size`` URIs; the batches to do."""
    job = jobs.start(job_id)
    if job.finished:
        return []
    policy = from_parameters(job.parameters)  # a job from the HTTP API; None from the CLI
    uris, unusable = gather(job.parameters["sources"], raise_transient=raise_transient, policy=policy)
    return jobs.plan(job_id, list(chunks(uris, batch_size)), unusable)


def index_batch(
    session: Session, jobs: Jobs, job_id: str, batch: int, *, worker: str = "", raise_transient: bool = False,
    max_attempts: int = 0,
) -> Job | None:
    """Extract and store one batch of an index job; ``None`` if it was finished already.

    With ``max_attempts``, a batch taken more often than that (its worker kept dying on it) is
    given up: its images are recorded as failed rather than tried again.
    """
    claim = jobs.claim(job_id, batch, worker)
    if claim is None:
        return None
    if max_attempts and claim.attempts > max_attempts:
        reason = f"given up after {max_attempts} attempts at its batch (the worker process died each time)"
        return jobs.finish(job_id, batch, IndexReport(failed=[(uri, reason) for uri in claim.uris]))
    report = index_uris(session.store, session.extractor, claim.uris, batch_size=len(claim.uris),
                        raise_transient=raise_transient, max_pixels=session.settings.max_image_pixels)
    return jobs.finish(job_id, batch, report)


def fail_batch(jobs: Jobs, job_id: str, batch: int, reason: str) -> Job:
    """Give a batch up: each of its images is recorded as failed with ``reason``."""
    claim = jobs.claim(job_id, batch)
    if claim is None:
        return jobs.get(job_id)
    return jobs.finish(job_id, batch, IndexReport(failed=[(uri, reason) for uri in claim.uris]))


def run_query(session: Session, jobs: Jobs, job_id: str, results: str) -> Job:
    """Carry out a query job; its files go to ``<results>/<job id>.txt`` and ``.json``."""
    from .session import DEFAULT_TOP_K

    job = jobs.start(job_id)
    if job.finished:
        return job
    parameters = job.parameters
    counts = {"done": 0, "total": 0}

    def on_total(total: int) -> None:
        counts["total"] = total
        jobs.progress(job_id, done=0, failed=0, total=total)

    def progress(n: int) -> None:
        counts["done"] += n
        jobs.progress(job_id, done=counts["done"], failed=0, total=counts["total"])

    files = session.query(
        parameters["image"], top_k=int(parameters.get("top_k", DEFAULT_TOP_K)), add=bool(parameters.get("add", True)),
        match_config=session.matching(parameters.get("matching")), out=result_stem(results, job_id),
        progress=progress, on_total=on_total, policy=from_parameters(parameters),
    ).files
    return jobs.succeed(job_id, files)


def run(session: Session, jobs: Jobs, job_id: str, results: str, *, batch_size: int = 64) -> Job:
    """Carry out job ``job_id`` in this process; a failure is recorded with its reason, not raised."""
    try:
        job = jobs.get(job_id)
        if job.kind == "query":
            return run_query(session, jobs, job_id, results)
        for batch in plan_index(session, jobs, job_id, batch_size=batch_size):
            index_batch(session, jobs, job_id, batch)
        return jobs.get(job_id)
    except LandmarkError as error:
        return jobs.fail(job_id, str(error))
    except Exception as error:  # the job, not the caller, owns this failure; keep its reason
        return jobs.fail(job_id, f"{type(error).__name__}: {error}")


def submit(
    jobs: Jobs, settings: Settings, kind: str, parameters: dict[str, Any], *,
    run_here: Callable[[str], Any], on_created: Callable[[Job], None] | None = None,
) -> Job:
    """Create a job and send it to the queue (``settings.broker_url``); with no broker, hand its id
    to ``run_here`` (:func:`run` now, or a server's own runner). Returns the job as it stands then.

    A job the broker cannot take is marked failed, and the error raised. ``on_created`` hears of
    the job as soon as it exists (to show its id before it runs).
    """
    job = jobs.create(kind, parameters)
    if on_created is not None:
        on_created(job)
    if not settings.broker_url:
        run_here(job.id)
        return jobs.get(job.id)
    from workers.app import enqueue

    try:
        enqueue(settings, job)
    except LandmarkError as error:
        jobs.fail(job.id, str(error))
        raise
    return job


RESULT_TYPES = {"txt": "text/plain; charset=utf-8", "json": "application/json"}


def read_result(job: Job, fmt: str) -> bytes:
    """The bytes of a query job's ``txt`` or ``json`` results file."""
    from pathlib import Path

    from .sources import read_bytes

    if fmt not in RESULT_TYPES:
        raise ConfigError(f"format: {fmt!r} is not one of {', '.join(RESULT_TYPES)}")
    if job.kind != "query":
        raise NoResultError(f"job {job.id} is an {job.kind} job and has no ranking; its status has its counts")
    if job.status != "succeeded" or not job.result:
        reason = f": {job.error}" if job.error else ""
        raise NoResultError(f"job {job.id} is {job.status}{reason}; it has no result yet")
    location = job.result[fmt]
    return read_bytes(location if "://" in location else Path(location).as_uri())


def result_stem(results: str, job_id: str) -> str:
    """Where a query job's files go: ``<results>/<job id>`` (a directory or an ``s3://`` prefix)."""
    return f"{results.rstrip('/')}/{job_id}"
