"""What a worker process keeps between tasks.

- One :class:`~landmark.session.Session` per process (database connection, extractor, Dask
  client), opened by its first task, closed when the process ends.
- One sweeper per worker, in its main process, from when the worker is ready until it stops.
- The holders of the work its tasks are doing (:func:`holding`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

from landmark.jobs import Holder, Jobs, Sweeper
from landmark.session import Session, open_store

from .app import enqueue, settings_of

log = logging.getLogger(__name__)

_session: Session | None = None
_sweeper: Sweeper | None = None
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
    global _sweeper
    settings = settings_of(sender.app)
    _sweeper = Sweeper(lambda: Jobs(open_store(settings)), lambda work: enqueue(settings, work), settings,
                       resend_waiting=False)
    _sweeper.start()


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
