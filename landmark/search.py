"""Fan a query out over the stored images on Dask, then rank.

Each partition (an id range) is read from PostgreSQL by a worker, which keeps it in memory
(:class:`PartitionCache`); a matching task then runs where it lives, matches it against the
query with :func:`landmark.matching.match_batch`, and returns one
``(uri, inliers, putative matches)`` per stored image. The client only ever sees partition
bounds, fingerprints and those small results, never the table.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .contract import FeatureBatch, Features
from .errors import ConfigError
from .matching import MatchConfig, match_batch
from .store import Partition, read_batch
from .worker_db import forget_connection, worker_connection

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Candidate:
    """One stored image as compared with the query."""

    uri: str
    inliers: int
    putative_matches: int
    score: float | None = None
    """its retrieval index similarity, when the index shortlisted it"""


@dataclass(frozen=True, eq=False)
class LoadedPartition:
    """A partition as a worker holds it in memory between queries."""

    uris: list[str]
    batch: FeatureBatch  # or, with device cuda, a landmark.gpu.HeldBatch in the worker's GPU

    def __sizeof__(self) -> int:  # lets Dask account for the memory it holds
        return self.batch.nbytes + sum(len(u) + 49 for u in self.uris)


def load_partition(url: str, partition: Partition, device: str = "cpu", held: str = "float16") -> LoadedPartition:
    """Runs on a Dask worker: read one partition from PostgreSQL; with ``device`` ``cuda``, hold
    it in GPU memory (descriptors as ``held``) instead of the worker's."""
    import psycopg2

    try:
        uris, batch = read_batch(worker_connection(url), partition)
    except psycopg2.OperationalError:
        # The cached connection went stale (server restart, idle timeout): reconnect once.
        forget_connection(url)
        uris, batch = read_batch(worker_connection(url), partition)
    return LoadedPartition(uris, _on_gpu(batch, held) if device == "cuda" else batch)


def _on_gpu(batch: FeatureBatch, held: str) -> Any:
    """``batch`` in this worker's GPU (:mod:`landmark.gpu`, imported only here: CPU workers never
    import PyTorch); the host copy is dropped with the return."""
    try:
        from .gpu import hold
    except ImportError as error:
        raise ConfigError(f"device cuda: this Dask worker cannot import PyTorch ({error}); install "
                          "'landmark[gpu]' on the workers") from None
    return hold(batch, descriptors=held, device="cuda")


def match_loaded(
    loaded: LoadedPartition, query: Features, exclude_uri: str | None, config: MatchConfig
) -> list[Candidate]:
    """Runs on a Dask worker: match a held partition, one candidate per image but the query's own."""
    counts = match_batch(query, loaded.batch, config)
    return [Candidate(uri, int(c[0]), int(c[1])) for uri, c in zip(loaded.uris, counts) if uri != exclude_uri]


