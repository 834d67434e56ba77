"""The HTTP API: submit jobs, follow them, fetch their results. ``landmark serve`` runs it.

=======================================  ============================================================
``POST /jobs``                           JSON ``{"kind": "index", "sources": [...]}`` or
                                         ``{"kind": "query", "image": URI, "top_k", "add", "matching"}``;
                                         or a multipart form with an ``image`` file (a query by
                                         upload) and optional ``top_k``, ``add``, ``matching``
                                         (a JSON object). 202 with the job.
``GET /jobs/{id}``                       the job: status, progress, error, result locations
``GET /jobs/{id}/result.txt``, ``.json`` a query job's ranking (409 until it has succeeded), or
``.html``                                its results page
``GET /``                                the search page (:mod:`landmark.search_page`)
``GET /health``                          database, broker and Dask reachable or not, and whether the
                                         server can run jobs (``runner``): 200, or 503 if not
=======================================  ============================================================

Every error answers ``{"detail": "<message>"}``, the message naming the input at fault. With
``LANDMARK_API_TOKEN`` set, every endpoint but ``/health`` and the search page's own files needs
``Authorization: Bearer <token>``
(``/openapi.json`` included; ``/docs`` and ``/redoc`` are then off, as a browser cannot send it).
Bodies are limited as they arrive (:mod:`landmark.api_input`): JSON to 1 MB and 1000 sources, an
upload to ``LANDMARK_UPLOAD_LIMIT_MB``.

A request may name only sources inside ``LANDMARK_ALLOWED_SOURCES`` (:mod:`landmark.policy`;
others answer 403), and its job carries that policy to whoever runs it.

Uploads are stored under ``<results>/uploads/<id>/`` so that a worker on another host can read
them when the results location is shared (an ``s3://`` prefix). A query by upload is not added
to the store unless ``add`` is true: an uploaded photo is a question, not part of the collection.

With no broker, jobs run inside this server, one at a time, on a thread with its own session
(:class:`~landmark.jobs.Runner`). Either way the server runs a sweeper (:class:`~landmark.jobs.Sweeper`),
which resumes work whose lease ran out, including what a server stopped or killed left behind.
On shutdown (SIGTERM) it takes no more jobs, gives the job at hand ``LANDMARK_SHUTDOWN_GRACE``
seconds, then hands it back (queued) and exits.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from . import __version__
from . import config as cfg
from .api_input import FORM_FIELD_BYTES, ApiError, limited, parse_json, read_json
from .errors import ConfigError, ForbiddenSourceError, ImageError, LandmarkError, SourceError
from .jobs import (
    KINDS, RESULT_TYPES, Job, JobNotFoundError, Jobs, NoResultError, Runner, Sweeper, index_parameters,
    query_parameters,
)
from .results import put, remove
from .jobs import submit as submit_job
from .policy import SourcePolicy
from .search_page import RESULT_PAGE_POLICY, add_search_page
from .session import DEFAULT_TOP_K, Session, open_store
from .settings import Settings
from .store import Store, redact


MAX_SOURCES = 1000
"""Sources one index job may name; more images go in a directory, an S3 prefix or a list file."""

class IndexJobRequest(BaseModel):
    """Index every image of ``sources`` (files, directories, lists, ``s3://`` keys or prefixes)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["index"]
    sources: list[str] = Field(min_length=1, max_length=MAX_SOURCES)


class QueryJobRequest(BaseModel):
    """Rank the stored images against ``image`` (a path or URI the workers can read)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["query"]
    image: str = Field(min_length=1)
    top_k: int = Field(DEFAULT_TOP_K, ge=1)
    add: bool = True
    evidence: bool = Field(False, description="the JSON gives each match's inlier correspondences too")
    matching: dict[str, Any] = Field(default_factory=dict, description="MatchConfig overrides, e.g. min_inliers")


JobRequest = Annotated[IndexJobRequest | QueryJobRequest, Field(discriminator="kind")]
_JOB_REQUEST = TypeAdapter(JobRequest)

UPLOAD_FORM_SCHEMA = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the query image"},
        "top_k": {"type": "integer", "minimum": 1, "default": DEFAULT_TOP_K},
        "add": {"type": "boolean", "default": False},
        "evidence": {"type": "boolean", "default": False},
        "matching": {"type": "string", "description": "MatchConfig overrides as a JSON object"},
    },
}


ERROR_STATUS: dict[type[LandmarkError], int] = {
    ForbiddenSourceError: 403,
    JobNotFoundError: 404,
    NoResultError: 409,
    ConfigError: 400,
    LandmarkError: 503,  # the rest: something the service needs is not there
}
"""HTTP status of each error the library raises, most specific first."""


class Service:
    """What the endpoints share: settings, a store connection for reads, where jobs are sent (the
    broker, or the in-process runner), and the sweeper."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.runner: Runner | None = None
        if settings.broker_url:
            from workers.app import enqueue

            self.send = functools.partial(enqueue, settings)
        else:
            self.runner = Runner(settings, Session)
            self.send = self.runner.send
        self._sweeper = Sweeper(lambda: Jobs(open_store(settings)), self.send, settings,
                                resend_waiting=self.runner is not None)

    def start(self) -> None:
        """Start sweeping: its first sweep resumes what a stopped or killed server left behind."""
        self._sweeper.start()

    @contextmanager
    def _jobs(self) -> Iterator[Jobs]:
        """The jobs table on the shared connection (reopened after a database restart), held for
        the caller alone."""
        with self._lock:
            yield Jobs(self._opened())

    def get(self, job_id: str) -> Job:
        with self._jobs() as jobs:
            return jobs.get(job_id)

    def submit(self, kind: str, parameters: dict[str, Any]) -> Job:
        with self._jobs() as jobs:
            return submit_job(jobs, kind, parameters, self.send, lease_s=self.settings.job_lease)

    def close(self) -> None:
        """Stop sweeping and taking jobs; the job at hand gets the grace period, then is handed back."""
        self._sweeper.stop()
        if self.runner is not None:
            self.runner.stop(self.settings.shutdown_grace)
        if self._store is not None:
            self._store.close()

    def health(self) -> dict[str, Any]:
        checks = {"database": self._check_database, "broker": self._check_broker, "dask": self._check_dask}
        report: dict[str, Any] = {}
        for name, check in checks.items():
            try:
                report[name] = {"ok": True, "detail": check()}
            except Exception as error:  # any failure is the answer, not a crash
                report[name] = {"ok": False, "detail": f"{type(error).__name__}: {error}".strip()}
        report["runner"] = self._runner_state(report["database"]["ok"])
        report["status"] = "ok" if all(part["ok"] for part in report.values()) else "unavailable"
        return report

    def _runner_state(self, database_ok: bool) -> dict[str, Any]:
        if self.runner is None:
            return {"ok": True, "detail": "none here: queue workers run the jobs"}
        if not database_ok:
            return {"ok": False, "detail": "cannot run jobs: the database is unreachable"}
        return self.runner.state()

    def _check_database(self) -> str:
        with self._lock:
            return self._opened().ping()

    def _opened(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    def _check_broker(self) -> str:
        if not self.settings.broker_url:
            return "none: jobs run in this server"
        from kombu import Connection

        with Connection(self.settings.broker_url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
        return redact(self.settings.broker_url)

    def _check_dask(self) -> str:
        if not self.settings.dask_scheduler:
            return "local cluster, started by the first query"
        from distributed import Client

        with Client(self.settings.dask_scheduler, timeout="3s") as client:
            workers = len(client.scheduler_info().get("workers", {}))
        return f"{self.settings.dask_scheduler} ({workers} workers)"


def create_api(settings: Settings | None = None) -> FastAPI:
    """The FastAPI app for ``settings`` (default: from the environment)."""
    settings = settings or cfg.resolve(Settings)
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        service.start()
        yield
        service.close()

    # With a token, the schema needs it too, and the interactive pages are off: a browser
    # cannot send the token to them.
    guarded = {"docs_url": None, "redoc_url": None, "openapi_url": None} if settings.api_token else {}
    app = FastAPI(
        title="landmark", version=__version__, lifespan=lifespan, **guarded,
        description="Submit index and query jobs, follow them, and fetch query rankings as txt or JSON.",
    )
    app.state.service = service
    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not settings.api_token:
            return
        if credentials is None:
            raise ApiError(401, "missing bearer token: send Authorization: Bearer <LANDMARK_API_TOKEN>")
        if not secrets.compare_digest(credentials.credentials.encode(), settings.api_token.encode()):
            raise ApiError(401, "invalid bearer token")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"detail": error.detail}, status_code=error.status, headers=headers)

    async def _landmark_error(_: Request, error: Exception) -> JSONResponse:
        status = next(code for kind, code in ERROR_STATUS.items() if isinstance(error, kind))
        return JSONResponse({"detail": str(error)}, status_code=status)

    for kind in ERROR_STATUS:
        app.add_exception_handler(kind, _landmark_error)

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe(error.errors())}, status_code=422)

    @app.post(
        "/jobs", status_code=202, dependencies=[Depends(authorised)], summary="submit an index or query job",
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": {"oneOf": [IndexJobRequest.model_json_schema(),
                                                      QueryJobRequest.model_json_schema()]}},
            "multipart/form-data": {"schema": UPLOAD_FORM_SCHEMA},
        }}},
    )
    async def post_job(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            kind, parameters = await _json_job(request, settings.source_policy)
        elif content_type == "multipart/form-data":
            kind, parameters = await _upload_job(request, settings)
        else:
            raise ApiError(415, f"content type {content_type or 'missing'!r}: send application/json, or "
                                "multipart/form-data with an image file")
        try:
            job = await run_in_threadpool(service.submit, kind, parameters)
        except Exception:
            if content_type == "multipart/form-data":  # the upload belongs to no job: remove it
                await run_in_threadpool(remove, parameters["image"])
            raise
        return JSONResponse(_job_document(job), status_code=202, headers={"Location": f"/jobs/{job.id}"})

    @app.get("/jobs/{job_id}", dependencies=[Depends(authorised)], summary="a job's status and progress")
    def get_job(job_id: str) -> dict[str, Any]:
        return _job_document(service.get(_job_id(job_id)))

    @app.get("/jobs/{job_id}/result.{fmt}", dependencies=[Depends(authorised)],
             summary="a query job's ranking as txt or JSON, or its results page", response_class=Response)
    def get_result(job_id: str, fmt: Literal["txt", "json", "html"]) -> Response:
        from .jobs import read_result

        headers = {"Content-Security-Policy": RESULT_PAGE_POLICY} if fmt == "html" else None
        return Response(read_result(service.get(_job_id(job_id)), fmt), media_type=RESULT_TYPES[fmt], headers=headers)

    add_search_page(app, settings)

    if settings.api_token:
        @app.get("/openapi.json", dependencies=[Depends(authorised)], include_in_schema=False)
        def openapi() -> dict[str, Any]:
            return app.openapi()

    @app.get("/health", summary="database, broker and Dask reachable or not, and whether jobs can run")
    def health() -> JSONResponse:
        report = service.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    return app


async def _json_job(request: Request, policy: SourcePolicy) -> tuple[str, dict[str, Any]]:
    body = await read_json(request)
    try:
        job = _JOB_REQUEST.validate_python(body)
    except ValidationError as error:
        raise ApiError(422, describe(error.errors())) from None
    if isinstance(job, IndexJobRequest):
        parameters = index_parameters(job.sources)
        _allowed(policy, job.sources, "sources")
        return "index", policy.confine(parameters)
    parameters = query_parameters(job.image, top_k=job.top_k, add=job.add, matching=job.matching,
                                  evidence=job.evidence)
    _allowed(policy, [job.image], "image")
    return "query", policy.confine(parameters)


def _allowed(policy: SourcePolicy, sources: list[str], field: str) -> None:
    """Refuse the request unless ``policy`` allows every source (403, the same answer whether a
    path exists or not); a source that is not a path or URI at all is a bad request (422)."""
    for source in sources:
        try:
            policy.check(source)
        except ForbiddenSourceError:
            raise
        except SourceError as error:
            raise ApiError(422, f"{field}: {error}") from None


async def _upload_job(request: Request, settings: Settings) -> tuple[str, dict[str, Any]]:
    """A query job for the uploaded image, which is stored under the results location once every
    field has been checked (so that a refused request leaves nothing behind)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    limit = int(settings.upload_limit_mb * 1_000_000)
    too_large = f"image upload is larger than the limit of {settings.upload_limit_mb:g} MB (LANDMARK_UPLOAD_LIMIT_MB)"
    body = limited(request, limit + FORM_FIELD_BYTES, too_large)
    async with body.form(max_files=1, max_fields=5, max_part_size=FORM_FIELD_BYTES) as form:
        unknown = sorted(set(form) - {"kind", "image", "top_k", "add", "evidence", "matching"})
        if unknown:
            raise ApiError(422, f"{unknown[0]}: unknown form field; valid fields: kind, image, top_k, add, "
                                "evidence, matching")
        if form.get("kind", "query") != "query":
            raise ApiError(422, "kind: an upload is a query image; index jobs take sources as JSON")
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "image: a multipart query needs an image file in the 'image' field")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, too_large)
        name = _safe_name(upload.filename or "upload")
        try:
            top_k = int(form.get("top_k", DEFAULT_TOP_K))  # type: ignore[arg-type]
            add = cfg.coerce(form.get("add", "false"), bool, "add")
            evidence = cfg.coerce(form.get("evidence", "false"), bool, "evidence")
        except (TypeError, ValueError) as error:
            raise ApiError(422, f"form field: {error}") from None
        matching = parse_json(form.get("matching") or "{}", "matching")  # type: ignore[arg-type]
    if not isinstance(matching, dict):
        raise ApiError(422, "matching: must be a JSON object of MatchConfig options")
    folder = f"{settings.results_location.rstrip('/')}/uploads/{uuid.uuid4().hex}/"
    location = folder + name
    # The job may read its own upload, and what the operator allows, nothing else.
    policy = settings.source_policy.widened(folder if "://" in folder else os.path.abspath(folder))
    parameters = policy.confine(query_parameters(location, top_k=top_k, add=add, matching=matching, evidence=evidence))
    await run_in_threadpool(_check_image, data, f"upload {name!r}", settings.max_image_pixels)
    await run_in_threadpool(put, location, data, "application/octet-stream")
    return "query", parameters


def _check_image(data: bytes, name: str, max_pixels: int) -> None:
    from .images import decode_image

    try:
        decode_image(data, name, 64, max_pixels=max_pixels)
    except ImageError as error:
        raise ApiError(422, str(error)) from None


def _safe_name(filename: str) -> str:
    """The upload's base name, reduced to characters safe in a path and an S3 key."""
    base = re.split(r"[\\/]", filename)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"
    return cleaned[:100]


def _job_id(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id):
        raise JobNotFoundError(job_id)
    return job_id


def _job_document(job: Job) -> dict[str, Any]:
    document = job.to_json()
    # The roots a job may read are the operator's business, not the caller's.
    document["parameters"] = {k: v for k, v in document["parameters"].items() if k != "allowed_sources"}
    links = {"self": f"/jobs/{job.id}"}
    if job.kind == "query":
        links.update({fmt: f"/jobs/{job.id}/result.{fmt}" for fmt in RESULT_TYPES})
    document["links"] = links
    return document


def describe(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors as one line: ``field: what; ...`` (the request part and job kind left out)."""
    parts = []
    for error in errors:
        loc = list(error.get("loc", ()))
        while loc and loc[0] in ("body", "path", "query", *KINDS):  # where it came in, which shape
            loc.pop(0)
        where = ".".join(map(str, loc))
        if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            where = "kind"  # the field that picks the request's shape
        where = where or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)
