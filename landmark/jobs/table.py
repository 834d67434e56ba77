"""The ``jobs`` and ``job_batches`` tables: their migrations and all of their SQL.

``jobs``, one row a job:

=================  ============  ===============================================================
column             type          meaning
=================  ============  ===============================================================
id                 text          32 hex digits (a UUID)
kind               text          ``index`` or ``query``
status             text          ``queued`` -> ``running`` -> ``succeeded`` or ``failed``
parameters         jsonb         index: ``{"sources": [...]}``;
                                 query: ``{"image", "top_k", "add", "evidence",
                                 "matching": {overrides}}``
done, failed,      integer       progress. index: images stored or unchanged, images that could
total                            not be stored, images in all; query: partitions matched
error              text          why a failed job failed
result             jsonb         index: ``{"stored", "unchanged", "failed": [{uri, reason}]}``;
                                 query: ``{"txt": uri, "json": uri, "html": uri}``
created_at, ...    timestamptz   created, started, finished
attempts           integer       times its first step was taken
worker             text          ``host:pid`` of the process that last took it
holder             text          who holds its lease now (a queue task's id, an in-process run)
lease_until        timestamptz   when its lease runs out (see below)
last_progress_at   timestamptz   when its work was last heard of
=================  ============  ===============================================================

``job_batches``, one row per batch of an index job's images: ``uris``, ``attempts``,
``worker``, ``holder``, ``lease_until``, ``heartbeat_at``, and once finished its counts
(``stored``, ``unchanged``, ``failures``) and ``finished_at``.

Leases. A unit of work (a job's first step, or a batch) that is not finished always has a
lease: from when it is sent, the time by which a worker should have taken it; from when a
worker takes it, the time by which that worker must renew it (it does, every third of the
lease, while it works). A unit whose lease ran out is the sweeper's (:meth:`Jobs.sweep`): one
that was taken goes to another worker, or is given up past its attempts; one never taken is
sent again. An index job's own lease ends once its batches are recorded: they carry theirs.

Migrations are numbered apart from the store's (``landmark_jobs_schema``). Migrations 1 and 2
were the store's 4 and 5; on a store that already has them they change nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..indexing import IndexReport
from ..schema import migrate_once
from .job import FINISHED, KINDS, Claim, Job, JobNotFoundError, Work

if TYPE_CHECKING:
    from ..store import Store

MIGRATIONS: tuple[str, ...] = (
    # 1: jobs
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id          text PRIMARY KEY,
        kind        text NOT NULL CHECK (kind IN ('index', 'query')),
        status      text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
        parameters  jsonb NOT NULL,
        done        integer NOT NULL DEFAULT 0,
        failed      integer NOT NULL DEFAULT 0,
        total       integer NOT NULL DEFAULT 0,
        error       text,
        result      jsonb,
        created_at  timestamptz NOT NULL DEFAULT now(),
        started_at  timestamptz,
        finished_at timestamptz
    );
    """,
    # 2: an index job's batches: the unit a queue worker takes, so that a batch delivered twice
    # is counted once and a job knows when its last batch is in
    """
    CREATE TABLE IF NOT EXISTS job_batches (
        job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        batch       integer NOT NULL,
        uris        jsonb NOT NULL,
        attempts    integer NOT NULL DEFAULT 0,
        worker      text,
        stored      integer NOT NULL DEFAULT 0,
        unchanged   integer NOT NULL DEFAULT 0,
        failures    jsonb NOT NULL DEFAULT '[]',
        finished_at timestamptz,
        PRIMARY KEY (job_id, batch)
    );
    """,
    # 3: leases, so that work whose worker died (or could not say so) is handed on. Work left
    # unfinished by a landmark without leases gets one that has run out: the sweeper takes it up.
    """
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
                     ADD COLUMN IF NOT EXISTS worker text,
                     ADD COLUMN IF NOT EXISTS holder text,
                     ADD COLUMN IF NOT EXISTS lease_until timestamptz,
                     ADD COLUMN IF NOT EXISTS last_progress_at timestamptz;
    ALTER TABLE job_batches ADD COLUMN IF NOT EXISTS holder text,
                            ADD COLUMN IF NOT EXISTS lease_until timestamptz,
                            ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;
    UPDATE jobs SET lease_until = now() WHERE status IN ('queued', 'running')
        AND NOT EXISTS (SELECT 1 FROM job_batches b WHERE b.job_id = jobs.id);
    UPDATE job_batches SET lease_until = now() WHERE finished_at IS NULL;
    CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (lease_until) WHERE status IN ('queued', 'running');
    CREATE INDEX IF NOT EXISTS jobs_progress ON jobs (kind, last_progress_at);
    CREATE INDEX IF NOT EXISTS job_batches_lease ON job_batches (lease_until) WHERE finished_at IS NULL;
    """,
)

