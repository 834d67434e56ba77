"""``landmark``: a thin command line over :class:`landmark.session.Session`.

Every option is a field of a config class (:class:`~landmark.settings.Settings`,
:class:`~landmark.matching.MatchConfig`, or an extractor's config via ``-E KEY=VALUE``), so
the CLI and the library cannot drift apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import config as cfg
from .errors import LandmarkError
from .matching import MatchConfig
from .session import DEFAULT_TOP_K
from .settings import Settings

EPILOG = """Settings also come from the environment (LANDMARK_HOME, LANDMARK_DATABASE_URL,
LANDMARK_DASK_SCHEDULER, ...); a command-line option beats the environment, which beats the default."""


_STORE = ("home", "database_url")
_EXTRACT = ("extractor", "max_image_pixels")
_MATCH = ("dask", "dask_scheduler", "dask_workers", "partition_size", "device")
_QUEUE = ("broker_url", "results")
TAKES: dict[str, tuple[str, ...] | None] = {
    "index": _STORE + _EXTRACT,
    "query": _STORE + _EXTRACT + _MATCH,
    "eval": _STORE + _EXTRACT + _MATCH,
    "submit index": _STORE + _EXTRACT + _QUEUE + ("extract_batch",),
    "submit query": _STORE + _EXTRACT + _MATCH + _QUEUE,
    "status": _STORE, "wait": _STORE, "result": _STORE, "info": _STORE, "reindex": _STORE,
    "worker": None, "serve": None,  # every setting: they run whatever jobs come
}
"""The settings each command takes as options (``None``: all of them); the rest still come from
the environment, where a deployment sets them once for every command."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="landmark",
        description="Find the other photos of the same landmark: index images, then query one.",
        epilog=EPILOG,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, step by step")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser(
        "index", help="extract and store the features of images",
        description="Index images: each SOURCE is a file, a directory (searched recursively), a .txt "
        "list of URIs, a file:// URI, or s3://bucket/key or s3://bucket/prefix/.",
        epilog=EPILOG,
    )
    index.add_argument("sources", nargs="+", metavar="SOURCE", help="images to index")
    _common(index, "index")

    query = commands.add_parser(
        "query", help="rank the stored images by how well they match one image",
        description="Match IMAGE against every stored image (descriptor matching + RANSAC on Dask), "
        "print the ranking and write it as OUT.txt and OUT.json (with --html, a results page as OUT.html too).",
        epilog=EPILOG,
    )
    query.add_argument("image", metavar="IMAGE", help="the query image (path, file:// or s3:// URI)")
    query.add_argument(
        "--out", metavar="PATH",
        help="write PATH.txt and PATH.json (a local path or s3:// URI; default: results/<image name>)",
    )
    query.add_argument(
        "--html", action="store_true",
        help="also write PATH.html, a results page with the pictures and their matches drawn (self-contained)",
    )
    _query_options(query, "query")

    evaluation = commands.add_parser(
        "eval", help="index a dataset into a fresh store and score leave-one-out retrieval",
        description="Index DATASET_DIR (laid out as <group>/<image>; groups named _... are distractors: "
        "indexed, never queried) into a fresh store, query every other image against all the rest, and "
        "print mean average precision, precision at 1 and timings. The store is a temporary embedded "
        "PostgreSQL, removed afterwards (LANDMARK_HOME is not used); --home or --database-url / "
        "LANDMARK_DATABASE_URL name another store, which must hold no images but the dataset's (a store "
        "kept by an earlier evaluation of the same images is reused: nothing is extracted again).",
        epilog=EPILOG,
    )
    evaluation.add_argument("dataset", metavar="DATASET_DIR", help="folder of <group>/<image> files")
    evaluation.add_argument(
        "--out", metavar="DIR",
        help="write DIR/summary.json and DIR/queries/<group>__<image>.json (default: eval-results/<dataset name>)",
    )
    evaluation.add_argument(
        "--distractors", action="append", default=[], metavar="DIR",
        help="index every image under DIR too, as one more distractor group (repeatable)",
    )
    evaluation.add_argument(
        "--keep-store", action="store_true",
        help="keep the temporary store afterwards and print where it is (default: remove it)",
    )
    _common(evaluation, "eval")
    cfg.add_options(evaluation, MatchConfig)

    submit = commands.add_parser(
        "submit", help="submit a job (index sources, or query an image) and print its id",
        description="Create a job and print its id. With a broker (LANDMARK_BROKER_URL or --broker-url) the "
        "job goes to the queue and a worker (landmark worker) runs it; without one it runs here, now. Follow "
        "it with status, wait and result.", epilog=EPILOG,
    )
    kinds = submit.add_subparsers(dest="kind", required=True, metavar="KIND")
    submit_index = kinds.add_parser("index", help="index SOURCE... (as landmark index)")
    submit_index.add_argument("sources", nargs="+", metavar="SOURCE")
    _common(submit_index, "submit index")
    submit_query = kinds.add_parser("query", help="query IMAGE (as landmark query); results go under RESULTS")
    submit_query.add_argument("image", metavar="IMAGE")
    _query_options(submit_query, "submit query")

    for name, text in (("status", "show a job's status and progress"), ("wait", "wait until a job has finished")):
        command = commands.add_parser(name, help=text, epilog=EPILOG)
        command.add_argument("job_id", metavar="JOB_ID")
        if name == "wait":
            command.add_argument("--timeout", type=float, default=0, metavar="S",
                                 help="give up after S seconds (default: wait as long as it takes)")
        else:
            command.add_argument("--json", action="store_true", help="print as JSON")
        cfg.add_options(command, Settings, only=TAKES[name])
    result = commands.add_parser("result", help="print or save a query job's ranking", epilog=EPILOG)
    result.add_argument("job_id", metavar="JOB_ID")
    result.add_argument("--format", choices=("txt", "json", "html"), default="txt",
                        help="which file: txt, json or html, the results page (default: txt)")
    result.add_argument("--out", metavar="PATH", help="write it to PATH instead of printing it")
    cfg.add_options(result, Settings, only=TAKES["result"])

    worker = commands.add_parser(
        "worker", help="run a queue worker (needs a broker)",
        description="Take jobs from the broker's queues and run them: extract (index jobs: planning and one "
        "task per batch of images) and match (query jobs). An extract-only worker runs a pool of processes; "
        "a worker that takes match runs one job at a time and keeps its Dask cluster across jobs.",
        epilog=EPILOG,
    )
    worker.add_argument("--queues", default="extract,match", metavar="QUEUES",
                        help="comma-separated queues to take: extract, match (default: extract,match)")
    worker.add_argument("--concurrency", type=int, default=0, metavar="N",
                        help="processes of an extract-only worker (default: one per core)")
    worker.add_argument("--loglevel", default="INFO", metavar="LEVEL", help="Celery log level (default: INFO)")
    cfg.add_options(worker, Settings, only=TAKES["worker"])

    serve = commands.add_parser(
        "serve", help="serve the HTTP API (jobs, results, health)",
        description="Serve the HTTP API: POST /jobs, GET /jobs/{id}, GET /jobs/{id}/result.txt and .json, "
        "GET /health; its OpenAPI document is at /openapi.json and /docs. Set LANDMARK_API_TOKEN to require "
        "a bearer token. With no broker, jobs run inside the server, one at a time.",
        epilog=EPILOG,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    cfg.add_options(serve, Settings, only=TAKES["serve"])

    reindex = commands.add_parser(
        "reindex", help="train the retrieval index anew on the stored images and give each its vector",
        description="Train a new codebook on the stored images (k-means on a sample of their descriptors), "
        "compute every image's VLAD vector, then make it the index queries use (the old one serves until "
        "then). A store gets its first index by itself once it holds 1000 images; reindex when it has "
        "outgrown it (landmark info says so) or to build one sooner.", epilog=EPILOG,
    )
    cfg.add_options(reindex, Settings, only=TAKES["reindex"])
    info = commands.add_parser("info", help="where the store is, its extractor, and how much it holds", epilog=EPILOG)
    info.add_argument("--json", action="store_true", help="print as JSON")
    cfg.add_options(info, Settings, only=TAKES["info"])
    return parser


def _query_options(parser: argparse.ArgumentParser, command: str) -> None:
    """What every command that runs a query takes: how many matches, --no-add, and the settings."""
    parser.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, metavar="K",
        help=f"keep the K best matches (default: {DEFAULT_TOP_K})",
    )
    parser.add_argument(
        "--no-add", dest="add", action="store_false",
        help="leave the store unchanged (by default the query image is added to it)",
    )
    parser.add_argument(
        "--evidence", action="store_true",
        help="give each match's inlier correspondences in the JSON too (by default only its transformation)",
    )
    _common(parser, command)
    cfg.add_options(parser, MatchConfig)


