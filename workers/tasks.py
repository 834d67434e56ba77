"""The tasks: bookkeeping around the steps of :mod:`landmark.jobs`, nothing more.

Each worker process keeps one :class:`~landmark.session.Session` across tasks
(:mod:`workers.process`): its database connection, its extractor (a loaded model) and, on a
match worker, its Dask client with the partitions the Dask workers hold, so that a query job does
not start a cluster of its own.

A task holds its work under its own task id: a task retried, or delivered again because its
process died, keeps its id and takes its work back at once; another task finds the work held
until the lease runs out (``LANDMARK_JOB_LEASE``) and is dropped.

Failures, sorted by whether trying again can help:

* transient (S3 or the database unreachable, throttled, a server error): the task is retried
  with exponential backoff (:func:`backoff_seconds`) up to ``LANDMARK_JOB_RETRIES`` times, then
  the job (or the batch's images) is marked failed with the last reason. When even that cannot
  be recorded (the database is down), the work's lease runs out and the sweeper takes it up
  once the database is back;
* anything else (a missing image, not an image, a bad option): recorded at once, not retried.
  Within an index job one bad image fails alone; the rest of its batch is stored.

A unit of work taken more than ``job_attempts`` times (an image that crashes the extractor,
say) is given up, so that it cannot cycle through the queue for ever.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from celery import shared_task

from landmark.errors import LandmarkError, StoreUnavailableError, TransientError
from landmark.jobs import Holder, JobNotFoundError, Jobs, index_batch, plan_index, run_query
from landmark.session import Session

from .app import EXTRACT_BATCH, PLAN_INDEX, QUERY
from .process import holding, worker_session

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0


def backoff_seconds(retries: int, *, jitter: Callable[[], float] = random.random) -> float:
    """Wait before retry number ``retries + 1``: 1, 2, 4 ... seconds, capped at 60, with up to
    half of it drawn at random so that workers that failed together do not retry together."""
    delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** retries)
    return delay * (0.5 + 0.5 * jitter())


def transient_errors() -> tuple[type[BaseException], ...]:
    import psycopg2
    from kombu.exceptions import OperationalError as BrokerError

    return (TransientError, StoreUnavailableError, psycopg2.OperationalError, psycopg2.InterfaceError,
            BrokerError, ConnectionError, TimeoutError)


def _run(task: Any, job_id: str, step: Callable[[Session, Holder], Any], give_up: Callable[[Jobs, str], Any]) -> Any:
    """Run ``step`` under a holder named by the task's id, retrying transient failures;
    ``give_up(jobs, reason)`` records a final one."""
    session = worker_session(task.app)
    settings = session.settings
    try:
        with holding(Holder(Jobs(session.store), task.request.id, settings.job_lease)) as holder:
            return step(session, holder)
    except JobNotFoundError as error:
        log.warning("dropping task %s: %s (the job was deleted, or this worker uses another store)",
                    task.request.id, error)
        return None
    except transient_errors() as error:
        reason = f"{error}".strip() or type(error).__name__
        if task.request.retries < settings.job_retries:
            delay = backoff_seconds(task.request.retries)
            log.warning("job %s: %s; retry %d of %d in %.1f s", job_id, reason, task.request.retries + 1,
                        settings.job_retries, delay)
            raise task.retry(exc=error, countdown=delay, max_retries=settings.job_retries) from error
        _give_up(session, job_id, give_up, f"gave up after {settings.job_retries + 1} attempts: {reason}")
    except LandmarkError as error:
        _give_up(session, job_id, give_up, str(error))
    except Exception as error:  # a task owns its failure: record it, do not let it loop
        log.exception("job %s failed", job_id)
        _give_up(session, job_id, give_up, f"{type(error).__name__}: {error}")
    return None


def _give_up(session: Session, job_id: str, give_up: Callable[[Jobs, str], Any], reason: str) -> None:
    try:
        give_up(Jobs(session.store), reason)
    except transient_errors() as error:
        log.warning("job %s: cannot record its failure now (%s); its lease runs out and the sweeper takes it up "
                    "once the database is back", job_id, f"{error}".strip() or type(error).__name__)


@shared_task(name=PLAN_INDEX, bind=True)
def plan_index_task(self: Any, job_id: str) -> None:
    """An index job's first step: list its images and queue one extract task per batch."""

    def step(session: Session, holder: Holder) -> None:
        for batch in plan_index(session, holder, job_id, raise_transient=True):
            extract_batch_task.apply_async(args=[job_id, batch])

    _run(self, job_id, step, lambda jobs, reason: jobs.fail(job_id, reason))


@shared_task(name=EXTRACT_BATCH, bind=True)
def extract_batch_task(self: Any, job_id: str, batch: int) -> None:
    """Extract and store one batch of an index job's images."""

    def step(session: Session, holder: Holder) -> None:
        job = index_batch(session, holder, job_id, batch, raise_transient=True)
        if job is not None and job.finished:
            log.info("job %s %s: %d stored or unchanged, %d failed", job_id, job.status, job.done, job.failed)

    _run(self, job_id, step, lambda jobs, reason: jobs.give_up_batch(job_id, batch, reason))


@shared_task(name=QUERY, bind=True)
def query_task(self: Any, job_id: str) -> None:
    """A query job: extract the query, match it on Dask, write the results files."""
    _run(self, job_id, lambda session, holder: run_query(session, holder, job_id),
         lambda jobs, reason: jobs.fail(job_id, reason))
