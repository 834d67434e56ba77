"""Submitting a job: create it, then hand its first step to the sender the caller gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import LandmarkError
from .job import Job, Work
from .sweeper import Send
from .table import Jobs


def submit(
    jobs: Jobs, kind: str, parameters: dict[str, Any], send: Send, *, lease_s: float,
    on_created: Callable[[Job], None] | None = None,
) -> Job:
    """Create a job and ``send`` its first step: to a queue (the CLI and the API pass
    ``workers.app.enqueue`` bound to their settings when a broker is set), or to a runner in this
    process, which may run it before returning. Returns the job as it stands then.

    The job must be taken within ``lease_s`` seconds, or the sweeper sends it again. A job that
    ``send`` refuses (the broker cannot be reached) is marked failed, and the error raised.
    ``on_created`` hears of the job as soon as it exists (to show its id before it runs).
    """
    job = jobs.create(kind, parameters, lease_s=lease_s)
    if on_created is not None:
        on_created(job)
    try:
        send(Work(job.id, kind))
    except LandmarkError as error:
        jobs.fail(job.id, str(error))
        raise
    return jobs.get(job.id)
