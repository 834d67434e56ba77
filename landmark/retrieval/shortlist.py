"""A query through the index, on Dask: shortlist by VLAD similarity, then verify the shortlist.

1. Each Dask worker holds the VLAD vectors of its partitions (read from PostgreSQL once, where
   they are float16, and kept as float32, 16 kB per image: a product over them is then one pass
   over memory, where widening float16 on every query would cost more than the product) and,
   in one task per worker, returns the ``k`` most similar images of all its partitions, plus
   every image that has no current vector.
2. The client keeps the ``k`` most similar overall.
3. The shortlist and the images without a vector are read from PostgreSQL by id and verified
   (putative matching + RANSAC, as in exhaustive mode) in a few tasks spread over the workers.

No process holds more than its partitions' vectors and one chunk of features, and an image the
index does not cover yet is always verified, so the index can lag behind without hiding anything.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..contract import FeatureBatch, Features
from ..matching import MatchConfig, match_batch
from ..store import Partition

@dataclass(frozen=True, eq=False)
class HeldVectors:
    """A partition's VLAD vectors as a worker holds them between queries."""

    ids: np.ndarray
    """``[n]`` image ids, ascending"""
    uris: list[str]
    vectors: np.ndarray
    """``[m x dim]`` float32: the images that have a current vector"""
    indexed: np.ndarray
    """``[m]`` positions in ``ids`` of those images"""
    unindexed: np.ndarray
    """positions in ``ids`` of the images without one"""

    def __sizeof__(self) -> int:  # lets Dask account for the memory it holds
        return self.vectors.nbytes + self.ids.nbytes + sum(len(u) + 49 for u in self.uris)


def load_vectors(url: str, codebook_id: int, partition: Partition) -> HeldVectors:
    """Runs on a Dask worker: read one partition's vectors."""
    from ..worker_db import worker_cursor
    from .table import read_vectors

    with worker_cursor(url) as cur:
        ids, uris, indexed, vectors = read_vectors(cur, codebook_id, partition)
    unindexed = np.setdiff1d(np.arange(len(ids)), indexed)
    return HeldVectors(ids, uris, vectors.astype(np.float32), indexed, unindexed)


def most_similar(
    held: HeldVectors, query: np.ndarray, exclude_uri: str | None, k: int
) -> tuple[list[tuple[float, int]], list[int]]:
    """Runs on a Dask worker: ``(score, id)`` of the ``k`` images of ``held`` most similar to
    ``query`` ``[dim]`` (best first), and the ids of its images without a vector."""
    scores = held.vectors @ np.asarray(query, np.float32) if len(held.indexed) else np.zeros(0, np.float32)
    excluded = {i for i, uri in enumerate(held.uris) if uri == exclude_uri}
    if excluded:
        scores[np.isin(held.indexed, list(excluded))] = -np.inf
    if len(scores) > k:  # the k best in linear time, then only those sorted
        candidates = np.argpartition(-scores, k)[:k]
        top = candidates[np.lexsort((held.ids[held.indexed[candidates]], -scores[candidates]))]
    else:
        top = np.lexsort((held.ids[held.indexed], -scores))
    best = [(float(scores[i]), int(held.ids[held.indexed[i]])) for i in top if np.isfinite(scores[i])]
    return best, [int(held.ids[i]) for i in held.unindexed if i not in excluded]


def most_similar_of_all(
    held: Sequence[HeldVectors], query: np.ndarray, exclude_uri: str | None, k: int
) -> tuple[list[tuple[float, int]], list[int]]:
    """Runs on a Dask worker: :func:`most_similar` over the partitions it holds, merged (one
    task per worker, where one per partition would cost more in scheduling than in scoring)."""
    parts = [most_similar(h, query, exclude_uri, k) for h in held]
    return merge_shortlists([best for best, _ in parts], k), [i for _, missing in parts for i in missing]


def merge_shortlists(parts: Sequence[list[tuple[float, int]]], k: int) -> list[tuple[float, int]]:
    """The ``k`` best ``(score, id)`` of per-partition lists, best first, ties by id."""
    return heapq.nsmallest(k, (item for part in parts for item in part), key=lambda item: (-item[0], item[1]))


def verify_ids(url: str, ids: Sequence[int], query: Features, config: MatchConfig) -> list[tuple[int, str, int, int]]:
    """Runs on a Dask worker: ``(id, uri, inliers, putative matches)`` of the stored images
    ``ids`` matched against ``query``."""
    from ..worker_db import worker_cursor
    from ..store import read_rows

    with worker_cursor(url) as cur:
        rows = read_rows(cur, ids)
    if not rows.ids:
        return []
    counts = match_batch(query, FeatureBatch.of(rows.features), config)
    return [(i, uri, int(c[0]), int(c[1])) for i, uri, c in zip(rows.ids, rows.uris, counts)]


def chunked(ids: Sequence[int], parts: int) -> list[list[int]]:
    """``ids`` in at most ``parts`` chunks of near-equal size, order kept."""
    parts = max(1, min(parts, len(ids)))
    size = -(-len(ids) // parts)
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


def shortlist_and_verify(
    client: Any,
    held: Sequence[Any],
    url: str,
    query: Features,
    query_vector: np.ndarray,
    exclude_uri: str | None,
    config: MatchConfig,
    k: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[tuple[int, str, int, int, float | None]], int, int]:
    """Shortlist ``k`` images from the ``held`` vector futures and verify them with every image
    the index does not cover; ``([(id, uri, inliers, putative, score or None)], shortlisted,
    unindexed)``."""
    workers = sorted(client.scheduler_info().get("workers", {}))
    # The partition cache put partition i on workers[i % n]: score each worker's on that worker.
    groups = [list(held[w::len(workers)]) for w in range(len(workers))] if workers else [list(held)]
    scored = client.gather([
        client.submit(most_similar_of_all, group, query_vector, exclude_uri, k, pure=False,
                      **({"workers": [workers[w]], "allow_other_workers": True} if workers else {}))
        for w, group in enumerate(groups) if group
    ])
    if progress is not None:
        progress(len(held))
    best = merge_shortlists([s for s, _ in scored], k)
    unindexed = sorted({i for _, missing in scored for i in missing})
    score_of = {i: s for s, i in best}
    ids = sorted(score_of) + unindexed
    if not ids:
        return [], 0, 0
    [query_future] = client.scatter([query], broadcast=True)
    futures = [client.submit(verify_ids, url, chunk, query_future, config, pure=False)
               for chunk in chunked(ids, 2 * max(1, len(workers)))]
    verified = [row for part in client.gather(futures) for row in part]
    return [(i, uri, inl, put, score_of.get(i)) for i, uri, inl, put in verified], len(best), len(unindexed)