_COLUMNS = (
    "id, kind, status, parameters, done, failed, total, error, result, created_at, started_at, finished_at, "
    "attempts, worker, lease_until, last_progress_at"
)
_LEASE = "now() + %s * interval '1 second'"
_ACTIVE = "status IN ('queued', 'running')"
_RELEASED = "holder = NULL, lease_until = NULL"

@dataclass
class Swept:
    """What one sweep did: units sent again, and jobs or batches given up (with the reason)."""

    resend: list[Work] = field(default_factory=list)
    given_up: list[tuple[Work, str]] = field(default_factory=list)


class Jobs:
    """The ``jobs`` and ``job_batches`` tables of one store, through the store's transactions."""

    def __init__(self, store: Store) -> None:
        self._store = store
        migrate_once(store, "landmark_jobs_schema", MIGRATIONS)

    def beside(self) -> Jobs:
        """The same tables on a connection of its own (for a heartbeat thread); close it after."""
        return Jobs(self._store.another())

    def close(self) -> None:
        self._store.close()

    # -- a job -----------------------------------------------------------------------

    def create(self, kind: str, parameters: dict[str, Any], *, lease_s: float) -> Job:
        """A new queued job, to be taken within ``lease_s`` (or the sweeper sends it again)."""
        if kind not in KINDS:
            raise ConfigError(f"kind: unknown job kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return self._one(
            f"INSERT INTO jobs (id, kind, status, parameters, lease_until) VALUES (%s, %s, 'queued', %s, {_LEASE}) "
            f"RETURNING {_COLUMNS}", (uuid.uuid4().hex, kind, json.dumps(parameters), lease_s),
        )

    def get(self, job_id: str) -> Job:
        row = self._store.run(lambda cur: _fetch(cur, f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,)),
                              retry=True)
        if row is None:
            raise JobNotFoundError(job_id)
        return Job(*row)

    def start(self, job_id: str, *, holder: str, worker: str, lease_s: float) -> Job | None:
        """Take a job's first step: mark it running, count the attempt, hold it for ``lease_s``.

        A finished job is returned as it is (nothing to do); ``None`` when another holder's
        lease on it is still running (a message delivered twice: this one is dropped)."""
        row = self._store.run(lambda cur: _fetch(
            cur, f"UPDATE jobs SET status = 'running', attempts = attempts + 1, holder = %s, worker = %s, "
            f"lease_until = {_LEASE}, started_at = COALESCE(started_at, now()), last_progress_at = now() "
            f"WHERE id = %s AND {_ACTIVE} AND (holder IS NULL OR holder = %s OR lease_until < now()) "
            f"RETURNING {_COLUMNS}", (holder, worker or None, lease_s, job_id, holder)))
        if row is not None:
            return Job(*row)
        job = self.get(job_id)
        return job if job.finished else None

    def renew(self, work: Work, *, holder: str, lease_s: float) -> bool:
        """Extend ``holder``'s lease on ``work``; ``False`` if it no longer holds it."""

        def renew(cur: Any) -> bool:
            if work.batch is None:
                cur.execute(f"UPDATE jobs SET lease_until = {_LEASE}, last_progress_at = now() "
                            "WHERE id = %s AND holder = %s AND status = 'running'", (lease_s, work.job_id, holder))
                return cur.rowcount == 1
            cur.execute(f"UPDATE job_batches SET lease_until = {_LEASE}, heartbeat_at = now() "
                        "WHERE job_id = %s AND batch = %s AND holder = %s AND finished_at IS NULL",
                        (lease_s, work.job_id, work.batch, holder))
            held = cur.rowcount == 1
            cur.execute("UPDATE jobs SET last_progress_at = now() WHERE id = %s", (work.job_id,))
            return held

        return self._store.run(renew)

    def progress(self, job_id: str, *, done: int, failed: int, total: int) -> None:
        with self._store.transaction() as cur:
            cur.execute("UPDATE jobs SET done = %s, failed = %s, total = %s, last_progress_at = now() WHERE id = %s",
                        (done, failed, total, job_id))

    def succeed(self, job_id: str, result: dict[str, Any]) -> Job:
        """Record success; a job that already has an outcome keeps it (the first one stands)."""
        return self._outcome(job_id, "status = 'succeeded', result = %s, error = NULL", (json.dumps(result),))

    def fail(self, job_id: str, error: str) -> Job:
        """Record failure with ``error``; a job that already has an outcome keeps it."""
        return self._outcome(job_id, "status = 'failed', error = %s", (error,))

    def hand_back(self, job_id: str, holder: str) -> Job:
        """Give up ``holder``'s hold on a job and its batches (a server stopping): the job is queued
        again with a lease that has run out, so the next sweep sends it on at once."""

        def hand_back(cur: Any) -> None:
            cur.execute(f"UPDATE jobs SET status = 'queued', holder = NULL, lease_until = now() "
                        f"WHERE id = %s AND holder = %s AND {_ACTIVE}", (job_id, holder))
            cur.execute("UPDATE job_batches SET holder = NULL, lease_until = now() "
                        "WHERE job_id = %s AND holder = %s AND finished_at IS NULL", (job_id, holder))

        self._store.run(hand_back)
        return self.get(job_id)

    # -- an index job's batches -------------------------------------------------------

    def plan(
        self, job_id: str, batches: Sequence[Sequence[str]], unusable: Sequence[tuple[str, str]], *,
        sent_lease_s: float | None,
    ) -> list[int]:
        """Record ``batches`` of image URIs (numbered from 0) and the sources that could not be
        expanded; returns the numbers of the batches still to do. Planning a planned job again
        changes nothing and returns its unfinished batches.

        ``sent_lease_s``: the batches are about to be sent to a queue. Each gets that long to be
        taken, and the job's own lease ends (the batches carry the job from here). ``None``: the
        caller works through them itself, under the job's lease."""

        def plan(cur: Any) -> list[int]:
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
                cur.execute("UPDATE jobs SET total = %s, last_progress_at = now() WHERE id = %s", (total, job_id))
            if sent_lease_s is not None:
                cur.execute(f"UPDATE job_batches SET lease_until = {_LEASE} "
                            "WHERE job_id = %s AND finished_at IS NULL AND holder IS NULL", (sent_lease_s, job_id))
                cur.execute(f"UPDATE jobs SET {_RELEASED} WHERE id = %s", (job_id,))
            cur.execute(
                "SELECT batch FROM job_batches WHERE job_id = %s AND finished_at IS NULL ORDER BY batch", (job_id,)
            )
            todo = [row[0] for row in cur.fetchall()]
            if not todo:
                _settle(cur, job_id)
            return todo

        return self._store.run(plan)

    def adopt(self, job_id: str, *, holder: str, lease_s: float) -> None:
        """Take over the unfinished batches of a job that ``holder`` has just taken whole (an
        in-process run): whoever held them held the job before, and has lost it."""
        with self._store.transaction() as cur:
            cur.execute(f"UPDATE job_batches SET holder = %s, lease_until = {_LEASE} "
                        "WHERE job_id = %s AND finished_at IS NULL AND holder IS NOT NULL", (holder, lease_s, job_id))

    def claim(self, job_id: str, batch: int, *, holder: str, worker: str = "", lease_s: float) -> Claim | None:
        """Take batch ``batch`` of job ``job_id``: count the attempt, hold it for ``lease_s``.
        ``None`` when the batch is finished already, or another holder's lease on it runs."""
        row = self._store.run(lambda cur: _fetch(
            cur, f"UPDATE job_batches SET attempts = attempts + 1, holder = %s, worker = %s, "
            f"lease_until = {_LEASE}, heartbeat_at = now() "
            "WHERE job_id = %s AND batch = %s AND finished_at IS NULL "
            "AND (holder IS NULL OR holder = %s OR lease_until < now()) RETURNING uris, attempts",
            (holder, worker or None, lease_s, job_id, batch, holder)))
        return Claim(row[0], row[1]) if row else None

    def finish(self, job_id: str, batch: int, report: IndexReport) -> Job:
        """Record what happened to a batch (once: a second report of it is ignored) and settle
        the job if it was the last."""

        def finish(cur: Any) -> Job:
            cur.execute(
                f"UPDATE job_batches SET stored = %s, unchanged = %s, failures = %s, finished_at = now(), {_RELEASED} "
                "WHERE job_id = %s AND batch = %s AND finished_at IS NULL",
                (report.stored, report.unchanged, json.dumps([list(f) for f in report.failed]), job_id, batch),
            )
            return _settle(cur, job_id)

        return self._store.run(finish)

    def give_up_batch(self, job_id: str, batch: int, reason: str) -> Job:
        """Record each image of an unfinished batch as failed with ``reason``; settle the job."""
        return self._store.run(lambda cur: _give_up_batch(cur, job_id, batch, reason))

    # -- the sweeper's part --------------------------------------------------------------

    def sweep(self, *, lease_s: float, max_attempts: int, resend_waiting: bool) -> Swept:
        """Take up every unit whose lease ran out, in one transaction; returns what to send again.

        A unit a worker had taken is given up once it has been taken ``max_attempts`` times, else
        released and sent again. A unit never taken is sent again when ``resend_waiting``, or when
        no work of its kind has been heard of for a whole lease: then its queue is not moving, and
        its message was lost (a broker restarted without its data). While the queue moves, the
        unit is only waiting its turn, and sending it again would only add to the queue.

        Rows another sweeper is working on are skipped (``SKIP LOCKED``): each unit is taken up
        by one sweeper."""
        return self._store.run(lambda cur: _sweep(cur, lease_s, max_attempts, resend_waiting))

    def _outcome(self, job_id: str, assignments: str, params: tuple) -> Job:
        row = self._store.run(lambda cur: _fetch(
            cur, f"UPDATE jobs SET {assignments}, finished_at = now(), last_progress_at = now(), {_RELEASED} "
            f"WHERE id = %s AND {_ACTIVE} RETURNING {_COLUMNS}", (*params, job_id)))
        return Job(*row) if row else self.get(job_id)

    def _one(self, sql: str, params: tuple) -> Job:
        return Job(*self._store.run(lambda cur: _fetch(cur, sql, params)))