class PartitionCache:
    """What the Dask workers hold across the queries of one client, by fingerprint.

    - Partitions: each is read from PostgreSQL once and stays in a worker's memory while this
      cache holds its future; matching tasks then run where it lives.
    - Match results of the last :attr:`RECENT_QUERIES` queries, per partition: repeating a query
      (same features, settings and excluded URI) against unchanged partitions recomputes nothing.

    Both are keyed by the partitions' fingerprints: when a row in a partition is written or
    deleted, its old copy and results are released and it is read anew.
    """

    RECENT_QUERIES = 8

    def __init__(self, client: Any, url: str, device: str = "cpu", gpu_descriptors: str = "float16") -> None:
        self.client = client
        self.url = url
        self.device = device
        self.gpu_descriptors = gpu_descriptors
        self._held: dict[str, Any] = {}
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._tag = hashlib.sha1(f"{url} {device} {gpu_descriptors}".encode()).hexdigest()[:12]

    def futures(
        self, partitions: Sequence[Partition], codebook_id: int | None = None
    ) -> tuple[list[str], list[Any], int]:
        """Keys and futures of ``partitions`` (loading the ones not held), and how many were loaded:
        their features, or with ``codebook_id`` their retrieval vectors
        (:func:`landmark.retrieval.shortlist.load_vectors`)."""
        from .retrieval.shortlist import load_vectors

        kind = "partition" if codebook_id is None else f"vectors-{codebook_id}"
        keys = [f"landmark-{kind}-{self._tag}-{p.lo}-{p.hi}-{p.rows}-{p.revision}" for p in partitions]
        # Drop what changed, and the vectors of an older codebook; dropping a future lets the
        # worker free its memory. Features and current vectors stay held side by side (vectors
        # are an eighth of the features' size), so switching search modes reads nothing again.
        wanted = set(keys)
        for key in list(self._held):
            replaced = key.startswith("landmark-vectors-") and codebook_id is not None
            if key not in wanted and (key.startswith(f"landmark-{kind}-") or replaced):
                del self._held[key]
        loaded = 0
        workers = sorted(self.client.scheduler_info().get("workers", {}))
        for index, (key, partition) in enumerate(zip(keys, partitions)):
            if key not in self._held:
                # Spread the partitions evenly over the workers: matching runs where a partition
                # lives, so an uneven spread would leave one worker finishing alone. Loose, so a
                # partition still loads if its worker has gone.
                where = {"workers": [workers[index % len(workers)]], "allow_other_workers": True} if workers else {}
                if codebook_id is None:
                    self._held[key] = self.client.submit(load_partition, self.url, partition, self.device,
                                                         self.gpu_descriptors, key=key, **where)
                else:
                    self._held[key] = self.client.submit(load_vectors, self.url, codebook_id, partition, key=key,
                                                         **where)
                loaded += 1
        return keys, [self._held[key] for key in keys], loaded

    def results(self, signature: str, keys: Sequence[str]) -> dict[str, Any]:
        """The match futures already held for query ``signature``, by partition key (the
        current ``keys`` only); the dict is the one to add new futures to."""
        held = self._results.pop(signature, {})
        held = {key: held[key] for key in keys if key in held}
        self._results[signature] = held
        while len(self._results) > self.RECENT_QUERIES:
            self._results.popitem(last=False)
        return held

    def clear(self) -> None:
        self._held.clear()
        self._results.clear()


def query_signature(query: Features, exclude_uri: str | None, config: MatchConfig) -> str:
    """Identifies a query's work: its features, the URI left out and the matching settings."""
    digest = hashlib.sha1()
    for part in (query.locations.tobytes(), query.descriptors.tobytes(), repr((exclude_uri, config)).encode()):
        digest.update(part)
    return digest.hexdigest()


def search(
    cache: PartitionCache,
    partitions: Sequence[Partition],
    query: Features,
    exclude_uri: str | None,
    config: MatchConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Candidate], int]:
    """Match ``query`` against every partition; returns the candidates and how many partitions
    had to be read from PostgreSQL (the rest were already held by the workers)."""
    from distributed import as_completed

    if not partitions:
        return [], 0
    client = cache.client
    keys, held, loaded = cache.futures(partitions)
    done = cache.results(query_signature(query, exclude_uri, config), keys)
    missing = [(key, partition) for key, partition in zip(keys, held) if key not in done]
    if missing:
        [query_future] = client.scatter([query], broadcast=True)
        for key, partition in missing:
            done[key] = client.submit(match_loaded, partition, query_future, exclude_uri, config, pure=False)
    candidates: list[Candidate] = []
    for future in as_completed([done[key] for key in keys]):
        candidates.extend(future.result())
        if progress is not None:
            progress(1)
    return candidates, loaded


def search_shortlist(
    cache: PartitionCache,
    partitions: Sequence[Partition],
    query: Features,
    query_vector: np.ndarray,
    codebook_id: int,
    exclude_uri: str | None,
    config: MatchConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Candidate], int, dict[str, int]]:
    """Verify the retrieval index's shortlist of ``config.shortlist`` images (and every image it
    does not cover); candidates, partitions read, and ``{"shortlisted", "unindexed"}``."""
    from .retrieval.shortlist import shortlist_and_verify

    _, held, loaded = cache.futures(partitions, codebook_id)
    rows, shortlisted, unindexed = shortlist_and_verify(
        cache.client, held, cache.url, query, query_vector, exclude_uri, config, config.shortlist, progress
    )
    candidates = [Candidate(uri, inliers, putative, score) for _, uri, inliers, putative, score in rows]
    return candidates, loaded, {"shortlisted": shortlisted, "unindexed": unindexed}


def rank(candidates: Sequence[Candidate], *, min_inliers: int, top_k: int) -> list[Candidate]:
    """Best first: most inliers, then the index's similarity (when it shortlisted them), then most
    putative matches, then URI (so ties are stable)."""
    kept = [c for c in candidates if c.inliers >= min_inliers and c.inliers > 0]
    kept.sort(key=lambda c: (-c.inliers, -(c.score or 0.0), -c.putative_matches, c.uri))
    return kept[:top_k]

