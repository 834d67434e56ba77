"""Thin boto3 adapter for ``s3://bucket/key`` URIs.

Endpoint, region and credentials come from the standard AWS settings (``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, profiles...), so any S3-compatible server works.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

from .errors import SourceError, TransientError


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    if not is_s3(uri):
        raise SourceError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise SourceError(f"{uri}: no bucket in S3 URI")
    return bucket, key


@functools.lru_cache(maxsize=4)
def _client(endpoint: str | None, region: str | None):  # noqa: ANN202 - boto3 client type
    import boto3
    from botocore.config import Config

    # Adaptive retries ride out a flaky endpoint; boto3 reads AWS_ENDPOINT_URL itself too,
    # but passing it keeps older botocore versions working.
    config = Config(retries={"max_attempts": 5, "mode": "adaptive"})
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def client():  # noqa: ANN201
    return _client(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                   os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))


def _error_reason(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code, message = err.get("Code", ""), err.get("Message", "")
        if code in ("404", "NoSuchKey", "NotFound"):
            return "no such object"
        if code == "NoSuchBucket":
            return "no such bucket"
        return f"{code}: {message}".strip(": ")
    return str(error)


# Codes S3 and compatible servers answer when asked to come back later.
_TRANSIENT_CODES = frozenset({
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown", "Throttling",
    "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
})


def failure(uri: str, action: str, error: Exception) -> SourceError:
    """The error to raise for ``error``: a :class:`TransientError` when trying again may work."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    response = getattr(error, "response", None)
    code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
    transient = isinstance(error, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)) or (
        code in _TRANSIENT_CODES
    )
    kind = TransientError if transient else SourceError
    return kind(f"{uri}: {action} ({_error_reason(error)})")


def read(uri: str, *, limit: int | None = None) -> bytes:
    """The object's bytes; with ``limit``, an object larger than that is refused unread."""
    bucket, key = split(uri)
    try:
        response = client().get_object(Bucket=bucket, Key=key)
        if limit is not None and response.get("ContentLength", 0) > limit:
            response["Body"].close()
            raise too_large(uri, limit)
        data = response["Body"].read() if limit is None else response["Body"].read(limit + 1)
    except SourceError:
        raise
    except Exception as error:  # botocore raises many unrelated types
        raise failure(uri, "cannot read from S3", error) from error
    if limit is not None and len(data) > limit:
        raise too_large(uri, limit)
    return data


def too_large(uri: str, limit: int) -> SourceError:
    """The error for a file or object over ``limit`` bytes (local files share it)."""
    return SourceError(f"{uri}: too large to read (over {limit} bytes)")


def write(uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    bucket, key = split(uri)
    if not key or key.endswith("/"):
        raise SourceError(f"{uri}: an S3 object URI needs a key, not a prefix")
    try:
        client().put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except Exception as error:
        raise failure(uri, "cannot write to S3", error) from error


def delete(uri: str) -> None:
    bucket, key = split(uri)
    try:
        client().delete_object(Bucket=bucket, Key=key)
    except Exception as error:
        raise failure(uri, "cannot delete from S3", error) from error


def exists(uri: str) -> bool:
    bucket, key = split(uri)
    try:
        client().head_object(Bucket=bucket, Key=key)
        return True
    except Exception as error:
        if _error_reason(error) in ("no such object",):
            return False
        raise failure(uri, "cannot reach S3", error) from error


def list_keys(uri: str) -> Iterator[str]:
    """``s3://`` URIs of every object under the prefix of ``uri``, in key order."""
    bucket, prefix = split(uri)
    try:
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                yield f"s3://{bucket}/{item['Key']}"
    except SourceError:
        raise
    except Exception as error:
        raise failure(uri, "cannot list S3 prefix", error) from error