def _fetch(cur: Any, sql: str, params: tuple) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()


def _settle(cur: Any, job_id: str) -> Job:
    """Bring the job's counts up to date from its batches; finish it when none is left.

    Runs under a lock on the job's row, so that two workers finishing its last two batches at
    once settle it once, each seeing the other's batch."""
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
    cur.execute("UPDATE jobs SET done = %s, failed = %s, last_progress_at = now() WHERE id = %s",
                (stored + unchanged, failed, job_id))
    if left or row[0] in FINISHED:
        return Job(*_fetch(cur, f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,)))
    cur.execute(
        "SELECT f->>0, f->>1 FROM job_batches, jsonb_array_elements(failures) f WHERE job_id = %s ORDER BY batch",
        (job_id,),
    )
    failures = [{"uri": uri, "reason": reason} for uri, reason in cur.fetchall()]
    result = {"stored": int(stored), "unchanged": int(unchanged), "failed": failures}
    status, error = "succeeded", None
    if failures and stored + unchanged == 0:
        first = failures[0]
        status, error = "failed", (f"none of the {len(failures)} images could be indexed; "
                                   f"first failure: {first['uri']}: {first['reason']}")
    return Job(*_fetch(
        cur, f"UPDATE jobs SET status = %s, error = %s, result = %s, finished_at = now(), {_RELEASED} "
        f"WHERE id = %s RETURNING {_COLUMNS}", (status, error, json.dumps(result), job_id)))


