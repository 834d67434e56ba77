"""The deployment files, checked offline: compose's structure, every Kubernetes manifest of every
overlay (as kustomize builds it) against the Kubernetes schemas and the CRDs of KEDA and the
Dask operator, and every environment variable they set against the settings the code reads."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SHARED_DATA
from landmark import config as cfg
from landmark.extractors import registry
from landmark.clusters import THREAD_ENV
from landmark.kube import dask_cluster_spec
from landmark.matching import MatchConfig
from landmark.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
KEDA_CRDS = SHARED_DATA.parent / "schemas" / "keda"
KUBERNETES_VERSION = "1.30.0"
OVERLAYS = ["overlays/dev", "overlays/production", "batch"]
THIRD_PARTY_ENV = {
    # read by boto3 (and landmark.s3 for the endpoint and region)
    "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
    # read by the BLAS libraries under numpy: one thread per Dask worker
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
}


def code_settings() -> set[str]:
    """Every environment variable a landmark config class reads."""
    classes = [Settings, MatchConfig] + [
        registry.config_class(name) for name in registry.extractor_names(with_auto=False)
    ]
    return {f.metadata["env"] for c in classes for f in dataclasses.fields(c) if f.metadata.get("env")}


@cache
def built(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl") or shutil.which("kustomize")
    if kubectl is None:
        pytest.fail("kubectl (or kustomize) is needed to build the k8s/ overlays; install kubectl")
    command = [kubectl, "kustomize", str(ROOT / "k8s" / overlay)] if kubectl.endswith("kubectl") else [
        kubectl, "build", str(ROOT / "k8s" / overlay)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` -> the openAPIV3Schema of KEDA's and the Dask operator's CRDs."""
    import dask_kubernetes

    operator = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / \
        "dask-kubernetes-operator" / "crds"
    files = sorted(KEDA_CRDS.glob("*.yaml")) + sorted(operator.glob("*.yaml"))
    assert len(files) >= 6, files
    schemas = {}
    for path in files:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate(resource: dict[str, Any]) -> None:
    """Strictly against Kubernetes' schema, or against its CRD for a custom resource."""
    import jsonschema
    import kubernetes_validate

    key = (resource["apiVersion"], resource["kind"])
    if key in crd_schemas():
        jsonschema.validate(resource, {**crd_schemas()[key], "properties": {
            **crd_schemas()[key].get("properties", {}), "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object"}}})
        return
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    for path in (("jobTemplate", "spec", "template", "spec"), ("template", "spec")):
        node = spec
        for key in path:
            node = node.get(key, {})
        if node.get("containers"):
            return node["containers"]
    return []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates(overlay: str) -> None:
    resources = built(overlay)
    assert resources
    for resource in resources:
        validate(resource)


def test_each_worker_queue_scales_on_its_queue_from_zero_and_drains_before_it_stops() -> None:
    for overlay, trigger in (("overlays/dev", "redis"), ("overlays/production", "rabbitmq")):
        resources = {(r["kind"], r["metadata"]["name"]): r for r in built(overlay)}
        for queue in ("extract", "match"):
            name = f"landmark-worker-{queue}"
            deployment = resources[("Deployment", name)]
            pod = deployment["spec"]["template"]["spec"]
            assert pod["terminationGracePeriodSeconds"] >= 600, name
            assert f"--queues" in pod["containers"][0]["args"] and queue in pod["containers"][0]["args"]
            scaled = resources[("ScaledObject", name)]
            assert scaled["spec"]["scaleTargetRef"]["name"] == name and scaled["spec"]["minReplicaCount"] == 0
            (rule,) = scaled["spec"]["triggers"]
            assert rule["type"] == trigger
            assert rule["metadata"].get("listName", rule["metadata"].get("queueName")) == queue
            assert ("PodDisruptionBudget", name) in resources
            for container in pod["containers"]:
                assert container["resources"]["requests"] and container["resources"]["limits"]
        assert resources[("Deployment", "landmark-worker-match")]["spec"]["template"]["spec"][
            "serviceAccountName"] == "landmark-dask"


def test_the_standing_dask_cluster_is_the_spec_builder_s() -> None:
    resources = {(r["kind"], r["metadata"]["name"]): r for r in built("overlays/production")}
    config_map = resources[("ConfigMap", "landmark-config")]["data"]
    expected = dask_cluster_spec(cfg.resolve(Settings, environ=config_map), THREAD_ENV)
    standing = resources[("DaskCluster", "landmark-dask")]
    standing["metadata"].pop("namespace")
    expected["metadata"]["labels"] = standing["metadata"]["labels"]  # kustomize adds its own labels
    assert standing == expected
    assert config_map["LANDMARK_DASK_SCHEDULER"].startswith("tcp://landmark-dask-scheduler.")


