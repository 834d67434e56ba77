"""The queue's configuration, worker command lines, retry timing and error sorting (no servers)."""

from __future__ import annotations

import pytest

from landmark import config as cfg
from landmark.errors import ConfigError, SourceError, TransientError
from landmark.settings import Settings
from workers.app import EXTRACT_BATCH, PLAN_INDEX, QUERY, celery_config, create_app, worker_argv
from workers.tasks import BACKOFF_CAP_S, backoff_seconds


def settings(**values: object) -> Settings:
    return cfg.resolve(Settings, values, environ={})


def test_delivery_guarantees_and_routes() -> None:
    config = celery_config(settings(broker_url="redis://127.0.0.1:6379/0", broker_visibility_timeout=45))
    assert (config["task_acks_late"], config["task_reject_on_worker_lost"], config["worker_prefetch_multiplier"]) == (
        True, True, 1)
    assert config["task_routes"][PLAN_INDEX]["queue"] == "extract"
    assert config["task_routes"][EXTRACT_BATCH]["queue"] == "extract"
    assert config["task_routes"][QUERY]["queue"] == "match"
    assert [q.name for q in config["task_queues"]] == ["extract", "match"]
    assert config["broker_transport_options"] == {"visibility_timeout": 45}
    assert config["worker_soft_shutdown_timeout"] == 30.0  # LANDMARK_SHUTDOWN_GRACE: SIGTERM's bound
    assert "broker_transport_options" not in celery_config(settings(broker_url="amqp://guest:guest@localhost//"))


def test_an_app_routes_each_task_to_its_queue() -> None:
    app = create_app(settings(broker_url="amqp://guest:guest@localhost//"))
    router = app.amqp.router
    assert router.route({}, QUERY)["queue"].name == "match"
    assert router.route({}, EXTRACT_BATCH)["queue"].name == "extract"
    assert app.landmark_settings.broker_url == "amqp://guest:guest@localhost//"


def test_no_broker_and_bad_broker_urls_are_errors() -> None:
    with pytest.raises(ConfigError) as error:
        celery_config(settings())
    assert str(error.value) == (
        "broker_url: no broker set (LANDMARK_BROKER_URL or --broker-url); queue workers need one"
    )
    with pytest.raises(ConfigError) as error:
        settings(broker_url="http://localhost:6379")
    assert str(error.value) == "broker_url: 'http://localhost:6379' is not a Redis (redis://) or RabbitMQ (amqp://) URL"


def test_worker_command_lines() -> None:
    extract = worker_argv(["extract"], concurrency=3, hostname="w@h")
    assert extract == ["worker", "--queues=extract", "--hostname=w@h", "--loglevel=INFO", "--without-gossip",
                       "--without-mingle", "--pool=prefork", "--concurrency=3"]
    both = worker_argv(["match", "extract"], hostname="w@h")
    assert "--queues=extract,match" in both and both[-1] == "--pool=solo"
    with pytest.raises(ConfigError) as error:
        worker_argv(["match"], concurrency=4)
    assert str(error.value).startswith("concurrency: a worker that takes the match queue runs one job at a time")
    with pytest.raises(ConfigError) as error:
        worker_argv(["extract", "crop"])
    assert str(error.value) == "queues: unknown queue 'crop'; valid queues: extract, match"
    with pytest.raises(ConfigError):
        worker_argv([])


def test_backoff_doubles_up_to_a_cap_with_jitter() -> None:
    assert [backoff_seconds(n, jitter=lambda: 1.0) for n in range(4)] == [1.0, 2.0, 4.0, 8.0]
    assert [backoff_seconds(n, jitter=lambda: 0.0) for n in range(3)] == [0.5, 1.0, 2.0]
    assert backoff_seconds(30, jitter=lambda: 1.0) == BACKOFF_CAP_S


def test_s3_failures_are_sorted_into_transient_and_not() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    from landmark.s3 import failure

    def client_error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}}, "GetObject")

    down = failure("s3://b/k", "cannot read from S3", EndpointConnectionError(endpoint_url="http://s3"))
    assert isinstance(down, TransientError)
    assert str(down) == 's3://b/k: cannot read from S3 (Could not connect to the endpoint URL: "http://s3")'
    assert isinstance(failure("s3://b/k", "x", client_error("SlowDown")), TransientError)
    assert isinstance(failure("s3://b/k", "x", client_error("503")), TransientError)
    missing = failure("s3://b/k", "cannot read from S3", client_error("NoSuchKey"))
    assert type(missing) is SourceError and str(missing) == "s3://b/k: cannot read from S3 (no such object)"
    assert type(failure("s3://b/k", "x", client_error("AccessDenied"))) is SourceError
