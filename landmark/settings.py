"""Where things run: the store, the Dask cluster, and the defaults of a job.

With nothing set, everything runs on this machine: an embedded Postgres under ``home`` and a
local Dask cluster. Each field names the environment variable that overrides its default;
arguments override both (see :func:`landmark.config.resolve`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import setting
from .errors import ConfigError
from .images import MAX_PIXELS
from .policy import SourcePolicy


def default_home() -> str:
    import platformdirs

    return platformdirs.user_data_dir("landmark", appauthor=False)


@dataclass(frozen=True)
class Settings:
    """Deployment settings."""

    home: str = setting(
        "", env="LANDMARK_HOME", help="directory for the embedded database and local state "
        "(empty: the user's data directory)"
    )
    database_url: str = setting(
        "", env="LANDMARK_DATABASE_URL",
        help="PostgreSQL URL (postgresql://user:pass@host/db); empty: an embedded server under HOME",
    )
    dask: Literal["local", "kubernetes"] = setting(
        "local", env="LANDMARK_DASK",
        help="where query matching runs without DASK_SCHEDULER: local (a LocalCluster) or kubernetes (a "
        "DaskCluster through the dask-kubernetes operator, LANDMARK_DASK_* settings)",
    )
    dask_scheduler: str = setting(
        "", env="LANDMARK_DASK_SCHEDULER",
        help="address of a running Dask scheduler (tcp://host:8786); empty: a local cluster",
    )
    dask_workers: int = setting(
        0, env="LANDMARK_DASK_WORKERS", help="worker processes of the local cluster (0: one per core)"
    )
    dask_image: str = setting(
        "", env="LANDMARK_DASK_IMAGE", cli=False,
        help="kubernetes: container image of the Dask scheduler and workers",
    )
    dask_cluster: str = setting(
        "landmark-dask", env="LANDMARK_DASK_CLUSTER", cli=False, help="kubernetes: name of the DaskCluster resource"
    )
    dask_namespace: str = setting(
        "", env="LANDMARK_DASK_NAMESPACE", cli=False,
        help="kubernetes: namespace of the DaskCluster (empty: the pod's own)",
    )
    dask_min_workers: int = setting(
        1, env="LANDMARK_DASK_MIN_WORKERS", cli=False, help="kubernetes: fewest Dask workers kept"
    )
    dask_max_workers: int = setting(
        8, env="LANDMARK_DASK_MAX_WORKERS", cli=False, help="kubernetes: most Dask workers the work may scale to"
    )
    dask_worker_cpu: str = setting(
        "1", env="LANDMARK_DASK_WORKER_CPU", cli=False, help="kubernetes: CPU request and limit of a Dask worker"
    )
    dask_worker_memory: str = setting(
        "4Gi", env="LANDMARK_DASK_WORKER_MEMORY", cli=False,
        help="kubernetes: memory request and limit of a Dask worker",
    )
    partition_size: int = setting(
        256, env="LANDMARK_PARTITION_SIZE", help="stored images per Dask matching task"
    )
    device: Literal["cpu", "cuda"] = setting(
        "cpu", env="LANDMARK_DEVICE",
        help="where query matching runs: cpu, or cuda (each Dask worker holds its partitions in the memory of one "
        "GPU and matches and verifies them there; needs landmark[gpu] on the workers)",
    )
    gpu_descriptors: Literal["float16", "int8"] = setting(
        "float16", env="LANDMARK_GPU_DESCRIPTORS", cli=False,
        help="device cuda: descriptors held in GPU memory as float16 (the store's own values) or int8 (half the "
        "memory; products move by ~1e-3, a few putative matches change)",
    )
    results: str = setting(
        "", env="LANDMARK_RESULTS",
        help="where jobs write their results: a directory or an s3:// prefix (empty: HOME/results)",
    )
    extractor: str = setting(
        "auto", env="LANDMARK_EXTRACTOR",
        help="feature extractor: auto, aliked, delf or rootsift (auto: the store's, else DELF if its model "
        "loads, else ALIKED, else RootSIFT)",
    )
    broker_url: str = setting(
        "", env="LANDMARK_BROKER_URL",
        help="Celery broker for jobs (redis://host:6379/0 or amqp://user:pass@host:5672//); "
        "empty: jobs run in the process that submits them",
    )
    extract_batch: int = setting(
        16, env="LANDMARK_EXTRACT_BATCH", help="images per extract task when an index job fans out"
    )
    broker_visibility_timeout: int = setting(
        600, env="LANDMARK_BROKER_VISIBILITY_TIMEOUT", cli=False,
        help="Redis only: seconds before a task taken by a worker that vanished is handed out again",
    )
    job_lease: float = setting(
        90.0, env="LANDMARK_JOB_LEASE", cli=False,
        help="seconds a running batch or query job is held without a heartbeat before the sweeper hands "
        "it to another worker (heartbeats and sweeps come every third of it)",
    )
    job_retries: int = setting(
        5, env="LANDMARK_JOB_RETRIES", cli=False,
        help="retries of a step that failed for a passing reason (S3, database or broker unreachable), with "
        "backoff; a unit of work is given up after this many attempts and 3 more (lost workers)",
    )
    shutdown_grace: float = setting(
        30.0, env="LANDMARK_SHUTDOWN_GRACE", cli=False,
        help="seconds a stopping server or worker gives the job at hand to finish before handing it back",
    )
    api_token: str = setting(
        "", env="LANDMARK_API_TOKEN", cli=False,
        help="bearer token the HTTP API requires on every endpoint but /health (empty: no auth)",
    )
    upload_limit_mb: float = setting(
        20.0, env="LANDMARK_UPLOAD_LIMIT_MB", cli=False, help="largest image the HTTP API accepts, in MB"
    )
    allowed_sources: tuple[str, ...] = setting(
        (), env="LANDMARK_ALLOWED_SOURCES", cli=False,
        help="what requests to the HTTP API may name as sources: comma-separated absolute directories and "
        "s3://bucket/ or s3://bucket/prefix/ entries (empty: nothing; uploads still work)",
    )
    max_image_pixels: int = setting(
        MAX_PIXELS, env="LANDMARK_MAX_IMAGE_PIXELS",
        help="largest image decoded, in pixels (width x height); a larger one is refused before decoding",
    )

    def validate(self) -> None:
        if self.dask_workers < 0:
            raise ConfigError(f"dask_workers: must be 0 or more, got {self.dask_workers}")
        if self.dask == "kubernetes" and not self.dask_image:
            raise ConfigError(
                "LANDMARK_DASK_IMAGE: the Dask workers' container image must be set for LANDMARK_DASK=kubernetes"
            )
        if not 0 <= self.dask_min_workers <= self.dask_max_workers or self.dask_max_workers < 1:
            raise ConfigError(
                f"LANDMARK_DASK_MIN_WORKERS, LANDMARK_DASK_MAX_WORKERS: need 0 <= min <= max and max >= 1, "
                f"got {self.dask_min_workers} and {self.dask_max_workers}"
            )
        if self.partition_size < 1:
            raise ConfigError(f"partition_size: must be at least 1, got {self.partition_size}")
        if self.extract_batch < 1:
            raise ConfigError(f"extract_batch: must be at least 1, got {self.extract_batch}")
        if self.broker_url and not self.broker_url.startswith(("redis://", "rediss://", "amqp://", "amqps://")):
            raise ConfigError(
                f"broker_url: {self.broker_url!r} is not a Redis (redis://) or RabbitMQ (amqp://) URL"
            )
        if self.job_lease < 1:
            raise ConfigError(f"job_lease: must be at least 1 second, got {self.job_lease:g}")
        if self.job_retries < 0:
            raise ConfigError(f"job_retries: must be 0 or more, got {self.job_retries}")
        if self.shutdown_grace < 0:
            raise ConfigError(f"shutdown_grace: must be 0 or more seconds, got {self.shutdown_grace:g}")
        if self.upload_limit_mb <= 0:
            raise ConfigError(f"upload_limit_mb: must be more than 0, got {self.upload_limit_mb}")
        if self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels: must be at least 1, got {self.max_image_pixels}")
        _ = self.source_policy  # a bad entry fails here, at start-up

    @property
    def home_path(self) -> Path:
        return Path(os.path.expanduser(self.home or default_home()))

    @property
    def results_location(self) -> str:
        return self.results or str(self.home_path / "results")

    @property
    def source_policy(self) -> SourcePolicy:
        """What requests to the HTTP API may name (:mod:`landmark.policy`)."""
        return SourcePolicy.parse(self.allowed_sources)

    @property
    def job_attempts(self) -> int:
        """Claims of one unit of work before it is given up: its retries and a few lost workers."""
        return self.job_retries + 3

    @property
    def local_workers(self) -> int:
        return self.dask_workers or os.cpu_count() or 1
