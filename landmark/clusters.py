"""Where query matching runs: a Dask client for the settings, and one core per worker task.

``LANDMARK_DASK_SCHEDULER`` names a running scheduler; else ``LANDMARK_DASK=kubernetes`` asks the
dask-kubernetes operator for a ``DaskCluster`` (:mod:`landmark.kube`); else a local cluster of
``LANDMARK_DASK_WORKERS`` processes starts with the client and stops with it; with
``LANDMARK_DEVICE=cuda``, one worker process per GPU instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError
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
        if settings.device == "cuda":
            cluster = local_gpu_cluster()
        else:
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


def local_gpu_cluster() -> Any:
    """One worker process (one thread) per GPU of this machine, each seeing only its own GPU
    (``CUDA_VISIBLE_DEVICES``) and offering the resource ``GPU=1``: dask-cuda's
    ``LocalCUDACluster`` where it is installed, else the same built from Nannies. (A plain
    ``LocalCluster`` would start every worker on the first GPU: it sets one environment for all.)"""
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        LocalCUDACluster = None  # noqa: N806
    if LocalCUDACluster is not None:
        return LocalCUDACluster(threads_per_worker=1, resources={"GPU": 1}, dashboard_address=None,
                                silence_logs=logging.WARNING)
    from distributed import Nanny, Scheduler, SpecCluster

    worker = {"nthreads": 1, "host": "127.0.0.1", "resources": {"GPU": 1}, "dashboard": False}
    workers = {f"gpu-{i}": {"cls": Nanny, "options": {**worker, "env": {"CUDA_VISIBLE_DEVICES": str(i)}}}
               for i in range(gpu_count())}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False, "dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.WARNING)


def gpu_count() -> int:
    """CUDA GPUs this machine shows PyTorch; a clear error when there are none or no PyTorch."""
    try:
        import torch
    except ImportError:
        raise ConfigError("device cuda: PyTorch is not installed; install it with: pip install 'landmark[gpu]'") from None
    count = torch.cuda.device_count()
    if count == 0:
        raise ConfigError("device cuda: PyTorch sees no CUDA GPU on this machine")
    return count
