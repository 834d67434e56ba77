"""What a job is, as the rest of the package and its callers see it: records, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import LandmarkError

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
    attempts: int
    """times its first step was taken (a query job: the whole job)"""
    worker: str | None
    """``host:pid`` of the process that last took it"""
    lease_until: datetime | None
    """when its lease runs out: the sweeper hands it on after that unless it is renewed"""
    last_progress_at: datetime | None
    """when its work was last heard of: a heartbeat, a batch or a partition done"""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        document = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key, value in document.items():
            if isinstance(value, datetime):
                document[key] = value.isoformat()
        return document


@dataclass(frozen=True)
class Work:
    """A unit of work a sender hands on: a job's first step (``batch`` is ``None``: planning an
    index job, or a whole query job) or one batch of an index job."""

    job_id: str
    kind: str
    batch: int | None = None

    def __str__(self) -> str:
        return f"job {self.job_id}" + (f" batch {self.batch}" if self.batch is not None else "")


@dataclass(frozen=True)
class Claim:
    """A batch a worker has taken: its URIs and how many times it has been taken (this one included)."""

    uris: list[str]
    attempts: int
