"""The tasks: bookkeeping around the steps of :mod:`landmark.jobs`, nothing more.

Each worker process keeps one :class:`~landmark.session.Session` across tasks: its database
connection, its extractor (a loaded model) and, on a match worker, its Dask client with the
partitions the Dask workers hold, so that a query job does not start a cluster of its own.

Failures, sorted by whether trying again can help:

* transient (S3 or the database unreachable, throttled, a server error): the task is retried
  with exponential backoff (:func:`backoff_seconds`) up to ``MAX_RETRIES`` times, then the job
  (or the batch's images) is marked failed with the last reason;
* anything else (a missing image, not an image, a bad option): recorded at once, not retried.
  Within an index job one bad image fails alone; the rest of its batch is stored.

A batch whose worker process died ``MAX_ATTEMPTS`` times (an image that crashes the extractor,
say) is given up, so that it cannot cycle through the queue for ever.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown

from landmark.errors import LandmarkError, StoreUnavailableError, TransientError
from landmark.jobs import JobNotFoundError, Jobs, fail_batch, index_batch, plan_index, run_query
from landmark.session import Session

from .app import EXTRACT_BATCH, PLAN_INDEX, QUERY, settings_of

log = logging.getLogger(__name__)

MAX_RETRIES = 5
MAX_ATTEMPTS = MAX_RETRIES + 3  # claims of one batch: its retries and a few lost workers
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0

_session: Session | None = None


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


def worker_session(task: Any) -> Session:
    global _session
    if _session is None:
        _session = Session(settings_of(task.app), announce=log.info)
    return _session


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_session(**_: Any) -> None:
    global _session
    if _session is not None:
        _session.close()
        _session = None


def _run(task: Any, job_id: str, step: Callable[[Session, Jobs], Any], give_up: Callable[[Jobs, str], Any]) -> Any:
    """Run ``step``, retrying transient failures; ``give_up(jobs, reason)`` records a final one."""
    session = worker_session(task)
    try:
        return step(session, Jobs(session.store))
    except JobNotFoundError as error:
        log.warning("dropping task %s: %s (the job was deleted, or this worker uses another store)",
                    task.request.id, error)
        return None
    except transient_errors() as error:
        session.reconnect()
        reason = f"{error}".strip() or type(error).__name__
        if task.request.retries < MAX_RETRIES:
            delay = backoff_seconds(task.request.retries)
            log.warning("job %s: %s; retry %d of %d in %.1f s", job_id, reason, task.request.retries + 1,
                        MAX_RETRIES, delay)
            raise task.retry(exc=error, countdown=delay, max_retries=MAX_RETRIES) from error
        give_up(Jobs(session.store), f"gave up after {MAX_RETRIES + 1} attempts: {reason}")
        return None
    except LandmarkError as error:
        give_up(Jobs(session.store), str(error))
        return None
    except Exception as error:  # a task owns its failure: record it, do not let it loop
        log.exception("job %s failed", job_id)
        give_up(Jobs(session.store), f"{type(error).__name__}: {error}")
        return None


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@shared_task(name=PLAN_INDEX, bind=True)
def plan_index_task(self: Any, job_id: str) -> None:
    """An index job's first step: list its images and queue one extract task per batch."""

    def step(session: Session, jobs: Jobs) -> None:
        batch_size = session.settings.extract_batch
        for batch in plan_index(session, jobs, job_id, batch_size=batch_size, raise_transient=True):
            extract_batch_task.apply_async(args=[job_id, batch])

    _run(self, job_id, step, lambda jobs, reason: jobs.fail(job_id, reason))


@shared_task(name=EXTRACT_BATCH, bind=True)
def extract_batch_task(self: Any, job_id: str, batch: int) -> None:
    """Extract and store one batch of an index job's images."""

    def step(session: Session, jobs: Jobs) -> None:
        job = index_batch(session, jobs, job_id, batch, worker=_worker_name(), raise_transient=True,
                          max_attempts=MAX_ATTEMPTS)
        if job is not None and job.finished:
            log.info("job %s %s: %d stored or unchanged, %d failed", job_id, job.status, job.done, job.failed)

    _run(self, job_id, step, lambda jobs, reason: fail_batch(jobs, job_id, batch, reason))


@shared_task(name=QUERY, bind=True)
def query_task(self: Any, job_id: str) -> None:
    """A query job: extract the query, match it on Dask, write the results files."""

    def step(session: Session, jobs: Jobs) -> None:
        run_query(session, jobs, job_id, session.settings.results_location)

    _run(self, job_id, step, lambda jobs, reason: jobs.fail(job_id, reason))
