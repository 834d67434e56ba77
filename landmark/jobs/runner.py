"""The in-process runner: jobs run one at a time on a thread of this process (a server with no broker).

It keeps one session (store connection, extractor, Dask client) across jobs. When a job cannot
even have its failure recorded (the database is gone), the runner says it is broken, keeps
trying to reach the database while idle, and is itself again once it can; the job's lease runs
out meanwhile and the sweeper sends it back here. Stopping is bounded (:meth:`Runner.stop`): an
index job stops between batches, and a job still running when the grace period ends is handed
back, queued, for the next server to resume.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .job import Work
from .lease import new_token
from .steps import run
from .table import Jobs

if TYPE_CHECKING:
    from ..session import Session
    from ..settings import Settings

log = logging.getLogger(__name__)

RECHECK_S = 2.0
"""How often a broken runner tries its database again while idle."""


class Runner:
    """A queue of job ids in memory and the daemon thread that runs them."""

    def __init__(self, settings: Settings, open_session: Callable[[Settings], Session]) -> None:
        self._settings = settings
        self._open_session = open_session
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._waiting: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: Session | None = None
        self._current: tuple[str, str, datetime] | None = None  # job id, holder token, since
        self._broken: str | None = None

    def send(self, work: Work) -> None:
        """Queue ``work``'s job (a batch stands for its job: a run does all of its batches). A job
        already waiting is not queued twice; while stopping, nothing is taken: the job stays
        queued in the database, and the next server's first sweep resumes it."""
        with self._lock:
            if self._stopping.is_set() or work.job_id in self._waiting:
                return
            self._waiting.add(work.job_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="landmark-runner", daemon=True)
                self._thread.start()
        self._queue.put(work.job_id)

    def state(self) -> dict[str, Any]:
        """``{"ok", "detail"}``: ``idle``, ``running job X since T``, ``broken: reason`` or ``stopping``."""
        with self._lock:
            current, broken, waiting = self._current, self._broken, len(self._waiting)
        queued = f"; {waiting} waiting" if waiting else ""
        if self._stopping.is_set():
            return {"ok": False, "detail": "stopping: takes no more jobs"}
        if self._thread is not None and not self._thread.is_alive():
            return {"ok": False, "detail": "broken: its thread has ended"}
        if broken:
            return {"ok": False, "detail": f"broken: {broken}{queued}"}
        if current:
            return {"ok": True, "detail": f"running job {current[0]} since {current[2].isoformat()}{queued}"}
        return {"ok": True, "detail": "idle"}

    def stop(self, grace_s: float) -> None:
        """Take no more jobs; give the job at hand ``grace_s`` seconds to finish (an index job
        stops at its next batch), then hand it back: queued again, its lease released."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread is None:
            return
        self._thread.join(timeout=grace_s)
        with self._lock:
            current = self._current
        if current is None:
            return
        job_id, token, _ = current
        session = self._open_session(self._settings)  # the runner's own is busy on its thread
        try:
            job = Jobs(session.store).hand_back(job_id, token)
            log.warning("job %s handed back (%s) after the %g s grace period", job_id, job.status, grace_s)
        except Exception as error:  # noqa: BLE001 - its lease runs out and the sweeper takes it up
            log.warning("job %s could not be handed back (%s); the sweeper resumes it after its lease", job_id,
                        _reason(error))
        finally:
            session.close()

    def _loop(self) -> None:
        while True:
            try:
                job_id = self._queue.get(timeout=RECHECK_S if self._broken else None)
            except queue.Empty:
                self._recheck()
                continue
            if job_id is None or self._stopping.is_set():
                break
            token = new_token()
            with self._lock:
                self._waiting.discard(job_id)
                self._current = (job_id, token, datetime.now(timezone.utc))
            try:
                self._session = self._session or self._open_session(self._settings)
                run(self._session, job_id, stop=self._stopping, token=token)
                self._broken = None
            except Exception as error:  # noqa: BLE001 - even the failure could not be recorded
                self._broken = f"job {job_id} could not run or record its failure: {_reason(error)}"
                log.warning("%s; the sweeper sends it again after its lease", self._broken)
            finally:
                with self._lock:
                    self._current = None
        if self._session is not None:  # closed on the thread that opened it (its Dask client)
            self._session.close()
            self._session = None

    def _recheck(self) -> None:
        try:
            self._session = self._session or self._open_session(self._settings)
            self._session.store.ping()
            self._broken = None
        except Exception as error:  # noqa: BLE001 - still broken; say why
            self._broken = f"cannot reach the database: {_reason(error)}"


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
