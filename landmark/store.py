"""The feature store: the ``landmarks`` table in PostgreSQL, through psycopg2.

The table layout and byte encodings are the contract's (:mod:`landmark.contract`). The
schema is created and migrated here (:mod:`landmark.schema`: under an advisory lock, so
concurrent workers agree). Without ``LANDMARK_DATABASE_URL`` the store is an embedded server
(:mod:`landmark.embedded`).

The connection survives the server restarting: it is checked before use when it has been idle
(:data:`PING_AFTER_S`) and reopened if it died; a read whose connection is lost midway is tried
once more on a new one. Other modules reach the database through :meth:`Store.transaction`
and :meth:`Store.run`, never through the connection itself.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from .contract import FeatureBatch, Features, decode_descriptors, decode_locations, encode_descriptors, encode_locations
from .errors import ExtractorMismatchError, StoreUnavailableError
from .schema import migrate

T = TypeVar("T")

PING_AFTER_S = 5.0
"""A connection idle for longer is checked (``SELECT 1``) before a transaction uses it: after a
server restart the check fails and a new connection is opened, where the transaction's first
statement would have failed instead (and a write cannot be repeated blindly)."""

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
    # 2: a revision per row, drawn anew whenever the row is written, so that readers can tell
    # whether a partition changed without reading it (cache invalidation on the Dask workers)
    """
    CREATE SEQUENCE IF NOT EXISTS landmark_revision;
    ALTER TABLE landmarks ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT nextval('landmark_revision');
    """,
    # 3: feature bytes are stored out of line uncompressed: float16 noise does not compress, and
    # trying costs more time than anything else when a row is written or read
    """
    ALTER TABLE landmarks ALTER COLUMN locations SET STORAGE EXTERNAL,
                          ALTER COLUMN descriptors SET STORAGE EXTERNAL;
    """,
    # 4, 5: the jobs tables, now migrations 1 and 2 of landmark.jobs.table (which owns them); the
    # numbers stay so that a store already past them is not migrated again
    "",
    "",
    # 6: descriptors stored as float16 or int8 (see landmark.contract); the length check follows
    """
    ALTER TABLE landmarks ADD COLUMN IF NOT EXISTS descriptor_encoding text NOT NULL DEFAULT 'float16'
        CHECK (descriptor_encoding IN ('float16', 'int8'));
    DO $$
    DECLARE name text;
    BEGIN
        FOR name IN SELECT conname FROM pg_constraint
                    WHERE conrelid = 'landmarks'::regclass AND contype = 'c'
                      AND pg_get_constraintdef(oid) LIKE '%length(descriptors)%'
        LOOP
            EXECUTE format('ALTER TABLE landmarks DROP CONSTRAINT %I', name);
        END LOOP;
    END $$;
    ALTER TABLE landmarks ADD CONSTRAINT landmarks_descriptor_bytes CHECK (
        length(descriptors) = CASE descriptor_encoding WHEN 'int8' THEN 1 ELSE 2 END * num_features * descriptor_dim
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
    descriptor_encoding: str = "float16"


@dataclass(frozen=True)
class Partition:
    """Stored images with ``lo <= id < hi``; ``rows`` and ``revision`` (the highest row revision)
    fingerprint its content: any insert, update or delete in the range changes one of them."""

    lo: int
    hi: int
    rows: int = 0
    revision: int = 0


def connect(url: str):  # noqa: ANN201 - psycopg2 connection
    import psycopg2

    try:
        return psycopg2.connect(url, connect_timeout=10, application_name="landmark")
    except psycopg2.OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "connection failed"
        raise StoreUnavailableError(f"cannot connect to PostgreSQL at {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _lost() -> tuple[type[BaseException], ...]:
    """psycopg2's errors that may mean the connection is gone (the server restarted or stopped)."""
    import psycopg2

    return (psycopg2.OperationalError, psycopg2.InterfaceError)


class Store:
    """A connection to one feature store, reopened when it dies."""

    def __init__(self, url: str, *, location: str | None = None, migrate: bool = True) -> None:
        self.url = url
        self.location = location or redact(url)
        self._conn: Any = None
        self._used = 0.0
        if migrate:
            self.migrate()

    def another(self) -> Store:
        """A second connection to the same store (opened on first use), for another thread: a
        psycopg2 connection runs one transaction at a time."""
        return Store(self.url, location=self.location, migrate=False)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the connection ------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A cursor in one transaction, committed when the block ends and rolled back if it raises.

        A connection that died since its last use is replaced first. One lost during the block
        is dropped, so that the next transaction opens a new one, and the failure is raised as
        :class:`StoreUnavailableError` naming the store.
        """
        conn = self._live()
        try:
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except BaseException as error:
            if not conn.closed:
                conn.rollback()  # the statement failed (a timeout, a conflict, a bug), not the connection
                raise
            self._conn = None
            if not isinstance(error, _lost()):
                raise
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StoreUnavailableError(f"lost the connection to PostgreSQL at {self.location}: {reason}") from error
        finally:
            self._used = time.monotonic()

    def run(self, work: Callable[[Any], T], *, retry: bool = False) -> T:
        """``work(cursor)`` in one transaction; with ``retry`` (for reads, which are safe to
        repeat), once more on a new connection when the first one was lost midway."""
        if retry:
            try:
                with self.transaction() as cur:
                    return work(cur)
            except StoreUnavailableError as error:
                if not isinstance(error.__cause__, _lost()):
                    raise  # could not even connect: trying again at once will not help
        with self.transaction() as cur:
            return work(cur)

    def ping(self) -> str:
        """Check that the database answers; returns where the store is."""
        self.run(lambda cur: cur.execute("SELECT 1"), retry=True)
        return self.location

    def _live(self) -> Any:
        conn = self._conn
        if conn is not None and not conn.closed and time.monotonic() - self._used > PING_AFTER_S:
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.rollback()
            except _lost():
                conn.close()
        if conn is None or conn.closed:
            conn = self._conn = connect(self.url)
            self._used = time.monotonic()
        return conn

    # -- schema ------------------------------------------------------------------------

    def migrate(self) -> None:
        with self.transaction() as cur:
            migrate(cur, "landmark_schema", MIGRATIONS, self.location)

    # -- extractor binding -------------------------------------------------------------

    def extractor_spec(self) -> ExtractorSpec | None:
        row = self.run(lambda cur: _one(cur, "SELECT value FROM landmark_meta WHERE key = 'extractor'"), retry=True)
        return ExtractorSpec(row[0]["name"], row[0]["config"]) if row else None

    def bind(self, spec: ExtractorSpec) -> ExtractorSpec:
        """Bind an unbound store to ``spec``; a bound store must already be bound to it."""
        value = json.dumps({"name": spec.name, "config": spec.config}, sort_keys=True)
        with self.transaction() as cur:
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
        sql = "SELECT uri, content_sha256 FROM landmarks WHERE uri = ANY(%s)"
        return dict(self.run(lambda cur: _all(cur, sql, (list(uris),)), retry=True))

    def upsert(self, rows: Iterable[Row], *, also: Callable[[Any], None] | None = None) -> int:
        """Write ``rows`` in one transaction: a binary COPY into a temporary table, then one
        ``INSERT ... ON CONFLICT``; an existing URI's row is replaced. Returns rows written.
        ``also(cursor)`` then writes what belongs with the rows (their thumbnails) in the same
        transaction.

        A row whose content hash and extractor are unchanged is left as it is (``added_at``
        included), so writing the same images twice leaves the table as it was.
        """
        rows = list(rows)
        if not rows:
            return 0
        with self.transaction() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS landmark_incoming (uri text, extractor text, width integer, "
                "height integer, num_features integer, descriptor_dim integer, locations bytea, "
                "descriptors bytea, descriptor_encoding text, content_sha256 text) ON COMMIT DELETE ROWS"
            )
            cur.copy_expert(
                f"COPY landmark_incoming ({INCOMING_COLUMNS}) FROM STDIN WITH (FORMAT binary)",
                io.BytesIO(copy_binary(rows)),
            )
            cur.execute(
                f"""
                INSERT INTO landmarks ({INCOMING_COLUMNS})
                SELECT DISTINCT ON (uri) {INCOMING_COLUMNS} FROM landmark_incoming
                ON CONFLICT (uri) DO UPDATE SET
                    extractor = excluded.extractor, width = excluded.width, height = excluded.height,
                    num_features = excluded.num_features, descriptor_dim = excluded.descriptor_dim,
                    locations = excluded.locations, descriptors = excluded.descriptors,
                    descriptor_encoding = excluded.descriptor_encoding, content_sha256 = excluded.content_sha256, added_at = now(),
                    revision = nextval('landmark_revision')
                WHERE (landmarks.content_sha256, landmarks.extractor)
                      IS DISTINCT FROM (excluded.content_sha256, excluded.extractor)
                """
            )
            written = cur.rowcount
            if also is not None:
                also(cur)
            return written

    # -- reads ---------------------------------------------------------------------------

    def count(self) -> int:
        return int(self.run(lambda cur: _one(cur, "SELECT count(*) FROM landmarks"), retry=True)[0])

    def partitions(self, size: int) -> list[Partition]:
        """The table as id blocks ``[k * size, (k + 1) * size)``, non-empty ones only, with their
        fingerprints. Blocks stay put as the table grows, so unchanged ones keep their cache."""
        sql = "SELECT id / %s AS block, count(*), max(revision) FROM landmarks GROUP BY block ORDER BY block"
        blocks = self.run(lambda cur: _all(cur, sql, (size,)), retry=True)
        return [Partition(b * size, (b + 1) * size, int(n), int(r)) for b, n, r in blocks]

    def read_partition(self, partition: Partition, exclude_uri: str | None = None) -> tuple[list[str], list[Features]]:
        return self.run(lambda cur: _partition_rows(cur, partition, exclude_uri), retry=True)

    def stats(self) -> dict[str, Any]:
        images, features, feature_bytes = self.run(lambda cur: _one(
            cur, "SELECT count(*), coalesce(sum(num_features), 0), "
            "coalesce(sum(length(locations) + length(descriptors)), 0) FROM landmarks"), retry=True)
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
        row = self.run(lambda cur: _one(
            cur, "SELECT width, height, descriptor_dim, locations, descriptors, descriptor_encoding "
            "FROM landmarks WHERE uri = %s", (uri,)), retry=True)
        return _features(*row) if row else None


def _one(cur: Any, sql: str, params: tuple = ()) -> Any:
    cur.execute(sql, params)
    return cur.fetchone()


def _all(cur: Any, sql: str, params: tuple = ()) -> list[Any]:
    cur.execute(sql, params)
    return cur.fetchall()


def _partition_rows(cur: Any, partition: Partition, exclude_uri: str | None) -> tuple[list[str], list[Features]]:
    rows = _all(
        cur, "SELECT uri, width, height, descriptor_dim, locations, descriptors, descriptor_encoding FROM landmarks "
        "WHERE id >= %s AND id < %s AND uri IS DISTINCT FROM %s ORDER BY id",
        (partition.lo, partition.hi, exclude_uri),
    )
    return [r[0] for r in rows], [_features(*r[1:]) for r in rows]


def read_partition(conn: Any, partition: Partition, exclude_uri: str | None) -> tuple[list[str], list[Features]]:
    """URIs and features of the rows in ``partition``, in id order, less ``exclude_uri``, on a
    connection of the caller's own (a Dask worker's)."""
    with conn, conn.cursor() as cur:
        return _partition_rows(cur, partition, exclude_uri)


@dataclass(frozen=True)
class StoredRows:
    """Stored images read by id, in id order."""

    ids: list[int]
    uris: list[str]
    revisions: list[int]
    features: list[Features]


def read_rows(cur: Any, ids: Sequence[int]) -> StoredRows:
    """The stored images among ``ids``."""
    cur.execute(
        "SELECT id, uri, revision, width, height, descriptor_dim, locations, descriptors, descriptor_encoding "
        "FROM landmarks WHERE id = ANY(%s) ORDER BY id",
        (list(map(int, ids)),),
    )
    rows = cur.fetchall()
    return StoredRows([int(r[0]) for r in rows], [r[1] for r in rows], [int(r[2]) for r in rows],
                      [_features(*r[3:]) for r in rows])


def rows_with_hashes(cur: Any, hashes: dict[str, str]) -> list[tuple[str, int, int]]:
    """``(uri, id, revision)`` of the stored images whose URI and content hash are in ``hashes``."""
    cur.execute("SELECT uri, id, revision, content_sha256 FROM landmarks WHERE uri = ANY(%s)", (list(hashes),))
    return [(uri, int(i), int(r)) for uri, i, r, sha in cur.fetchall() if hashes.get(uri) == sha]


def read_batch(conn: Any, partition: Partition) -> tuple[list[str], FeatureBatch]:
    """URIs and features of every row in ``partition``, in id order, as one batch."""
    uris, features = read_partition(conn, partition, None)
    return uris, FeatureBatch.of(features)


def _features(width: int, height: int, dim: int, locations: Any, descriptors: Any, encoding: str) -> Features:
    return Features(
        decode_locations(bytes(locations)), decode_descriptors(bytes(descriptors), dim, encoding), (width, height)
    )


INCOMING_COLUMNS = (
    "uri, extractor, width, height, num_features, descriptor_dim, locations, descriptors, descriptor_encoding, "
    "content_sha256"
)


def copy_binary(rows: Sequence[Row]) -> bytes:
    """``rows`` in PostgreSQL's binary COPY format, columns in :data:`INCOMING_COLUMNS` order.

    Binary COPY sends the feature bytes as they are: no hex escaping (which doubles them) and no
    SQL text to parse, several times faster than a multi-row INSERT for rows of ~100 kB.
    """
    out = io.BytesIO()
    out.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0))
    for row in rows:
        f = row.features
        fields = (
            row.uri.encode(), row.extractor.encode(), f.image_size[0], f.image_size[1], f.num_features,
            f.descriptor_dim, encode_locations(f.locations),
            encode_descriptors(f.descriptors, row.descriptor_encoding), row.descriptor_encoding.encode(),
            row.content_sha256.encode(),
        )
        out.write(struct.pack("!h", len(fields)))
        for value in fields:
            if isinstance(value, bytes):
                out.write(struct.pack("!i", len(value)))
                out.write(value)
            else:
                out.write(struct.pack("!ii", 4, value))
    out.write(struct.pack("!h", -1))
    return out.getvalue()

