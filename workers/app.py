"""The Celery app: broker, queues, routing and the delivery guarantees, built from settings.

Two queues. ``extract`` takes the steps of index jobs (planning, then one task per batch of
images); ``match`` takes query jobs. Each task goes to its queue by name (``TASK_QUEUES``).

No work is lost: a task is acknowledged only after it has run (``task_acks_late``); if the
process running it dies, it goes back to the queue at once (``task_reject_on_worker_lost``), and
keeps its task id, which lets it take its work back from the dead process's lease; a worker takes
one task at a time (``worker_prefetch_multiplier = 1``), so a dying worker holds no backlog. What
the broker cannot give back soon (on Redis, a task of a worker that vanished whole comes back only
after ``LANDMARK_BROKER_VISIBILITY_TIMEOUT``; a broker restarted without its data has lost its
tasks) the sweeper sends again once the work's lease has run out (``LANDMARK_JOB_LEASE``).

Stopping is bounded: ``landmark worker`` makes SIGTERM a soft shutdown, which gives the tasks at
hand ``LANDMARK_SHUTDOWN_GRACE`` seconds and then cancels them back to the queue.

``celery -A workers.app worker`` works as usual (settings from the environment); ``landmark worker``
is the same with the pool and concurrency chosen for the queues.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery

from landmark import config as cfg
from landmark.errors import ConfigError, LandmarkError
from landmark.settings import Settings
from landmark.store import redact

if TYPE_CHECKING:
    from landmark.jobs import Work

QUEUES = ("extract", "match")
PLAN_INDEX = "landmark.plan_index"
EXTRACT_BATCH = "landmark.extract_batch"
QUERY = "landmark.query"
TASK_QUEUES = {PLAN_INDEX: "extract", EXTRACT_BATCH: "extract", QUERY: "match"}
JOB_TASKS = {"index": PLAN_INDEX, "query": QUERY}

_senders: dict[Settings, Celery] = {}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for ``settings`` (a pure function)."""
    from kombu import Queue

    if not settings.broker_url:
        raise ConfigError("broker_url: no broker set (LANDMARK_BROKER_URL or --broker-url); queue workers need one")
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "task_queues": tuple(Queue(name, routing_key=name) for name in QUEUES),
        "task_routes": {name: {"queue": queue, "routing_key": queue} for name, queue in TASK_QUEUES.items()},
        "task_default_queue": "extract",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # With late acknowledgement, a task whose worker lost the broker would run twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_ignore_result": True,  # outcomes live in the jobs table, not a result backend
        "task_serializer": "json",
        "accept_content": ["json"],
        "worker_hijack_root_logger": False,
        # SIGTERM (made a cold shutdown by landmark worker) waits this long for the tasks at hand
        "worker_soft_shutdown_timeout": settings.shutdown_grace,
        "include": ["workers.tasks"],
    }
    if settings.broker_url.startswith(("redis://", "rediss://")):
        config["broker_transport_options"] = {"visibility_timeout": settings.broker_visibility_timeout}
    return config


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings`` (default: from the environment); ``app.landmark_settings`` keeps them."""
    app = Celery("landmark", set_as_current=False)
    if settings is None:
        # Resolved when first needed, not at import: importing this module opens nothing.
        app.add_defaults(lambda: celery_config(_environment_settings(app)))
    else:
        app.landmark_settings = settings
        app.conf.update(celery_config(settings))
    return app


def settings_of(app: Celery) -> Settings:
    return getattr(app, "landmark_settings", None) or _environment_settings(app)


def _environment_settings(app: Celery) -> Settings:
    if getattr(app, "landmark_settings", None) is None:
        app.landmark_settings = cfg.resolve(Settings)
    return app.landmark_settings


def enqueue(settings: Settings, work: Work) -> None:
    """Send ``work`` to its queue: a job's first step, or one batch of an index job. A broker that
    cannot be reached is a :class:`LandmarkError`. Bound to its settings, this is the sender the
    CLI, the API and the sweeper hand to :mod:`landmark.jobs`."""
    app = _senders.get(settings)
    if app is None:  # one app (and its connection pool) per broker for the process's life
        app = _senders.setdefault(settings, create_app(settings))
    name, args = (EXTRACT_BATCH, [work.job_id, work.batch]) if work.batch is not None else (
        JOB_TASKS[work.kind], [work.job_id])
    try:
        app.send_task(name, args=args, retry=True,
                      retry_policy={"max_retries": 3, "interval_start": 0.5, "interval_step": 1})
    except Exception as error:  # kombu raises its own and socket errors
        raise LandmarkError(f"cannot reach the broker at {redact(settings.broker_url)}: {error}") from error


def worker_argv(
    queues: Sequence[str], *, concurrency: int = 0, loglevel: str = "INFO", hostname: str | None = None
) -> list[str]:
    """``celery worker`` arguments for ``queues`` (a pure function).

    An ``extract``-only worker runs a pool of processes (``concurrency``, default one per core),
    each with its own store connection and extractor. A worker that takes ``match`` runs one
    task at a time in its own process (``solo``): the Dask cluster it keeps across jobs does the
    parallel work, and a cluster per pool process would only compete for the same cores.
    """
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise ConfigError(f"queues: unknown queue {unknown[0]!r}; valid queues: {', '.join(QUEUES)}"
                          if unknown else f"queues: name at least one of {', '.join(QUEUES)}")
    if concurrency < 0:
        raise ConfigError(f"concurrency: must be 0 or more, got {concurrency}")
    ordered = [q for q in QUEUES if q in queues]
    name = hostname or f"{'+'.join(ordered)}-{os.getpid()}@%h"
    argv = ["worker", f"--queues={','.join(ordered)}", f"--hostname={name}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle"]
    if "match" in ordered:
        if concurrency > 1:
            raise ConfigError(
                "concurrency: a worker that takes the match queue runs one job at a time (its Dask cluster "
                "does the parallel work); start more workers instead"
            )
        return [*argv, "--pool=solo"]
    return [*argv, "--pool=prefork", f"--concurrency={concurrency or os.cpu_count() or 1}"]


app = create_app()