def _give_up_batch(cur: Any, job_id: str, batch: int, reason: str) -> Job:
    cur.execute(
        "UPDATE job_batches SET failures = (SELECT COALESCE(jsonb_agg(jsonb_build_array(u, %s)), '[]') "
        f"FROM jsonb_array_elements_text(uris) u), finished_at = now(), {_RELEASED} "
        "WHERE job_id = %s AND batch = %s AND finished_at IS NULL",
        (reason, job_id, batch),
    )
    return _settle(cur, job_id)


def _sweep(cur: Any, lease_s: float, max_attempts: int, resend_waiting: bool) -> Swept:
    swept = Swept()

    def may_resend(kind: str, waiting_job: str = "") -> bool:
        """Whether no other work of ``kind`` was heard of within the lease (a waiting job's own
        past progress, from before it was handed back, does not count)."""
        if resend_waiting:
            return True
        cur.execute("SELECT NOT EXISTS (SELECT 1 FROM jobs WHERE kind = %s AND id <> %s AND last_progress_at > "
                    "now() - %s * interval '1 second')", (kind, waiting_job, lease_s))
        return cur.fetchone()[0]

    cur.execute(
        "SELECT b.job_id, b.batch, b.attempts, b.holder, b.worker FROM job_batches b JOIN jobs j ON j.id = b.job_id "
        f"WHERE b.finished_at IS NULL AND b.lease_until < now() AND j.{_ACTIVE} "
        "ORDER BY b.job_id, b.batch FOR UPDATE OF b SKIP LOCKED"
    )
    for job_id, batch, attempts, holder, worker in cur.fetchall():
        work = Work(job_id, "index", batch)
        if holder is not None and attempts >= max_attempts:
            reason = f"given up after {attempts} attempts: {_lost_lease(worker)}"
            _give_up_batch(cur, job_id, batch, reason)
            swept.given_up.append((work, reason))
        elif holder is not None or may_resend("index"):
            cur.execute(f"UPDATE job_batches SET holder = NULL, lease_until = {_LEASE} WHERE job_id = %s AND batch = %s",
                        (lease_s, job_id, batch))
            swept.resend.append(work)
    cur.execute(f"SELECT id, kind, attempts, holder, worker FROM jobs WHERE {_ACTIVE} AND lease_until < now() "
                "ORDER BY created_at FOR UPDATE SKIP LOCKED")
    for job_id, kind, attempts, holder, worker in cur.fetchall():
        work = Work(job_id, kind)
        if holder is not None and attempts >= max_attempts:
            reason = f"given up after {attempts} attempts: {_lost_lease(worker)}"
            cur.execute(f"UPDATE jobs SET status = 'failed', error = %s, finished_at = now(), {_RELEASED} "
                        "WHERE id = %s", (reason, job_id))
            swept.given_up.append((work, reason))
        elif holder is not None or may_resend(kind, job_id):
            cur.execute(f"UPDATE jobs SET status = 'queued', holder = NULL, lease_until = {_LEASE} WHERE id = %s",
                        (lease_s, job_id))
            swept.resend.append(work)
    return swept


def _lost_lease(worker: str | None) -> str:
    return f"its worker ({worker or 'unknown'}) stopped renewing its lease each time (it died, hung or lost the database)"
