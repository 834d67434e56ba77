"""Holding work: who holds it, and the heartbeat that keeps its leases while the work goes on.

A lease is renewed every third of its length, so two heartbeats can be missed (a slow
database, a pause) before it runs out. The heartbeat runs on a thread with a connection of its
own: the work itself may hold the main connection for as long as a batch takes to store. A
process that dies, hangs in the database or loses it stops renewing, and after the lease the
sweeper hands its work to another (:mod:`landmark.jobs.sweeper`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .job import Work
from .table import Jobs

log = logging.getLogger(__name__)


def worker_name() -> str:
    """``host:pid`` of this process, as job status shows who took a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def new_token() -> str:
    """A holder token for work run in this process (a queue task uses its task id instead: a task
    retried or delivered again after its worker died keeps its id, and so takes its work back)."""
    return f"{worker_name()}:{uuid.uuid4().hex[:12]}"


class Holder:
    """One holder of work (a queue task, an in-process run): its token, and while entered, a
    heartbeat thread renewing the leases of what it holds (:meth:`hold`)."""

    def __init__(self, jobs: Jobs, token: str, lease_s: float) -> None:
        self.jobs = jobs
        self.token = token
        self.worker = worker_name()
        self.lease_s = lease_s
        self._held: list[Work] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Holder:
        self._thread = threading.Thread(target=self._beat, name="landmark-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)  # a beat stuck on a dead database must not hold up the worker

    def held(self) -> list[Work]:
        """What it holds now."""
        with self._lock:
            return list(self._held)

    @contextmanager
    def hold(self, work: Work) -> Iterator[Work]:
        """Keep ``work``'s lease renewed while the block runs (the caller has taken it)."""
        with self._lock:
            self._held.append(work)
        try:
            yield work
        finally:
            with self._lock:
                if work in self._held:
                    self._held.remove(work)

    def _beat(self) -> None:
        jobs: Jobs | None = None
        try:
            while not self._stop.wait(self.lease_s / 3):
                held = self.held()
                if not held:
                    continue
                try:
                    jobs = jobs or self.jobs.beside()
                    for work in held:
                        if not jobs.renew(work, holder=self.token, lease_s=self.lease_s):
                            log.info("%s is no longer held here (finished, handed back, or handed on by the "
                                     "sweeper: then the first outcome recorded stands)", work)
                            with self._lock:
                                if work in self._held:
                                    self._held.remove(work)
                except Exception as error:  # noqa: BLE001 - the next beat tries again; the lease says the rest
                    log.warning("heartbeat for %s failed: %s", ", ".join(map(str, held)), _reason(error))
        finally:
            if jobs is not None:
                jobs.close()


def _reason(error: Any) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
