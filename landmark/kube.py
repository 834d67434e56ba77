"""Dask on Kubernetes through the dask-kubernetes operator (``LANDMARK_DASK=kubernetes``).

:func:`dask_cluster_spec` builds the ``DaskCluster`` resource (``kubernetes.dask.org/v1``) that
the match worker asks the operator for; it is a pure function, so the manifest can be checked
without a cluster (``tests/test_deploy.py`` validates it against the operator's CRD).
:func:`kube_cluster` creates that cluster, or connects to it when it already runs, and lets
the operator scale its workers between ``min_workers`` and ``max_workers`` with the work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config import setting
from .errors import ConfigError
from .search import THREAD_ENV

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788


@dataclass(frozen=True)
class KubeDaskConfig:
    """The Dask cluster a match worker runs on Kubernetes."""

    image: str = setting("", env="LANDMARK_DASK_IMAGE", help="container image of the Dask scheduler and workers")
    name: str = setting("landmark-dask", env="LANDMARK_DASK_CLUSTER", help="name of the DaskCluster resource")
    namespace: str = setting(
        "", env="LANDMARK_DASK_NAMESPACE", help="namespace of the DaskCluster (empty: the pod's own)"
    )
    min_workers: int = setting(1, env="LANDMARK_DASK_MIN_WORKERS", help="fewest Dask workers kept")
    max_workers: int = setting(8, env="LANDMARK_DASK_MAX_WORKERS", help="most Dask workers the work may scale to")
    worker_cpu: str = setting("1", env="LANDMARK_DASK_WORKER_CPU", help="CPU request and limit of a worker")
    worker_memory: str = setting("4Gi", env="LANDMARK_DASK_WORKER_MEMORY", help="memory request and limit of a worker")

    def validate(self) -> None:
        if not self.image:
            raise ConfigError("LANDMARK_DASK_IMAGE: the Dask workers' container image must be set for LANDMARK_DASK=kubernetes")
        if not 0 <= self.min_workers <= self.max_workers or self.max_workers < 1:
            raise ConfigError(
                f"LANDMARK_DASK_MIN_WORKERS, LANDMARK_DASK_MAX_WORKERS: need 0 <= min <= max and max >= 1, "
                f"got {self.min_workers} and {self.max_workers}"
            )


def dask_cluster_spec(config: KubeDaskConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource for ``config``; ``env`` is added to every container."""
    environment = [{"name": k, "value": v} for k, v in {**THREAD_ENV, **(env or {})}.items()]
    labels = {"app.kubernetes.io/name": "landmark", "app.kubernetes.io/component": "dask"}
    worker_container = {
        "name": "worker",
        "image": config.image,
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "1",
                 "--dashboard-address", str(WORKER_DASHBOARD_PORT)],
        "env": environment,
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": config.worker_cpu, "memory": config.worker_memory},
            "limits": {"cpu": config.worker_cpu, "memory": config.worker_memory},
        },
    }
    probe = {"httpGet": {"port": "http-dashboard", "path": "/health"}, "initialDelaySeconds": 5, "periodSeconds": 10}
    scheduler_container = {
        "name": "scheduler",
        "image": config.image,
        "args": ["dask", "scheduler", "--port", str(SCHEDULER_PORT), "--dashboard-address", f":{DASHBOARD_PORT}"],
        "env": environment,
        "ports": [
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "initialDelaySeconds": 15},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
    }
    security = {"runAsNonRoot": True, "runAsUser": 10001}
    metadata: dict[str, Any] = {"name": config.name, "labels": labels}
    if config.namespace:
        metadata["namespace"] = config.namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "worker": {
                "replicas": config.min_workers,
                "spec": {"securityContext": security, "containers": [worker_container]},
            },
            "scheduler": {
                "spec": {"securityContext": security, "containers": [scheduler_container]},
                "service": {
                    "type": "ClusterIP",
                    "selector": {"dask.org/cluster-name": config.name, "dask.org/component": "scheduler"},
                    "ports": [
                        {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
                        {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                         "targetPort": "http-dashboard"},
                    ],
                },
            },
        },
    }


def kube_cluster(config: KubeDaskConfig) -> Any:
    """A running ``KubeCluster`` for ``config`` (created, or the one already there), adapting."""
    from dask_kubernetes.operator import KubeCluster

    kwargs: dict[str, Any] = {"custom_cluster_spec": dask_cluster_spec(config), "shutdown_on_close": False}
    if config.namespace:
        kwargs["namespace"] = config.namespace
    cluster = KubeCluster(**kwargs)
    cluster.adapt(minimum=config.min_workers, maximum=config.max_workers)
    return cluster
