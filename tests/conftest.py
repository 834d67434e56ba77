"""Shared fixtures: the shared data, an embedded Postgres, a Dask LocalCluster, an S3 server.

Integration fixtures start real servers on this machine (loopback or a Unix socket); tests that
use them carry the ``integration`` marker so ``pytest -m "not integration"`` runs the fast tier.
"""

from __future__ import annotations

import io
import json
import os
import socket
import uuid
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LANDMARKS = SHARED_DATA / "landmarks"


def landmark_groups() -> dict[str, list[Path]]:
    """``{group: [image paths]}`` from ``landmarks/groups.json``."""
    groups = json.loads((LANDMARKS / "groups.json").read_text())
    return {group: [LANDMARKS / group / name for name in names] for group, names in groups.items()}


def jpeg_bytes(array: np.ndarray, **save: object) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=92, **save)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (LANDMARKS / "groups.json").is_file():
        pytest.fail(f"shared test data missing: expected {LANDMARKS} beside the project root")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of an embedded PostgreSQL server shared by the whole test session."""
    from landmark.embedded import embedded_url

    return embedded_url(tmp_path_factory.mktemp("pg"))


@pytest.fixture()
def database_url(pg_server: str) -> str:
    """A fresh, empty database on the embedded server, for one test."""
    import psycopg2

    name = "t_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(pg_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    admin.close()
    return pg_server.replace("/postgres?", f"/{name}?")


@pytest.fixture(scope="session")
def dask_cluster_address() -> str:
    """Scheduler address of a real Dask LocalCluster (2 worker processes)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@pytest.fixture()
def workerless_scheduler() -> str:
    """A Dask scheduler with no workers: a query sent there waits for ever, so it can be caught mid-way."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 server (moto's) on loopback; the AWS settings point at it for the session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    from landmark import s3

    s3._client.cache_clear()
    yield endpoint
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    s3._client.cache_clear()


@pytest.fixture()
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the S3 server."""
    from landmark import s3

    name = "b-" + uuid.uuid4().hex[:10]
    s3.client().create_bucket(Bucket=name)
    return name


# -- brokers and queue workers --------------------------------------------------------------

BROKER_PORTS = {"redis": 6379, "rabbitmq": 5672}
SKIP_BROKERS = "LANDMARK_TEST_SKIP_BROKERS"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _missing(broker: str, how: str) -> None:
    """No such broker here: fail, naming what is missing, unless it was left out on purpose."""
    if broker in os.environ.get(SKIP_BROKERS, "").split(","):
        pytest.skip(f"{broker} left out by {SKIP_BROKERS}")
    pytest.fail(f"{broker} is needed by the queue tests and none is running on 127.0.0.1:{BROKER_PORTS[broker]}, "
                f"nor could one be started: {how} (or set {SKIP_BROKERS}={broker} to leave these tests out)")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Redis on loopback: the machine's own, else one started for the session."""
    import shutil
    import subprocess
    import time

    if _listening(BROKER_PORTS["redis"]):
        yield "redis://127.0.0.1:6379/7"
        return
    if not shutil.which("redis-server"):
        _missing("redis", "install redis-server (Debian: apt install redis-server)")
    port = _free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
                              stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not _listening(port):
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            _missing("redis", f"redis-server did not start on port {port}")
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/7"
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """A RabbitMQ on loopback: the machine's own, else one started (as a daemon) for the session."""
    import shutil
    import subprocess
    import time

    if not _listening(BROKER_PORTS["rabbitmq"]):
        if not shutil.which("rabbitmq-server"):
            _missing("rabbitmq", "install rabbitmq-server (Debian: apt install rabbitmq-server)")
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True, timeout=60)
        deadline = time.monotonic() + 90
        while not _listening(BROKER_PORTS["rabbitmq"]):
            if time.monotonic() > deadline:
                _missing("rabbitmq", "rabbitmq-server -detached did not open port 5672 within 90 s")
            time.sleep(0.5)
    return "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """Each queue test runs once per broker; the queues start empty."""
    url = request.getfixturevalue(f"{request.param}_url")
    from landmark import config as cfg
    from landmark.settings import Settings
    from workers.app import create_app

    app = create_app(cfg.resolve(Settings, {"broker_url": url}, environ={}))
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=3)
        app.control.purge(connection=connection)  # leftovers of an interrupted run name jobs gone long ago
    app.close()
    return url
