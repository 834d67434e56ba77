"""The ``device`` setting without a GPU: where it is read, what a CPU install imports, and the
local cluster of one worker per GPU (its choice of workers, not the GPUs themselves).

The device path itself is tested in ``test_gpu.py`` (marker ``gpu``: it needs PyTorch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from landmark import config as cfg
from landmark.errors import ConfigError
from landmark.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_is_a_setting_of_the_environment_and_the_command_line() -> None:
    assert cfg.resolve(Settings, environ={}).device == "cpu"
    settings = cfg.resolve(Settings, environ={"LANDMARK_DEVICE": "cuda", "LANDMARK_GPU_DESCRIPTORS": "int8"})
    assert (settings.device, settings.gpu_descriptors) == ("cuda", "int8")
    assert cfg.resolve(Settings, {"device": "cpu"}, environ={"LANDMARK_DEVICE": "cuda"}).device == "cpu"
    with pytest.raises(ConfigError, match="LANDMARK_DEVICE: 'gpu' is not one of cpu, cuda"):
        cfg.resolve(Settings, environ={"LANDMARK_DEVICE": "gpu"})
    from landmark.cli import build_parser

    for command in (["query", "q.jpg"], ["worker"], ["serve"]):
        assert build_parser().parse_args([*command, "--device", "cuda"]).device == "cuda"


def test_the_cpu_path_never_imports_torch() -> None:
    """A query's CPU path, end to end in one process, leaves PyTorch unimported; asking a worker
    for ``cuda`` where PyTorch or a GPU is missing is a clear error, not a crash."""
    script = """
import sys
import numpy as np
from landmark import session, search, clusters, kube, cli, matching
from landmark.contract import FeatureBatch, Features
rng = np.random.default_rng(0)
d = rng.normal(size=(50, 40)).astype(np.float32)
f = Features(rng.uniform(0, 100, (50, 2)), d / np.linalg.norm(d, axis=1, keepdims=True), (100, 100))
matching.match_batch(f, FeatureBatch.of([f, f], 40), matching.PRESETS["delf"])
assert "torch" not in sys.modules, "torch was imported"
from landmark.errors import ConfigError
try:
    search._on_gpu(FeatureBatch.of([f], 40), "float16")
except ConfigError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("device cuda: "), done.stdout


@pytest.mark.integration
def test_a_local_gpu_cluster_has_one_worker_per_gpu_each_seeing_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from distributed import Client

    from landmark import clusters

    real_import = builtins.__import__

    def without_dask_cuda(name: str, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the fallback's path
        if name.startswith("dask_cuda"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_dask_cuda)
    monkeypatch.setattr(clusters, "gpu_count", lambda: 2)
    with clusters.local_gpu_cluster() as cluster, Client(cluster) as client:
        client.wait_for_workers(2)
        seen = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["0", "1"]
        workers = client.scheduler_info()["workers"].values()
        assert all(w["resources"] == {"GPU": 1} and w["nthreads"] == 1 for w in workers)
