"""The steps of a job, shared by the in-process runner (:func:`run`) and the queue workers' tasks.

An index job runs in two steps: :func:`plan_index` expands the sources into image URIs and
records them as numbered batches; :func:`index_batch` extracts and stores one batch. A batch is
finished once: a batch delivered twice (a worker died before acknowledging it) is stored again,
harmlessly (rows are upserted by URI), and counted once. The job is settled when its last batch
finishes. A query job is one step, :func:`run_query`. Each step takes its work under a lease
held by a :class:`~landmark.jobs.lease.Holder` and returns at once (doing nothing) when the work
is finished already or another holder's lease on it still runs.

The settings that drive them are the session's: ``extract_batch``, ``job_lease``,
``job_attempts`` (a unit taken more often is given up) and ``results_location``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from ..errors import LandmarkError
from ..indexing import IndexReport, chunks, gather, index_uris
from ..policy import from_parameters
from .job import Job, Work
from .lease import Holder, new_token
from .results import result_stem
from .table import Jobs

if TYPE_CHECKING:
    from ..session import Session

log = logging.getLogger(__name__)


def take(session: Session, holder: Holder, job_id: str) -> Job | None:
    """Take a job's first step; ``None`` when there is nothing to do: the job is finished, another
    holder has it, or it was taken too often already (then it is failed, saying so)."""
    attempts = session.settings.job_attempts
    job = holder.jobs.start(job_id, holder=holder.token, worker=holder.worker, lease_s=holder.lease_s)
    if job is None:
        log.info("job %s is held by another worker; this delivery is dropped", job_id)
        return None
    if job.finished:
        return None
    if job.attempts > attempts:
        holder.jobs.fail(job_id, f"given up after {attempts} attempts (its worker died or lost its lease each time)")
        return None
    return job


def plan_index(session: Session, holder: Holder, job_id: str, *, raise_transient: bool = False) -> list[int]:
    """An index job's first step, for a queue: list its images into batches of
    ``extract_batch``; returns the batches to send (each gets a lease of its own)."""
    job = take(session, holder, job_id)
    if job is None:
        return []
    with holder.hold(Work(job_id, "index")):
        return _plan(session, holder, job, sent=True, raise_transient=raise_transient)


def _plan(session: Session, holder: Holder, job: Job, *, sent: bool, raise_transient: bool = False) -> list[int]:
    policy = from_parameters(job.parameters)  # a job from the HTTP API; None from the CLI
    uris, unusable = gather(job.parameters["sources"], raise_transient=raise_transient, policy=policy)
    return holder.jobs.plan(job.id, list(chunks(uris, session.settings.extract_batch)), unusable,
                            sent_lease_s=holder.lease_s if sent else None)


def index_batch(
    session: Session, holder: Holder, job_id: str, batch: int, *, raise_transient: bool = False
) -> Job | None:
    """Extract and store one batch of an index job; ``None`` if there was nothing to do.

    A batch taken more than ``job_attempts`` times (its worker kept dying on it) is given up:
    its images are recorded as failed rather than tried again.
    """
    jobs, attempts = holder.jobs, session.settings.job_attempts
    claim = jobs.claim(job_id, batch, holder=holder.token, worker=holder.worker, lease_s=holder.lease_s)
    if claim is None:
        return None
    if claim.attempts > attempts:
        reason = f"given up after {attempts} attempts at its batch (the worker process died each time)"
        return jobs.finish(job_id, batch, IndexReport(failed=[(uri, reason) for uri in claim.uris]))
    with holder.hold(Work(job_id, "index", batch)):
        report = index_uris(session.store, session.extractor, claim.uris, batch_size=len(claim.uris),
                            raise_transient=raise_transient, max_pixels=session.settings.max_image_pixels)
    return jobs.finish(job_id, batch, report)


def run_query(session: Session, holder: Holder, job_id: str) -> Job | None:
    """Carry out a query job; its files go to ``<results>/<job id>.txt``, ``.json`` and ``.html``."""
    from ..session import DEFAULT_TOP_K

    job = take(session, holder, job_id)
    if job is None:
        return None
    jobs, parameters = holder.jobs, job.parameters
    counts = {"done": 0, "total": 0}

    def on_total(total: int) -> None:
        counts["total"] = total
        jobs.progress(job_id, done=0, failed=0, total=total)

    def progress(n: int) -> None:
        counts["done"] += n
        jobs.progress(job_id, done=counts["done"], failed=0, total=counts["total"])

    with holder.hold(Work(job_id, "query")):
        files = session.query(
            parameters["image"], top_k=int(parameters.get("top_k", DEFAULT_TOP_K)),
            add=bool(parameters.get("add", True)), match_config=session.matching(parameters.get("matching")),
            out=result_stem(session.settings.results_location, job_id), progress=progress, on_total=on_total,
            policy=from_parameters(parameters), page=True,
            evidence="inliers" if parameters.get("evidence") else "transform",
        ).files
    return jobs.succeed(job_id, files)


def run(session: Session, job_id: str, *, stop: threading.Event | None = None, token: str | None = None) -> Job:
    """Carry out job ``job_id`` in this process; a failure is recorded with its reason, not raised.

    ``stop``, once set, ends an index job between two batches: the job is handed back (queued
    again) for another run to finish. ``token`` names the holder (default: a new one), so that
    the caller can hand the job back itself. Raises only when the failure cannot be recorded
    (the database is gone): then the job's lease runs out and the sweeper takes it up.
    """
    jobs = Jobs(session.store)
    token = token or new_token()
    try:
        with Holder(jobs, token, session.settings.job_lease) as holder:
            if jobs.get(job_id).kind == "query":
                return run_query(session, holder, job_id) or jobs.get(job_id)
            job = take(session, holder, job_id)
            if job is None:
                return jobs.get(job_id)
            jobs.adopt(job_id, holder=token, lease_s=holder.lease_s)  # a run before this one died on them
            with holder.hold(Work(job_id, "index")):
                for batch in _plan(session, holder, job, sent=False):
                    if stop is not None and stop.is_set():
                        return jobs.hand_back(job_id, token)
                    index_batch(session, holder, job_id, batch)
            return jobs.get(job_id)
    except LandmarkError as error:
        return jobs.fail(job_id, str(error))
    except Exception as error:  # the job, not the caller, owns this failure; keep its reason
        return jobs.fail(job_id, f"{type(error).__name__}: {error}")
