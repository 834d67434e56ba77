"""Jobs: a unit of work (index some sources, or query one image) with a status people can follow.

The ``jobs`` table lives in the same PostgreSQL as ``landmarks``:

=================  ============  ===============================================================
column             type          meaning
=================  ============  ===============================================================
id                 text          32 hex digits (a UUID)
kind               text          ``index`` or ``query``
status             text          ``queued`` -> ``running`` -> ``succeeded`` or ``failed``
parameters         jsonb         index: ``{"sources": [...]}``; query: ``{"image", "top_k", "add"}``
done, failed,      integer       progress: images handled, images that failed, images in all
total
error              text          why a failed job failed
result             jsonb         index: the report's counts; query: ``{"txt": uri, "json": uri}``
created_at, ...    timestamptz   created, started, finished
=================  ============  ===============================================================

:func:`run` carries a job out with a :class:`~landmark.session.Session`, recording progress as it
goes. Query results are written under the results location as ``<job id>.txt`` and ``.json``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import LandmarkError

if TYPE_CHECKING:
    from .session import Session
    from .store import Store

KINDS = ("index", "query")
FINISHED = ("succeeded", "failed")


class JobNotFoundError(LandmarkError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} in this store")
        self.job_id = job_id


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


_COLUMNS = "id, kind, status, parameters, done, failed, total, error, result, created_at, started_at, finished_at"


class Jobs:
    """The ``jobs`` table of one store."""

    def __init__(self, store: Store) -> None:
        self._conn = store.connection

    def create(self, kind: str, parameters: dict[str, Any]) -> Job:
        if kind not in KINDS:
            raise LandmarkError(f"unknown job kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        return self._one(
            f"INSERT INTO jobs (id, kind, status, parameters) VALUES (%s, %s, 'queued', %s) RETURNING {_COLUMNS}",
            (uuid.uuid4().hex, kind, json.dumps(parameters)),
        )

    def get(self, job_id: str) -> Job:
        return self._one(f"SELECT {_COLUMNS} FROM jobs WHERE id = %s", (job_id,), job_id)

    def start(self, job_id: str) -> Job:
        return self._one(
            f"UPDATE jobs SET status = 'running', started_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (job_id,), job_id,
        )

    def progress(self, job_id: str, *, done: int, failed: int, total: int) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("UPDATE jobs SET done = %s, failed = %s, total = %s WHERE id = %s",
                        (done, failed, total, job_id))

    def succeed(self, job_id: str, result: dict[str, Any]) -> Job:
        return self._one(
            f"UPDATE jobs SET status = 'succeeded', result = %s, finished_at = now() WHERE id = %s "
            f"RETURNING {_COLUMNS}", (json.dumps(result), job_id), job_id,
        )

    def fail(self, job_id: str, error: str) -> Job:
        return self._one(
            f"UPDATE jobs SET status = 'failed', error = %s, finished_at = now() WHERE id = %s RETURNING {_COLUMNS}",
            (error, job_id), job_id,
        )

    def _one(self, sql: str, params: tuple, job_id: str | None = None) -> Job:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
        if row is None:
            raise JobNotFoundError(job_id or "?")
        return Job(*row)


def run(session: Session, jobs: Jobs, job_id: str, results: str) -> Job:
    """Carry out job ``job_id`` in this process; a failure is recorded with its reason, not raised."""
    from .session import DEFAULT_TOP_K

    job = jobs.start(job_id)
    try:
        if job.kind == "index":
            return jobs.succeed(job_id, _run_index(session, jobs, job))
        files = session.query(
            job.parameters["image"], top_k=int(job.parameters.get("top_k", DEFAULT_TOP_K)),
            add=bool(job.parameters.get("add", True)), out=result_stem(results, job_id),
        ).files
        jobs.progress(job_id, done=1, failed=0, total=1)
        return jobs.succeed(job_id, files)
    except LandmarkError as error:
        return jobs.fail(job_id, str(error))
    except Exception as error:  # the job, not the caller, owns this failure; keep its reason
        return jobs.fail(job_id, f"{type(error).__name__}: {error}")


def _run_index(session: Session, jobs: Jobs, job: Job) -> dict[str, Any]:
    counts = {"done": 0, "total": 0}

    def on_total(total: int) -> None:
        counts["total"] = total
        jobs.progress(job.id, done=0, failed=0, total=total)

    def progress(n: int) -> None:
        counts["done"] += n
        jobs.progress(job.id, done=counts["done"], failed=0, total=counts["total"])

    report = session.index(job.parameters["sources"], progress=progress, on_total=on_total)
    jobs.progress(job.id, done=report.total, failed=len(report.failed), total=max(report.total, counts["total"]))
    return {"stored": report.stored, "unchanged": report.unchanged,
            "failed": [{"uri": uri, "reason": reason} for uri, reason in report.failed]}


def result_stem(results: str, job_id: str) -> str:
    """Where a query job's files go: ``<results>/<job id>`` (a directory or an ``s3://`` prefix)."""
    return f"{results.rstrip('/')}/{job_id}"
