"""A small picture of every stored image, so that a results page can show it.

The ``thumbnails`` table holds one JPEG per stored image, at most :data:`SIDE` px on its longer
side, made at index time from the decoded image the features came from (same orientation and
aspect, so a feature's location maps onto it by a scale per axis) and written in the same
transaction as the image's row. Pages then work when the originals are on S3 or gone, and cost
one read of a few kB per match. This module owns the table: its migrations (numbered apart,
in ``landmark_thumbnails_schema``; :mod:`landmark.schema`) and all its SQL are here.

=========  ======  ======================================================================
column     type    meaning
=========  ======  ======================================================================
uri        text    the image's URI, as in ``landmarks`` (deleting the row deletes this one)
jpeg       bytea   baseline JPEG, quality :data:`QUALITY`, longer side at most :data:`SIDE`
=========  ======  ======================================================================
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .schema import migrate_once

if TYPE_CHECKING:
    from .store import Store

SIDE = 256
"""Longer side of a thumbnail in pixels: two side by side fit a laptop's page at full size."""

QUALITY = 80
"""JPEG quality: 12 kB for a 256 px photo on average (the 46 photos of the shared landmarks: 10-17
kB); 90 takes 45% more bytes for no difference visible at that size, 70 a fifth less with blocks
visible on skies."""

MIGRATIONS: tuple[str, ...] = (
    # 1: the table (JPEG bytes do not compress: stored out of line as they are)
    """
    CREATE TABLE IF NOT EXISTS thumbnails (
        uri  text PRIMARY KEY REFERENCES landmarks (uri) ON DELETE CASCADE,
        jpeg bytea NOT NULL
    );
    ALTER TABLE thumbnails ALTER COLUMN jpeg SET STORAGE EXTERNAL;
    """,
)


def encode(image: np.ndarray) -> bytes:
    """uint8 RGB ``[H x W x 3]`` -> JPEG bytes of the image shrunk to at most :data:`SIDE` px
    on its longer side (never enlarged)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    picture.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=QUALITY)
    return buffer.getvalue()


def size(jpeg: bytes) -> tuple[int, int]:
    """``(width, height)`` of a thumbnail, read from its header."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as picture:
        return picture.size


class Thumbnails:
    """The ``thumbnails`` table of one store, through the store's transactions (migrated on first
    use in a process, after the store's own tables, which it refers to)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        migrate_once(store, "landmark_thumbnails_schema", MIGRATIONS)

    def read(self, uris: Iterable[str]) -> dict[str, bytes]:
        """``{uri: jpeg}`` of those of ``uris`` that have a thumbnail."""
        uris = list(uris)
        if not uris:
            return {}
        rows = self._store.run(lambda cur: _all(cur, "SELECT uri, jpeg FROM thumbnails WHERE uri = ANY(%s)", uris),
                               retry=True)
        return {uri: bytes(jpeg) for uri, jpeg in rows}

    def missing(self, uris: Iterable[str]) -> set[str]:
        """Those of ``uris`` that have no thumbnail (stored before thumbnails were kept, or not stored)."""
        uris = list(uris)
        if not uris:
            return set()
        rows = self._store.run(lambda cur: _all(cur, "SELECT uri FROM thumbnails WHERE uri = ANY(%s)", uris),
                               retry=True)
        return set(uris) - {row[0] for row in rows}

    @staticmethod
    def writer(pictures: Mapping[str, bytes]) -> Callable[[Any], None]:
        """A step that writes ``{uri: jpeg}`` on a cursor, replacing what the URIs had; for
        :meth:`landmark.store.Store.upsert` to run in the transaction that writes their rows."""
        items = [(uri, _binary(jpeg)) for uri, jpeg in pictures.items()]

        def write(cur: Any) -> None:
            if items:
                cur.executemany(
                    "INSERT INTO thumbnails (uri, jpeg) VALUES (%s, %s) "
                    "ON CONFLICT (uri) DO UPDATE SET jpeg = excluded.jpeg",
                    items,
                )

        return write


def _all(cur: Any, sql: str, uris: list[str]) -> list[Any]:
    cur.execute(sql, (uris,))
    return cur.fetchall()


def _binary(data: bytes) -> Any:
    import psycopg2

    return psycopg2.Binary(data)
