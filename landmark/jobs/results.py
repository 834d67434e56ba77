"""Where a query job's ranking and results page go, and reading them back."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .job import Job, NoResultError

RESULT_TYPES = {"txt": "text/plain; charset=utf-8", "json": "application/json", "html": "text/html; charset=utf-8"}


def read_result(job: Job, fmt: str) -> bytes:
    """The bytes of a query job's ``txt``, ``json`` or ``html`` results file."""
    from ..sources import read_bytes

    if fmt not in RESULT_TYPES:
        raise ConfigError(f"format: {fmt!r} is not one of {', '.join(RESULT_TYPES)}")
    if job.kind != "query":
        raise NoResultError(f"job {job.id} is an {job.kind} job and has no ranking; its status has its counts")
    if job.status != "succeeded" or not job.result:
        reason = f": {job.error}" if job.error else ""
        raise NoResultError(f"job {job.id} is {job.status}{reason}; it has no result yet")
    location = job.result.get(fmt)
    if location is None:
        raise NoResultError(f"job {job.id} has no {fmt} file: it ran before query jobs wrote one")
    return read_bytes(location if "://" in location else Path(location).as_uri())


def result_stem(results: str, job_id: str) -> str:
    """Where a query job's files go: ``<results>/<job id>`` (a directory or an ``s3://`` prefix)."""
    return f"{results.rstrip('/')}/{job_id}"