def test_the_dask_cluster_spec_builder() -> None:
    settings = cfg.resolve(Settings, {"dask": "kubernetes", "dask_image": "registry/landmark:1", "dask_min_workers": 2,
                                      "dask_max_workers": 5, "dask_namespace": "ns", "dask_worker_memory": "8Gi"},
                           environ={})
    spec = dask_cluster_spec(settings, {**THREAD_ENV, "LANDMARK_EXTRACTOR": "delf"})
    validate(spec)
    assert (spec["metadata"]["name"], spec["metadata"]["namespace"]) == ("landmark-dask", "ns")
    assert spec["spec"]["worker"]["replicas"] == 2
    (worker,) = spec["spec"]["worker"]["spec"]["containers"]
    assert worker["image"] == "registry/landmark:1" and worker["args"][:2] == ["dask", "worker"]
    assert worker["resources"]["limits"] == {"cpu": "1", "memory": "8Gi"}
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in worker["env"]
    assert {"name": "LANDMARK_EXTRACTOR", "value": "delf"} in worker["env"]
    service = spec["spec"]["scheduler"]["service"]
    assert service["selector"] == {"dask.org/cluster-name": "landmark-dask", "dask.org/component": "scheduler"}
    with pytest.raises(Exception) as error:
        cfg.resolve(Settings, {"dask_min_workers": 3, "dask_max_workers": 2}, environ={})
    assert str(error.value) == ("LANDMARK_DASK_MIN_WORKERS, LANDMARK_DASK_MAX_WORKERS: need 0 <= min <= max and "
                                "max >= 1, got 3 and 2")


def test_compose_brings_up_the_whole_service_in_order() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "rabbitmq", "minio", "minio-init", "api", "worker-extract", "worker-match",
            "dask-scheduler", "dask-worker"} <= set(services)
    assert services["postgres"]["image"].startswith("pgvector/pgvector")
    ours = {name: s for name, s in services.items() if s.get("build") == "."}
    assert set(ours) == {"api", "worker-extract", "worker-match", "dask-scheduler", "dask-worker"}
    assert ours["worker-extract"]["command"][-2:] == ["--queues", "extract"]
    assert ours["worker-match"]["command"][-2:] == ["--queues", "match"]
    for name in ("postgres", "redis", "minio", "api", "dask-scheduler", "worker-extract", "worker-match"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in ours.items():
        assert service["env_file"] == "deploy/landmark.env"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            wanted = "service_completed_successfully" if dependency == "minio-init" else "service_healthy"
            assert condition == {"condition": wanted}, (name, dependency)
            assert condition["condition"] != "service_healthy" or "healthcheck" in services[dependency]
    assert ours["api"]["depends_on"].keys() >= {"postgres", "redis", "minio-init"}
    assert "8000:8000" in ours["api"]["ports"]
    volumes = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert volumes <= set(compose["volumes"]) and "postgres-data" in volumes
    assert "mb --ignore-existing local/landmark" in services["minio-init"]["command"][0]


def env_file() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / "deploy" / "landmark.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_every_variable_set_is_one_the_code_reads_and_every_setting_is_documented() -> None:
    known = code_settings() | THIRD_PARTY_ENV
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    set_names = set(env_file())
    for name in ("api", "worker-extract", "worker-match", "dask-scheduler", "dask-worker"):
        set_names |= set(compose["services"][name].get("environment", {}))
    for overlay in OVERLAYS:
        for resource in built(overlay):
            if resource["kind"] in ("ConfigMap", "Secret"):
                set_names |= set(resource.get("data", {})) | set(resource.get("stringData", {}))
            for container in containers(resource):
                if container.get("image", "").endswith(("landmark", "landmark:0.1.0")) or "landmark" in str(
                        container.get("image")):
                    set_names |= {e["name"] for e in container.get("env", [])}
            if resource["kind"] == "DaskCluster":
                for part in ("worker", "scheduler"):
                    for container in resource["spec"][part]["spec"]["containers"]:
                        set_names |= {e["name"] for e in container.get("env", [])}
            for rule in resource.get("spec", {}).get("triggers", []):
                for key, value in rule["metadata"].items():
                    if key.endswith("FromEnv"):
                        set_names.add(value)
    assert set_names - known == set()
    assert "LANDMARK_DATABASE_URL" in set_names and "LANDMARK_BROKER_URL" in set_names

    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(name for name in code_settings() if f"`{name}`" not in readme)
    assert undocumented == []
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile and "HEALTHCHECK" in dockerfile and "ARG TENSORFLOW" in dockerfile
    assert "LANDMARK_DELF_MODEL=${DELF_MODEL_URL:+/opt/models/delf}" in dockerfile


def test_the_gpu_variant_of_the_dask_workers() -> None:
    """``LANDMARK_DEVICE=cuda``: each worker pod asks for one GPU and tolerates GPU nodes' taint;
    the DaskCluster still validates against the operator's CRD, and its worker pod against
    Kubernetes' own Pod schema; nothing else changes."""
    base = {"dask": "kubernetes", "dask_image": "registry/landmark:gpu"}
    cpu = dask_cluster_spec(cfg.resolve(Settings, base, environ={}), THREAD_ENV)
    gpu = dask_cluster_spec(cfg.resolve(Settings, {**base, "device": "cuda"}, environ={}), THREAD_ENV)
    validate(gpu)
    pod = gpu["spec"]["worker"]["spec"]
    validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "landmark-dask-worker"}, "spec": pod})
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nvidia.com/gpu" not in str(gpu["spec"]["scheduler"])
    cpu_pod = cpu["spec"]["worker"]["spec"]
    assert "tolerations" not in cpu_pod and "nvidia.com/gpu" not in cpu_pod["containers"][0]["resources"]["limits"]
    gpu["spec"]["worker"]["spec"] = cpu_pod
    assert gpu == cpu
