"""Dask on Kubernetes through the dask-kubernetes operator (``LANDMARK_DASK=kubernetes``).

:func:`dask_cluster_spec` builds the ``DaskCluster`` resource (``kubernetes.dask.org/v1``) that
the match worker asks the operator for; it is a pure function, so the manifest can be checked
without a cluster (``tests/test_deploy.py`` validates it against the operator's CRD).
:func:`kube_cluster` creates that cluster, or connects to it when it already runs, and lets
the operator scale its workers between ``min_workers`` and ``max_workers`` with the work.
With ``LANDMARK_DEVICE=cuda`` each worker pod asks for one GPU (:func:`gpu_worker`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .settings import Settings

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788


def dask_cluster_spec(settings: Settings, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``DaskCluster`` resource of ``settings`` (its ``dask_*`` fields); ``env`` is set in
    every container."""
    environment = [{"name": k, "value": v} for k, v in (env or {}).items()]
    labels = {"app.kubernetes.io/name": "landmark", "app.kubernetes.io/component": "dask"}
    worker_container = {
        "name": "worker",
        "image": settings.dask_image,
        "args": ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", "1",
                 "--dashboard-address", str(WORKER_DASHBOARD_PORT)],
        "env": environment,
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": settings.dask_worker_cpu, "memory": settings.dask_worker_memory},
            "limits": {"cpu": settings.dask_worker_cpu, "memory": settings.dask_worker_memory},
        },
    }
    probe = {"httpGet": {"port": "http-dashboard", "path": "/health"}, "initialDelaySeconds": 5, "periodSeconds": 10}
    scheduler_container = {
        "name": "scheduler",
        "image": settings.dask_image,
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
    worker_pod: dict[str, Any] = {"securityContext": security, "containers": [worker_container]}
    if settings.device == "cuda":
        worker_pod = gpu_worker(worker_pod)
    metadata: dict[str, Any] = {"name": settings.dask_cluster, "labels": labels}
    if settings.dask_namespace:
        metadata["namespace"] = settings.dask_namespace
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": metadata,
        "spec": {
            "worker": {"replicas": settings.dask_min_workers, "spec": worker_pod},
            "scheduler": {
                "spec": {"securityContext": security, "containers": [scheduler_container]},
                "service": {
                    "type": "ClusterIP",
                    "selector": {"dask.org/cluster-name": settings.dask_cluster, "dask.org/component": "scheduler"},
                    "ports": [
                        {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
                        {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT,
                         "targetPort": "http-dashboard"},
                    ],
                },
            },
        },
    }


GPU_RESOURCE = "nvidia.com/gpu"
"""The extended resource NVIDIA's device plugin gives a node's GPUs."""


def gpu_worker(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the Dask worker's pod spec ``pod`` whose worker container has one GPU: ``1`` of
    :data:`GPU_RESOURCE` in its limits (Kubernetes sets an extended resource's request to its
    limit), and a toleration of the ``nvidia.com/gpu`` taint that GPU node pools usually carry."""
    pod = copy.deepcopy(dict(pod))
    for container in pod["containers"]:
        if container["name"] == "worker":
            container["resources"]["limits"][GPU_RESOURCE] = "1"
    toleration = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    pod["tolerations"] = [*pod.get("tolerations", []), toleration]
    return pod


def kube_cluster(settings: Settings, env: Mapping[str, str]) -> Any:
    """A running ``KubeCluster`` for ``settings`` (created, or the one already there), adapting."""
    from dask_kubernetes.operator import KubeCluster

    spec = dask_cluster_spec(settings, env)
    kwargs: dict[str, Any] = {"custom_cluster_spec": spec, "shutdown_on_close": False}
    if settings.dask_namespace:
        kwargs["namespace"] = settings.dask_namespace
    cluster = KubeCluster(**kwargs)
    cluster.adapt(minimum=settings.dask_min_workers, maximum=settings.dask_max_workers)
    return cluster
