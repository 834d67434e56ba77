"""The feature store: the ``landmarks`` table in PostgreSQL, through psycopg2.

The table layout and byte encodings are the contract's (:mod:`landmark.contract`). The
schema is created and migrated here, under an advisory lock so concurrent workers agree.
Without ``LANDMARK_DATABASE_URL`` the store is an embedded server (:mod:`landmark.embedded`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .contract import Features, decode_descriptors, decode_locations, encode_descriptors, encode_locations
from .errors import ExtractorMismatchError, StoreError

SCHEMA_LOCK = 0x6C616E64  # "land": advisory lock key for migrations

MIGRATIONS: tuple[str, ...] = (
    # 1: the landmarks table and its metadata
    """
    CREATE TABLE IF NOT EXISTS landmark_meta (
        key   text PRIMARY KEY,
        value jsonb NOT NULL
    );
    CREATE TABLE IF NOT EXISTS landmarks (
        id             bigserial PRIMARY KEY,
        uri            text NOT NULL UNIQUE,
        extractor      text NOT NULL,
        width          integer NOT NULL CHECK (width > 0),
        height         integer NOT NULL CHECK (height > 0),
        num_features   integer NOT NULL CHECK (num_features >= 0),
        descriptor_dim integer NOT NULL CHECK (descriptor_dim > 0),
        locations      bytea NOT NULL,
        descriptors    bytea NOT NULL,
        content_sha256 text NOT NULL,
        added_at       timestamptz NOT NULL DEFAULT now(),
        CHECK (length(locations) = 4 * num_features),
        CHECK (length(descriptors) = 2 * num_features * descriptor_dim)
    );
    """,
)


@dataclass(frozen=True)
class ExtractorSpec:
    """The extractor a store is bound to: its name and every setting."""

    name: str
    config: dict[str, Any]

    def describe(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"{self.name} ({options})"


@dataclass(frozen=True)
class Row:
    """One image ready to be written."""

    uri: str
    extractor: str
    features: Features
    content_sha256: str


@dataclass(frozen=True)
class Partition:
    """Stored images with ``lo <= id < hi``."""

    lo: int
    hi: int


def connect(url: str):  # noqa: ANN201 - psycopg2 connection
    import psycopg2

    try:
        return psycopg2.connect(url, connect_timeout=10, application_name="landmark")
    except psycopg2.OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "connection failed"
        raise StoreError(f"cannot connect to PostgreSQL at {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class Store:
    """A connection to one feature store."""

    def __init__(self, url: str, *, location: str | None = None) -> None:
        self.url = url
        self.location = location or redact(url)
        self._conn = connect(url)
        self.migrate()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------

    def migrate(self) -> None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS landmark_schema (version integer NOT NULL)")
            cur.execute("SELECT version FROM landmark_schema")
            row = cur.fetchone()
            version = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"store at {self.location} has schema version {version}, newer than this "
                    f"landmark ({len(MIGRATIONS)}); upgrade landmark"
                )
            for sql in MIGRATIONS[version:]:
                cur.execute(sql)
            if row is None:
                cur.execute("INSERT INTO landmark_schema VALUES (%s)", (len(MIGRATIONS),))
            else:
                cur.execute("UPDATE landmark_schema SET version = %s", (len(MIGRATIONS),))

    # -- extractor binding -------------------------------------------------------------

    def extractor_spec(self) -> ExtractorSpec | None:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT value FROM landmark_meta WHERE key = 'extractor'")
            row = cur.fetchone()
        return ExtractorSpec(row[0]["name"], row[0]["config"]) if row else None

    def bind(self, spec: ExtractorSpec) -> ExtractorSpec:
        """Bind an unbound store to ``spec``; a bound store must already be bound to it."""
        value = json.dumps({"name": spec.name, "config": spec.config}, sort_keys=True)
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO landmark_meta (key, value) VALUES ('extractor', %s) ON CONFLICT (key) DO NOTHING",
                (value,),
            )
        bound = self.extractor_spec()
        assert bound is not None
        if bound != spec:
            raise self.mismatch(bound, spec.describe())
        return bound

    def mismatch(self, bound: ExtractorSpec, asked: str) -> ExtractorMismatchError:
        return ExtractorMismatchError(
            f"store at {self.location} holds features of extractor {bound.describe()}; "
            f"refusing to mix in {asked}. Use the same extractor, or a new store "
            "(another LANDMARK_HOME or LANDMARK_DATABASE_URL)"
        )

    # -- writes --------------------------------------------------------------------------

    def content_hashes(self, uris: Sequence[str]) -> dict[str, str]:
        """``{uri: content_sha256}`` for those of ``uris`` already stored."""
        if not uris:
            return {}
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT uri, content_sha256 FROM landmarks WHERE uri = ANY(%s)", (list(uris),))
            return dict(cur.fetchall())

    def upsert(self, rows: Iterable[Row]) -> int:
        """Write ``rows`` in one multi-row statement; an existing URI's row is replaced.

        A row whose content hash and extractor are unchanged is left as it is (``added_at``
        included), so writing the same images twice leaves the table as it was.
        """
        from psycopg2.extras import execute_values

        values = [
            (
                row.uri, row.extractor, row.features.image_size[0], row.features.image_size[1],
                row.features.num_features, row.features.descriptor_dim,
                encode_locations(row.features.locations), encode_descriptors(row.features.descriptors),
                row.content_sha256,
            )
            for row in rows
        ]
        if not values:
            return 0
        with self._conn, self._conn.cursor() as cur:
            execute_values(
                cur,
                """
                INSERT INTO landmarks (uri, extractor, width, height, num_features, descriptor_dim,
                                       locations, descriptors, content_sha256)
                VALUES %s
                ON CONFLICT (uri) DO UPDATE SET
                    extractor = excluded.extractor, width = excluded.width, height = excluded.height,
                    num_features = excluded.num_features, descriptor_dim = excluded.descriptor_dim,
                    locations = excluded.locations, descriptors = excluded.descriptors,
                    content_sha256 = excluded.content_sha256, added_at = now()
                WHERE (landmarks.content_sha256, landmarks.extractor)
                      IS DISTINCT FROM (excluded.content_sha256, excluded.extractor)
                """,
                [tuple(_adapt(v) for v in value) for value in values],
                page_size=len(values),
            )
            return cur.rowcount

    # -- reads ---------------------------------------------------------------------------

    def count(self) -> int:
        with self._conn, self._conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM landmarks")
            return int(cur.fetchone()[0])

    def partitions(self, size: int) -> list[Partition]:
        """Split the table into id ranges of about ``size`` rows, reading only ids."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                """
                SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM landmarks) AS t
                WHERE (n - 1) %% %s = 0 ORDER BY id
                """,
                (size,),
            )
            starts = [r[0] for r in cur.fetchall()]
            if not starts:
                return []
            cur.execute("SELECT max(id) FROM landmarks")
            last = cur.fetchone()[0]
        bounds = starts + [last + 1]
        return [Partition(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def read_partition(self, partition: Partition, exclude_uri: str | None = None) -> tuple[list[str], list[Features]]:
        return read_partition(self._conn, partition, exclude_uri)

    def stats(self) -> dict[str, Any]:
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), coalesce(sum(num_features), 0), "
                "coalesce(sum(length(locations) + length(descriptors)), 0) FROM landmarks"
            )
            images, features, feature_bytes = cur.fetchone()
        spec = self.extractor_spec()
        return {
            "store": self.location,
            "extractor": spec.name if spec else None,
            "extractor_config": spec.config if spec else None,
            "images": int(images),
            "features": int(features),
            "feature_bytes": int(feature_bytes),
        }

    def fetch(self, uri: str) -> Features | None:
        """The stored features of ``uri``, or ``None``."""
        with self._conn, self._conn.cursor() as cur:
            cur.execute(
                "SELECT width, height, descriptor_dim, locations, descriptors FROM landmarks WHERE uri = %s",
                (uri,),
            )
            row = cur.fetchone()
        return _features(*row) if row else None


def read_partition(conn: Any, partition: Partition, exclude_uri: str | None) -> tuple[list[str], list[Features]]:
    """URIs and features of the rows in ``partition``, in id order, less ``exclude_uri``."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT uri, width, height, descriptor_dim, locations, descriptors FROM landmarks "
            "WHERE id >= %s AND id < %s AND uri IS DISTINCT FROM %s ORDER BY id",
            (partition.lo, partition.hi, exclude_uri),
        )
        rows = cur.fetchall()
    return [r[0] for r in rows], [_features(*r[1:]) for r in rows]


def _features(width: int, height: int, dim: int, locations: Any, descriptors: Any) -> Features:
    return Features(decode_locations(bytes(locations)), decode_descriptors(bytes(descriptors), dim), (width, height))


def _adapt(value: Any) -> Any:
    import psycopg2

    return psycopg2.Binary(value) if isinstance(value, bytes) else value

