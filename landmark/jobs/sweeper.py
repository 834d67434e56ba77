"""The sweeper: work whose lease ran out goes to another worker, or is given up past its attempts.

Every process that does work or takes it in runs one: each queue worker and the API server start
a :class:`Sweeper` thread, which calls :func:`sweep` at once and then every third of the lease.
Sweeps in several processes do not collide: each unit is taken up by one of them. A sweep needs
nothing but the database it sweeps, so a give-up that could not be recorded while the database
was down is not lost: the work's lease runs out meanwhile, and the first sweep once the
database is back takes it up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import LandmarkError
from .job import Work
from .table import Jobs, Swept

if TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger(__name__)

Send = Callable[[Work], None]
"""Hands a unit of work on: to a queue (a broker), or to a runner in this process."""


def sweep(jobs: Jobs, send: Send, settings: Settings, *, resend_waiting: bool) -> Swept:
    """One sweep (see :meth:`Jobs.sweep`): record what is given up, send on what is not.

    ``resend_waiting``: the sender can tell a unit it already holds from a lost one (an
    in-process runner, which ignores a job it has queued already), so every unit whose lease ran
    out is sent again. A queue cannot tell: a unit never taken is sent again only when its queue
    has stopped moving.
    """
    swept = jobs.sweep(lease_s=settings.job_lease, max_attempts=settings.job_attempts, resend_waiting=resend_waiting)
    for work, reason in swept.given_up:
        log.warning("%s: %s", work, reason)
    for work in swept.resend:
        log.info("%s: lease ran out; sending it again", work)
        try:
            send(work)
        except LandmarkError as error:  # its lease was renewed: it is tried again when that runs out
            log.warning("%s: cannot send it again now (%s); the sweep after its next lease tries again", work, error)
    return swept


class Sweeper:
    """:func:`sweep` every third of the lease on a daemon thread, with a connection of its own."""

    def __init__(self, open_jobs: Callable[[], Jobs], send: Send, settings: Settings, *, resend_waiting: bool) -> None:
        self._open_jobs = open_jobs
        self._send = send
        self._settings = settings
        self._resend_waiting = resend_waiting
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="landmark-sweeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        jobs: Jobs | None = None
        try:
            while True:
                try:
                    jobs = jobs or self._open_jobs()
                    sweep(jobs, self._send, self._settings, resend_waiting=self._resend_waiting)
                except Exception as error:  # noqa: BLE001 - the database may be down: the next sweep tries again
                    log.warning("sweep failed: %s", str(error).strip().splitlines()[0] if str(error).strip()
                                else type(error).__name__)
                if self._stop.wait(self._settings.job_lease / 3):
                    return
        finally:
            if jobs is not None:
                jobs.close()
