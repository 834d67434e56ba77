"""What a worker process keeps between tasks, and how it stops.

- One :class:`~landmark.session.Session` per process (database connection, extractor, Dask
  client), opened by its first task, closed when the process ends.
- One sweeper per worker, in its main process, from when the worker is ready until it stops.
- The holders of the work its tasks are doing (:func:`holding`), so that a stop can hand it back.

Stopping is bounded by ``LANDMARK_SHUTDOWN_GRACE``. A prefork worker (the ``extract`` queue) is
started by ``landmark worker`` with SIGTERM made a cold shutdown, so Celery's soft shutdown
gives its pool processes the grace period, then stops them; their tasks, unacknowledged, go back
to the queue, and the next worker takes them (same task id, so it takes their work back at
once). A solo worker (``match``) runs its task in the process that handles the signal, where
Celery's soft shutdown would only pause it: SIGTERM stays a warm shutdown there, and a timer
ends it after the grace period, handing the work at hand back first (queued again, for the next
sweep to send on at once).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown, worker_shutting_down

from landmark.jobs import Holder, Jobs, Sweeper
from landmark.session import Session, open_store
from landmark.settings import Settings

from .app import enqueue, settings_of

log = logging.getLogger(__name__)

_session: Session | None = None
_sweeper: Sweeper | None = None
_settings: Settings | None = None
_holders: set[Holder] = set()


def worker_session(app: Celery) -> Session:
    global _session
    if _session is None:
        _session = Session(settings_of(app), announce=log.info)
    return _session


@contextmanager
def holding(holder: Holder) -> Iterator[Holder]:
    """Enter ``holder`` (its heartbeat) and keep it known here while the task runs."""
    with holder:
        _holders.add(holder)
        try:
            yield holder
        finally:
            _holders.discard(holder)


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    global _sweeper, _settings
    settings = _settings = settings_of(sender.app)
    _sweeper = Sweeper(lambda: Jobs(open_store(settings)), lambda work: enqueue(settings, work), settings,
                       resend_waiting=False)
    _sweeper.start()


@worker_shutting_down.connect
def _bound_warm_shutdown(how: str = "", **_: Any) -> None:
    """A warm shutdown waits for the tasks at hand; give them the grace period, no more."""
    if how == "Warm" and _settings is not None:
        threading.Thread(target=_end_after, args=(_settings,), name="landmark-shutdown", daemon=True).start()


def _end_after(settings: Settings) -> None:
    if threading.Event().wait(settings.shutdown_grace) or not _holders:
        return
    for holder in list(_holders):
        for job_id in {work.job_id for work in holder.held()}:
            jobs = holder.jobs.beside()  # the task's own connection is busy in the task
            try:
                job = jobs.hand_back(job_id, holder.token)
                log.warning("job %s handed back (%s) after the %g s grace period", job_id, job.status,
                            settings.shutdown_grace)
            except Exception as error:  # noqa: BLE001 - its lease runs out and a sweeper takes it up
                log.warning("job %s could not be handed back (%s); a sweeper resumes it after its lease", job_id, error)
            finally:
                jobs.close()
    os._exit(1)  # the task would not end: leave without it (its message stays unacknowledged)


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close(**_: Any) -> None:
    global _session, _sweeper
    if _sweeper is not None:
        _sweeper.stop()
        _sweeper = None
    if _session is not None:
        _session.close()
        _session = None