def _common(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument(
        "-E", "--extractor-option", action="append", default=[], metavar="KEY=VALUE",
        help="an extractor setting, e.g. -E max_features=2000 or -E model=/path/to/delf (repeatable)",
    )
    cfg.add_options(parser, Settings, only=TAKES[command])


def _settings(args: argparse.Namespace) -> Settings:
    """The command's settings: its options (those :data:`TAKES` gives it), then the environment."""
    return cfg.resolve(Settings, cfg.options_from(args, Settings))


def _extractor_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LandmarkError(f"--extractor-option {pair!r}: expected KEY=VALUE")
        options[key.strip()] = value.strip()
    return options


def _session(args: argparse.Namespace, settings: Settings | None = None, **kwargs: Any):  # noqa: ANN202
    from .session import Session

    settings = settings or _settings(args)
    return Session(settings, announce=lambda text: print(text, file=sys.stderr), **kwargs)


def _progress(unit: str):  # noqa: ANN202
    """(on_total, progress) callbacks that drive a tqdm bar on stderr (hidden when not a TTY)."""
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def on_total(total: int) -> None:
        bar["bar"] = tqdm(total=total, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)

    def progress(n: int) -> None:
        bar["bar"].update(n)

    def close() -> None:
        if "bar" in bar:
            bar["bar"].close()

    return on_total, progress, close


def cmd_index(args: argparse.Namespace) -> int:
    on_total, progress, close = _progress("image")
    with _session(args, extractor_options=_extractor_options(args.extractor_option)) as session:
        try:
            report = session.index(args.sources, progress=progress, on_total=on_total)
        finally:
            close()
        for uri, reason in report.failed:
            print(f"failed: {uri}: {reason}", file=sys.stderr)
        print(f"{report.summary()} (of {report.total}); store: {session.store.location}")
    return 0 if report.total > len(report.failed) or report.total == 0 else 1


def cmd_query(args: argparse.Namespace) -> int:
    out = args.out or str(Path("results") / Path(args.image.rstrip("/")).stem)
    on_total, progress, close = _progress("partition")
    with _session(
        args, extractor_options=_extractor_options(args.extractor_option),
        match_options=cfg.options_from(args, MatchConfig),
    ) as session:
        try:
            result = session.query(
                args.image, top_k=args.top_k, out=out, add=args.add, progress=progress, on_total=on_total,
                evidence="inliers" if args.evidence else "transform", page=args.html,
            )
        finally:
            close()
    counts = result.counts
    print(f"query: {result.query} ({counts['query_features']} features, {result.extractor['name']})")
    print(f"compared with {counts['compared']} stored images in {result.timings_s['total']:.2f} s; "
          f"{counts['matched']} with at least {result.matching['min_inliers']} inliers")
    if result.matches:
        print(f"{'rank':>4}  {'inliers':>7}  {'putative':>8}  uri")
        for rank, match in enumerate(result.matches, start=1):
            print(f"{rank:>4}  {match.inliers:>7}  {match.putative_matches:>8}  {match.uri}")
    else:
        print("no stored image matches")
    print(f"wrote {', '.join(result.files.values())}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import dataset_groups, evaluate, with_distractors

    dataset = Path(os.path.abspath(os.path.expanduser(args.dataset)))
    # A bad layout is an error before any store is made.
    images = [p.as_uri() for paths in with_distractors(dataset_groups(dataset), args.distractors).values() for p in paths]
    out = Path(args.out) if args.out else Path("eval-results") / dataset.name
    overrides = cfg.options_from(args, Settings)
    settings = cfg.resolve(Settings, overrides)
    temporary = None
    if not settings.database_url and overrides.get("home") is None:
        temporary = Path(tempfile.mkdtemp(prefix="landmark-eval-"))
        overrides["home"] = str(temporary)  # beats LANDMARK_HOME: the user's own store is never used
    bars: list[Any] = []

    def progress(phase: str, total: int):  # noqa: ANN202
        for close in bars:
            close()
        on_total, update, close = _progress("image" if phase == "index" else "query")
        bars[:] = [close]
        on_total(total)
        return update

    try:
        with _session(
            args, settings=cfg.resolve(Settings, overrides),
            extractor_options=_extractor_options(args.extractor_option),
            match_options=cfg.options_from(args, MatchConfig),
        ) as session:
            if temporary is None:
                foreign = session.store.count() - len(session.store.content_hashes(images))
                if foreign:
                    raise LandmarkError(
                        f"the store {session.store.location} holds {foreign} image{'s' * (foreign != 1)} that "
                        "are not part of the evaluation; it needs a store with none (leave out --database-url, "
                        "LANDMARK_DATABASE_URL and --home to use a temporary store)"
                    )
            location = session.store.location
            try:
                report = evaluate(session, dataset, distractors=args.distractors, out_dir=out, progress=progress)
            finally:
                for close in bars:
                    close()
    finally:
        if temporary is not None and not args.keep_store:
            _remove_embedded(temporary)
    for uri, reason in report.index_failures:
        print(f"failed: {uri}: {reason}", file=sys.stderr)
    for uri, reason in report.query_failures:
        print(f"query failed: {uri}: {reason}", file=sys.stderr)
    for line in report.summary_lines():
        print(line)
    print(f"wrote {out / 'summary.json'} and {len(report.queries)} query files in {out / 'queries'}")
    if temporary is None:
        print(f"store: {location}")
    elif args.keep_store:
        print(f"store kept: {location}; use it with --home {temporary} (or LANDMARK_HOME={temporary})")
    else:
        print(f"store: temporary, removed ({temporary})")
    return 0


def _remove_embedded(home: Path) -> None:
    """Stop the embedded server this process started under ``home``, then delete ``home``."""
    from .embedded import stop

    stop(home)
    shutil.rmtree(home, ignore_errors=True)


def cmd_submit(args: argparse.Namespace) -> int:
    from .jobs import Jobs, index_parameters, query_parameters, run, submit

    settings = _settings(args)
    if settings.broker_url and (args.extractor_option or args.extractor):
        raise LandmarkError(
            "--extractor and --extractor-option cannot travel with a queued job: the workers' own settings "
            "(LANDMARK_EXTRACTOR, LANDMARK_DELF_MODEL, ...) and the store's extractor decide"
        )
    if args.kind == "index":
        parameters = index_parameters(args.sources)
    else:
        parameters = query_parameters(args.image, top_k=args.top_k, add=args.add, evidence=args.evidence,
                                      matching=cfg.options_from(args, MatchConfig))
    with _session(args, settings=settings, extractor_options=_extractor_options(args.extractor_option)) as session:
        job = submit(
            Jobs(session.store), args.kind, parameters,
            _sender(settings) or (lambda work: run(session, work.job_id)),  # no broker: run it here, now
            lease_s=settings.job_lease, on_created=lambda created: print(created.id, flush=True),
        )
    if job.status == "failed":
        print(f"landmark submit: job {job.id} failed: {job.error}", file=sys.stderr)
        return 1
    return 0


def _sender(settings: Settings):  # noqa: ANN202 - Callable[[Work], None] | None
    """The queue's sender for ``settings``, or ``None`` with no broker."""
    if not settings.broker_url:
        return None
    import functools

    from workers.app import enqueue

    return functools.partial(enqueue, settings)


def cmd_worker(args: argparse.Namespace) -> int:
    from workers.app import create_app, worker_argv

    settings = _settings(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    argv = worker_argv(queues, concurrency=args.concurrency, loglevel=args.loglevel)
    if "--pool=solo" not in argv:
        # SIGTERM as a cold shutdown: the pool's tasks get LANDMARK_SHUTDOWN_GRACE seconds (Celery's
        # soft shutdown), then go back to the queue, where a warm shutdown would wait for them for
        # ever (see workers.process; read by Celery's pool module, which is not imported yet).
        os.environ.setdefault("REMAP_SIGTERM", "SIGQUIT")
    app = create_app(settings)
    app.worker_main(argv=argv)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_api

    settings = _settings(args)
    uvicorn.run(create_api(settings), host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                timeout_graceful_shutdown=max(1, round(settings.shutdown_grace)))
    return 0


def _job(args: argparse.Namespace):  # noqa: ANN202
    from .jobs import Jobs

    with _session(args) as session:
        return Jobs(session.store).get(args.job_id)


def cmd_status(args: argparse.Namespace) -> int:
    job = _job(args)
    if args.json:
        print(json.dumps(job.to_json(), indent=2))
        return 0
    print(f"job:      {job.id} ({job.kind})")
    print(f"status:   {job.status}")
    print(f"progress: {job.done} of {job.total} done, {job.failed} failed")
    if job.last_progress_at and not job.finished:
        lease = f"; lease until {job.lease_until:%Y-%m-%d %H:%M:%S%z}" if job.lease_until else ""
        print(f"last progress: {job.last_progress_at:%Y-%m-%d %H:%M:%S%z} (attempt {job.attempts}, "
              f"{job.worker or 'not taken yet'}{lease})")
    if job.error:
        print(f"error:    {job.error}")
    if job.result and job.kind == "query":
        print(f"result:   {job.result['txt']} and {job.result['json']}")
    elif job.result:
        print(f"result:   stored {job.result['stored']}, skipped {job.result['unchanged']} unchanged, "
              f"failed {len(job.result['failed'])}")
    return 0 if job.status != "failed" else 1


def cmd_wait(args: argparse.Namespace) -> int:
    import time

    from .jobs import Jobs

    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    with _session(args) as session:
        jobs = Jobs(session.store)
        job = jobs.get(args.job_id)
        while not job.finished:
            if deadline is not None and time.monotonic() > deadline:
                print(f"landmark wait: job {job.id} is still {job.status} after {args.timeout:g} s", file=sys.stderr)
                return 3
            time.sleep(0.5)
            job = jobs.get(args.job_id)
    print(f"{job.id} {job.status}" + (f": {job.error}" if job.error else ""))
    return 0 if job.status == "succeeded" else 1


def cmd_result(args: argparse.Namespace) -> int:
    from .jobs import RESULT_TYPES, read_result

    data = read_result(_job(args), args.format)
    if args.out:
        from .results import put

        put(args.out, data, RESULT_TYPES[args.format])
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(data.decode())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with _session(args) as session:
        stats = session.info()
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"store:      {stats['store']}")
    extractor = stats["extractor"]
    options = ", ".join(f"{k}={v}" for k, v in sorted((stats["extractor_config"] or {}).items()))
    print(f"extractor:  {extractor} ({options})" if extractor else "extractor:  none yet (bound on first index)")
    print(f"images:     {stats['images']}")
    print(f"features:   {stats['features']} ({stats['feature_bytes'] / 1e6:.1f} MB stored)")
    print(f"index:      {stats['index']}")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from .retrieval.build import train

    with _session(args) as session:
        on_total, progress, close = _progress("image")
        on_total(session.store.count())
        try:
            state = train(session.store, progress=progress)
        except ValueError as error:
            raise LandmarkError(str(error)) from None
        finally:
            close()
    print(state.describe())
    return 0


COMMANDS = {
    "index": cmd_index, "query": cmd_query, "eval": cmd_eval, "submit": cmd_submit, "status": cmd_status,
    "wait": cmd_wait, "result": cmd_result, "info": cmd_info, "reindex": cmd_reindex, "worker": cmd_worker, "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except LandmarkError as error:
        print(f"landmark {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"landmark {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
