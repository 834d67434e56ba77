"""Fan a query out over the stored images on Dask, then rank.

Each task reads its own partition (an id range) from PostgreSQL, matches it against the
query with :func:`landmark.matching.match_partition`, and returns one
``(uri, inliers, putative matches)`` per stored image. The client only ever sees partition
bounds and those small results, never the table.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .contract import Features
from .matching import MatchConfig, match_partition
from .settings import Settings
from .store import Partition, connect, read_partition

log = logging.getLogger(__name__)

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Set in each local worker process before it starts: one task, one core."""


@dataclass(frozen=True)
class Candidate:
    """One stored image as compared with the query."""

    uri: str
    inliers: int
    putative_matches: int


@contextlib.contextmanager
def dask_client(settings: Settings) -> Iterator[Any]:
    """A Dask client: to ``settings.dask_scheduler`` if set, else to a new local cluster."""
    import dask
    from distributed import Client, LocalCluster

    if settings.dask_scheduler:
        with Client(settings.dask_scheduler, timeout="30s") as client:
            yield client
        return
    if not logging.getLogger().isEnabledFor(logging.INFO):
        # distributed logs every worker's start and stop at INFO; that is noise unless asked for.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": THREAD_ENV}):
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


_connections: dict[str, Any] = {}


def _worker_connection(url: str) -> Any:
    """One connection per worker process and store, reused across tasks."""
    conn = _connections.get(url)
    if conn is None or conn.closed:
        conn = _connections[url] = connect(url)
    return conn


def match_task(
    url: str, partition: Partition, query: Features, exclude_uri: str | None, config: MatchConfig
) -> list[Candidate]:
    """Runs on a Dask worker: read one partition, match it, return one candidate per image."""
    import psycopg2

    try:
        uris, stored = read_partition(_worker_connection(url), partition, exclude_uri)
    except psycopg2.OperationalError:
        # The cached connection went stale (server restart, idle timeout): reconnect once.
        _connections.pop(url, None)
        uris, stored = read_partition(_worker_connection(url), partition, exclude_uri)
    counts = match_partition(query, stored, config)
    return [Candidate(uri, int(c[0]), int(c[1])) for uri, c in zip(uris, counts)]


def search(
    client: Any,
    url: str,
    partitions: Sequence[Partition],
    query: Features,
    exclude_uri: str | None,
    config: MatchConfig,
    progress: Callable[[int], None] | None = None,
) -> list[Candidate]:
    """Match ``query`` against every partition on the cluster behind ``client``."""
    from distributed import as_completed

    if not partitions:
        return []
    [query_future] = client.scatter([query], broadcast=True)
    futures = [
        client.submit(match_task, url, p, query_future, exclude_uri, config, pure=False)
        for p in partitions
    ]
    candidates: list[Candidate] = []
    try:
        for future in as_completed(futures):
            candidates.extend(future.result())
            if progress is not None:
                progress(1)
    finally:
        client.cancel(futures + [query_future])
    return candidates


def rank(candidates: Sequence[Candidate], *, min_inliers: int, top_k: int) -> list[Candidate]:
    """Best first: most inliers, then most putative matches, then URI (so ties are stable)."""
    kept = [c for c in candidates if c.inliers >= min_inliers and c.inliers > 0]
    kept.sort(key=lambda c: (-c.inliers, -c.putative_matches, c.uri))
    return kept[:top_k]

