"""The retrieval index's tables and all their SQL: codebooks, and one VLAD vector per image.

==================  ===========================================================================
``retrieval_codebooks``  one row per codebook: ``words x dim`` float32 centroids, the images
                         the store held when it was trained, and ``complete`` once every image
                         then stored has its vector (the newest complete one is the current)
``retrieval_vectors``    per image and codebook: the float16 VLAD vector and the image row's
                         ``revision`` it was computed from
==================  ===========================================================================

A vector is current only while its ``revision`` equals the image row's: an image written again
(changed bytes, another extractor) has no current vector until one is computed from its new
features, so a stale vector is never used. Images without a current vector are verified
exhaustively by every query (see :mod:`landmark.retrieval.shortlist`), so the index never hides
an image, however far behind it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..schema import migrate_once
from ..store import Partition

if TYPE_CHECKING:
    from ..store import Store

VERSION_TABLE = "retrieval_schema"

MIGRATIONS: tuple[str, ...] = (
    # 1: codebooks and vectors
    """
    CREATE TABLE IF NOT EXISTS retrieval_codebooks (
        id         serial PRIMARY KEY,
        extractor  text NOT NULL,
        words      integer NOT NULL CHECK (words > 0),
        dim        integer NOT NULL CHECK (dim > 0),
        centroids  bytea NOT NULL CHECK (length(centroids) = 4 * words * dim),
        images     integer NOT NULL,
        complete   boolean NOT NULL DEFAULT false,
        trained_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS retrieval_vectors (
        landmark_id bigint NOT NULL REFERENCES landmarks (id) ON DELETE CASCADE,
        codebook_id integer NOT NULL REFERENCES retrieval_codebooks (id) ON DELETE CASCADE,
        revision    bigint NOT NULL,
        vector      bytea NOT NULL,
        PRIMARY KEY (codebook_id, landmark_id)
    );
    ALTER TABLE retrieval_vectors ALTER COLUMN vector SET STORAGE EXTERNAL;
    """,
)


@dataclass(frozen=True)
class Codebook:
    id: int
    extractor: str
    centroids: np.ndarray
    """``[words x dim]`` float32"""
    images: int
    """images in the store when it was trained"""
    complete: bool


@dataclass(frozen=True)
class Coverage:
    """How much of the store the current codebook covers."""

    images: int
    indexed: int
    """images with a current vector"""

    @property
    def missing(self) -> int:
        return self.images - self.indexed


@contextmanager
def transaction(store: Store) -> Iterator[Any]:
    """A cursor on ``store`` in one transaction, with these tables brought up to date first (once
    per store and process)."""
    migrate_once(store, VERSION_TABLE, MIGRATIONS)
    with store.transaction() as cur:
        yield cur


def encode_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f2").tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """``[n x dim]`` float16 from ``n`` blobs of :func:`encode_vector`."""
    if not blobs:
        return np.zeros((0, dim), np.float16)
    return np.frombuffer(b"".join(bytes(b) for b in blobs), dtype="<f2").reshape(len(blobs), dim)


def current_codebook(cur: Any) -> Codebook | None:
    """The newest complete codebook, or ``None``."""
    cur.execute(
        "SELECT id, extractor, words, dim, centroids, images, complete FROM retrieval_codebooks "
        "WHERE complete ORDER BY id DESC LIMIT 1"
    )
    row = cur.fetchone()
    if row is None:
        return None
    id_, extractor, words, dim, centroids, images, complete = row
    matrix = np.frombuffer(bytes(centroids), dtype="<f4").reshape(words, dim).copy()
    return Codebook(id_, extractor, matrix, images, complete)


def add_codebook(cur: Any, extractor: str, centroids: np.ndarray, images: int) -> int:
    """Record a new (not yet complete) codebook; its id."""
    words, dim = centroids.shape
    cur.execute(
        "INSERT INTO retrieval_codebooks (extractor, words, dim, centroids, images) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id",
        (extractor, words, dim, np.asarray(centroids, dtype="<f4").tobytes(), images),
    )
    return int(cur.fetchone()[0])


def complete_codebook(cur: Any, codebook_id: int) -> None:
    """Make ``codebook_id`` the current codebook and drop the older ones (and their vectors)."""
    cur.execute("UPDATE retrieval_codebooks SET complete = true WHERE id = %s", (codebook_id,))
    cur.execute("DELETE FROM retrieval_codebooks WHERE id < %s", (codebook_id,))


def put_vectors(cur: Any, codebook_id: int, rows: Iterable[tuple[int, int, np.ndarray]]) -> None:
    """Store ``(landmark id, revision, vector)`` rows for ``codebook_id`` (replacing older ones)."""
    from psycopg2.extras import execute_values

    execute_values(
        cur,
        "INSERT INTO retrieval_vectors (codebook_id, landmark_id, revision, vector) VALUES %s "
        "ON CONFLICT (codebook_id, landmark_id) DO UPDATE SET revision = excluded.revision, vector = excluded.vector",
        [(codebook_id, int(i), int(r), encode_vector(v)) for i, r, v in rows],
        page_size=256,
    )


def missing_ids(cur: Any, codebook_id: int, limit: int) -> list[int]:
    """Up to ``limit`` ids of images without a current vector for ``codebook_id``, in id order."""
    cur.execute(
        "SELECT l.id FROM landmarks l LEFT JOIN retrieval_vectors v "
        "ON v.codebook_id = %s AND v.landmark_id = l.id AND v.revision = l.revision "
        "WHERE v.landmark_id IS NULL ORDER BY l.id LIMIT %s",
        (codebook_id, limit),
    )
    return [int(r[0]) for r in cur.fetchall()]


def coverage(cur: Any, codebook_id: int) -> Coverage:
    cur.execute(
        "SELECT count(*), count(v.landmark_id) FROM landmarks l LEFT JOIN retrieval_vectors v "
        "ON v.codebook_id = %s AND v.landmark_id = l.id AND v.revision = l.revision",
        (codebook_id,),
    )
    images, indexed = cur.fetchone()
    return Coverage(int(images), int(indexed))


def read_vectors(
    cur: Any, codebook_id: int, partition: Partition
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The images of ``partition`` in id order: ids ``[n]``, URIs, the positions ``[m]`` of those
    with a current vector, and those vectors ``[m x dim]`` float16."""
    cur.execute(
        "SELECT l.id, l.uri, v.vector FROM landmarks l LEFT JOIN retrieval_vectors v "
        "ON v.codebook_id = %s AND v.landmark_id = l.id AND v.revision = l.revision "
        "WHERE l.id >= %s AND l.id < %s ORDER BY l.id",
        (codebook_id, partition.lo, partition.hi),
    )
    rows = cur.fetchall()
    present = [n for n, row in enumerate(rows) if row[2] is not None]
    blobs = [rows[n][2] for n in present]
    dim = len(bytes(blobs[0])) // 2 if blobs else 0
    return (np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], np.array(present, dtype=np.int64),
            decode_vectors(blobs, dim))
