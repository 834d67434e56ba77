"""The landmarks table on a real (embedded) PostgreSQL."""

from __future__ import annotations

import numpy as np
import psycopg2
import pytest

from landmark.contract import Features, l2_normalise
from landmark.errors import ExtractorMismatchError, StoreError
from landmark.store import ExtractorSpec, Partition, Row, Store

pytestmark = pytest.mark.integration


def features(seed: int, n: int = 50, dim: int = 40) -> Features:
    rng = np.random.default_rng(seed)
    return Features(rng.random((n, 2)) * [640, 480], l2_normalise(rng.normal(size=(n, dim))), (640, 480))


def table(url: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, uri, extractor, num_features, content_sha256, added_at, "
                    "md5(locations), md5(descriptors) FROM landmarks ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    return rows


def test_schema_is_created_and_migrating_again_is_harmless(database_url: str) -> None:
    with Store(database_url) as store:
        store.migrate()
        assert store.stats()["images"] == 0
    with Store(database_url) as store:
        assert store.extractor_spec() is None


def test_a_newer_schema_is_refused(database_url: str) -> None:
    Store(database_url).close()
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE landmark_schema SET version = 99")
    conn.close()
    with pytest.raises(StoreError, match="has schema version 99, newer than this landmark"):
        Store(database_url)


def test_store_is_bound_to_one_extractor(database_url: str) -> None:
    with Store(database_url) as store:
        spec = ExtractorSpec("rootsift", {"max_features": 1000})
        assert store.bind(spec) == spec
        assert store.bind(spec) == spec
        with pytest.raises(ExtractorMismatchError) as error:
            store.bind(ExtractorSpec("rootsift", {"max_features": 500}))
        assert str(error.value) == (
            f"store at {store.location} holds features of extractor rootsift (max_features=1000); "
            "refusing to mix in rootsift (max_features=500). Use the same extractor, or a new store "
            "(another LANDMARK_HOME or LANDMARK_DATABASE_URL)"
        )


def test_rows_round_trip_compactly(database_url: str) -> None:
    original = features(1)
    with Store(database_url) as store:
        store.upsert([Row("s3://b/a.jpg", "delf", original, "h1")])
        stored = store.fetch("s3://b/a.jpg")
        stats = store.stats()
    assert stored.image_size == (640, 480) and stored.num_features == 50
    assert np.abs(stored.locations - original.locations).max() <= 0.125 + 1e-4
    assert np.abs(stored.descriptors - original.descriptors).max() < 1e-3
    # Half of float32: 2 bytes per location coordinate and per descriptor value.
    assert stats["feature_bytes"] == 50 * (2 * 2 + 40 * 2)


def test_int8_rows_take_one_byte_per_descriptor_value(database_url: str) -> None:
    original = features(2, n=30)
    with Store(database_url) as store:
        store.upsert([Row("s3://b/a.jpg", "aliked", original, "h1", "int8"), Row("s3://b/b.jpg", "aliked", original, "h2")])
        int8, float16 = store.fetch("s3://b/a.jpg"), store.fetch("s3://b/b.jpg")
        stats = store.stats()
    assert np.abs(int8.descriptors - original.descriptors).max() < 1 / 127
    assert np.abs(float16.descriptors - original.descriptors).max() < 1e-3
    assert stats["feature_bytes"] == 30 * (2 * 2 + 40 * 1) + 30 * (2 * 2 + 40 * 2)


def test_upsert_replaces_changed_rows_and_leaves_unchanged_ones(database_url: str) -> None:
    with Store(database_url) as store:
        store.upsert([Row(f"s3://b/{i}.jpg", "delf", features(i), f"h{i}") for i in range(3)])
        before = table(database_url)
        store.upsert([Row(f"s3://b/{i}.jpg", "delf", features(i), f"h{i}") for i in range(3)])
        assert table(database_url) == before  # same set twice: the table is as it was
        store.upsert([Row("s3://b/1.jpg", "delf", features(10, n=7), "changed")])
        after = table(database_url)
    assert len(after) == 3
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1][0] == before[1][0]  # the row keeps its id
    assert after[1][3:5] == (7, "changed")


def test_partitions_cover_every_row_once_and_reads_exclude_the_query(database_url: str) -> None:
    with Store(database_url) as store:
        store.upsert([Row(f"s3://b/{i:02d}.jpg", "delf", features(i, n=5), f"h{i}") for i in range(23)])
        parts = store.partitions(5)
        assert len(parts) == 5
        seen = []
        for part in parts:
            uris, stored = store.read_partition(part, exclude_uri="s3://b/07.jpg")
            assert all(f.num_features == 5 for f in stored)
            seen += uris
    assert seen == [f"s3://b/{i:02d}.jpg" for i in range(23) if i != 7]
    assert parts[0].lo <= parts[0].hi == parts[1].lo


def test_partition_fingerprints_change_only_where_rows_change(database_url: str) -> None:
    with Store(database_url) as store:
        store.upsert([Row(f"s3://b/{i:02d}.jpg", "delf", features(i, n=5), f"h{i}") for i in range(10)])
        before = store.partitions(4)
        store.upsert([Row("s3://b/05.jpg", "delf", features(50, n=5), "changed")])  # id 6: block 1
        after = store.partitions(4)
    assert [(p.lo, p.hi) for p in before] == [(p.lo, p.hi) for p in after] == [(0, 4), (4, 8), (8, 12)]
    assert before[0] == after[0] and before[2] == after[2]
    assert before[1].rows == after[1].rows and after[1].revision > before[1].revision


def test_empty_store_has_no_partitions(database_url: str) -> None:
    with Store(database_url) as store:
        assert store.partitions(10) == []
        assert store.read_partition(Partition(0, 100)) == ([], [])


def test_unreachable_server_is_a_clear_error() -> None:
    with pytest.raises(StoreError) as error:
        Store("postgresql://nobody:secret@127.0.0.1:1/none")
    assert str(error.value).startswith("cannot connect to PostgreSQL at postgresql://nobody:***@127.0.0.1:1/none: ")


def test_a_connection_lost_to_the_server_is_reopened(database_url: str) -> None:
    """What a server restart does to an open connection (here: its backend is terminated)."""
    from landmark.errors import StoreUnavailableError

    def terminate() -> None:
        admin = psycopg2.connect(database_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'landmark' "
                        "AND datname = current_database() AND pid <> pg_backend_pid()")
        admin.close()

    with Store(database_url) as store:
        store.upsert([Row("s3://b/a.jpg", "delf", features(1), "h1")])
        terminate()
        assert store.count() == 1  # a read is tried again on a new connection
        terminate()
        with pytest.raises(StoreUnavailableError) as error:  # a write is not: it may have happened
            store.upsert([Row("s3://b/b.jpg", "delf", features(2), "h2")])
        assert str(error.value).startswith(f"lost the connection to PostgreSQL at {store.location}: ")
        assert store.upsert([Row("s3://b/b.jpg", "delf", features(2), "h2")]) == 1  # the next one reconnects
        assert store.ping() == store.location and store.count() == 2
