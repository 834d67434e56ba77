"""Where query matching runs: a Dask client for the settings, and one core per worker task.

``LANDMARK_DASK_SCHEDULER`` names a running scheduler; else ``LANDMARK_DASK=kubernetes`` asks the
dask-kubernetes operator for a ``DaskCluster`` (:mod:`landmark.kube`); else a local cluster of
``LANDMARK_DASK_WORKERS`` processes starts with the client and stops with it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from .settings import Settings

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Set in each worker process before it starts: one task, one core (Dask already runs one task
per core; a BLAS pool per task on top would oversubscribe them)."""


@contextlib.contextmanager
def dask_client(settings: Settings) -> Iterator[Any]:
    """A Dask client: to ``settings.dask_scheduler`` if set, else to the Kubernetes DaskCluster
    (``settings.dask == "kubernetes"``), else to a new local cluster."""
    import dask
    from distributed import Client, LocalCluster

    if settings.dask_scheduler:
        with Client(settings.dask_scheduler, timeout="30s") as client:
            yield client
        return
    if settings.dask == "kubernetes":
        from .kube import kube_cluster

        # The cluster outlives this process (shutdown_on_close=False): the next worker reuses it.
        with Client(kube_cluster(settings, THREAD_ENV)) as client:
            yield client
        return
    if not logging.getLogger().isEnabledFor(logging.INFO):
        # distributed logs every worker's start and stop at INFO; that is noise unless asked for.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": THREAD_ENV}):
        cluster = LocalCluster(
            n_workers=settings.local_workers, threads_per_worker=1, processes=True,
            dashboard_address=None, silence_logs=logging.WARNING,
        )
    with cluster, Client(cluster) as client:
        client.run(_pin_opencv_threads)
        yield client


def _pin_opencv_threads() -> None:
    """OpenCV's thread pool down to one thread, as BLAS is by ``THREAD_ENV``."""
    import cv2

    cv2.setNumThreads(1)
