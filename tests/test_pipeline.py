"""Index and query end to end: embedded Postgres, a real Dask LocalCluster, real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from conftest import LANDMARKS, jpeg_bytes, landmark_groups
from landmark import config as cfg
from landmark.errors import ExtractorMismatchError, ImageError
from landmark.evaluation import evaluate
from landmark.session import Session
from landmark.settings import Settings

pytestmark = pytest.mark.integration

SACRE = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))
BERLIN = sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))


def session(
    database_url: str, scheduler: str, *, extractor: str = "auto", partition_size: int = 8, **kwargs: object
) -> Session:
    settings = cfg.resolve(Settings, {"database_url": database_url, "dask_scheduler": scheduler,
                                      "partition_size": partition_size, "extractor": extractor}, environ={})
    return Session(settings, **kwargs)


def row_count(url: str) -> int:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM landmarks")
        count = cur.fetchone()[0]
    conn.close()
    return count


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """Three real photos and four bad files."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(SACRE[0], folder / "good1.jpg")
    shutil.copy(SACRE[1], folder / "nested" / "good2.jpg")
    shutil.copy(BERLIN[0], folder / "good3.jpg")
    (folder / "text.jpg").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    (folder / "tiny.jpg").write_bytes(jpeg_bytes(np.zeros((10, 10, 3), np.uint8)))
    (folder / "blank.jpg").write_bytes(jpeg_bytes(np.full((200, 200, 3), 127, np.uint8)))
    return folder


def test_bad_images_are_reported_and_the_rest_stored(
    database_url: str, dask_cluster_address: str, mixed_folder: Path
) -> None:
    with session(database_url, dask_cluster_address, extractor="rootsift") as lm:
        report = lm.index([str(mixed_folder)])
    assert report.stored == 3 and report.unchanged == 0
    reasons = {Path(uri).name: reason for uri, reason in report.failed}
    assert reasons == {
        "text.jpg": "not an image (Pillow cannot identify the format)",
        "empty.png": "empty file (0 bytes)",
        "tiny.jpg": "image too small to describe (10x10 px; needs at least 32 px on each side)",
        "blank.jpg": "no local features found (blank or featureless image)",
    }
    assert row_count(database_url) == 3


def test_indexing_twice_skips_unchanged_and_replaces_changed(
    database_url: str, dask_cluster_address: str, mixed_folder: Path
) -> None:
    settings = {"extractor_options": {"max_features": "300"}}
    with session(database_url, dask_cluster_address, **settings, extractor="rootsift") as lm:
        first = lm.index([str(mixed_folder)])
        second = lm.index([str(mixed_folder)])
        assert (first.stored, second.stored, second.unchanged) == (3, 0, 3)
        shutil.copy(BERLIN[1], mixed_folder / "good3.jpg")
        third = lm.index([str(mixed_folder / "good3.jpg"), str(mixed_folder / "good1.jpg")])
        assert (third.stored, third.unchanged) == (1, 1)
        assert lm.info()["features"] <= 3 * 300
    assert row_count(database_url) == 3


def test_bad_lines_of_a_list_are_reported_and_the_rest_stored(
    database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{SACRE[0]}\nhttp://example.com/a.jpg\nnul\x00.jpg\n{BERLIN[0]}\n".encode())
    with session(database_url, dask_cluster_address, extractor="rootsift") as lm:
        report = lm.index([str(listing)])
    assert report.stored == 2
    assert report.failed == [
        (f"{listing.as_uri()} line 2",
         "http://example.com/a.jpg: unsupported URI scheme (use a path, file:// or s3://)"),
        (f"{listing.as_uri()} line 3", "'nul\\x00.jpg': contains a NUL character"),
    ]
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT uri FROM landmarks ORDER BY uri")
        assert [row[0] for row in cur.fetchall()] == sorted([SACRE[0].as_uri(), BERLIN[0].as_uri()])
    conn.close()


def test_names_that_are_not_utf8_are_indexed_and_queried(
    database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    import os

    folder = tmp_path / "photos"
    folder.mkdir()
    odd = folder / os.fsdecode(b"\xe9glise \xff.jpg")  # Latin-1, as an old camera card may hold
    shutil.copy(SACRE[0], odd)
    shutil.copy(SACRE[1], folder / "plain.jpg")
    with session(database_url, dask_cluster_address, extractor="rootsift") as lm:
        report = lm.index([str(folder)])
        assert (report.stored, report.failed) == (2, [])
        assert lm.index([str(odd), odd.as_uri()]).unchanged == 1
        result = lm.query(str(odd), top_k=1, add=False)
    assert result.query == odd.as_uri() == f"{folder.as_uri()}/%E9glise%20%FF.jpg"
    assert [m.uri for m in result.matches] == [(folder / "plain.jpg").as_uri()]
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT uri FROM landmarks ORDER BY uri")
        assert [row[0] for row in cur.fetchall()] == sorted([odd.as_uri(), (folder / "plain.jpg").as_uri()])
    conn.close()


def test_a_store_refuses_another_extractor(database_url: str, dask_cluster_address: str) -> None:
    with session(database_url, dask_cluster_address, extractor="rootsift", extractor_options={"max_features": "200"}) as lm:
        lm.index([str(SACRE[0])])
    with session(database_url, dask_cluster_address, extractor_options={"max_features": "500"}) as lm:
        with pytest.raises(ExtractorMismatchError, match=r"holds features of extractor rootsift \(contrast_threshold"):
            lm.index([str(SACRE[1])])
    with session(database_url, dask_cluster_address, extractor="delf") as lm:
        with pytest.raises(ExtractorMismatchError, match="refusing to mix in 'delf'"):
            lm.index([str(SACRE[1])])
    # auto and a bare name both mean "the store's extractor and settings".
    with session(database_url, dask_cluster_address) as lm:
        assert lm.extractor.config.max_features == 200
    assert row_count(database_url) == 1


def test_query_adds_itself_by_default_and_no_add_leaves_the_store(
    database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    options = {"max_features": "500"}
    with session(database_url, dask_cluster_address, extractor="rootsift", extractor_options=options) as lm:
        lm.index([str(p) for p in SACRE[:4] + BERLIN])
        kept = lm.query(str(SACRE[5]), add=False, out=str(tmp_path / "q"))
        assert row_count(database_url) == 7
        added = lm.query(str(SACRE[5]))
        assert row_count(database_url) == 8
        again = lm.query(str(SACRE[5]))  # its own row is excluded from the ranking
    assert [m.uri for m in kept.matches] == [m.uri for m in added.matches] == [m.uri for m in again.matches]
    # The other photos of the place come first; unrelated ones, if any pass min_inliers, after them.
    assert [Path(m.uri).parent.name for m in kept.matches[:4]] == ["sacre_coeur"] * 4
    assert SACRE[5].as_uri() not in [m.uri for m in again.matches]
    assert (tmp_path / "q.txt").read_text().splitlines()[0] == f"1\t{kept.matches[0].inliers}\t{kept.matches[0].uri}"


def test_same_query_gives_the_same_inliers_whatever_the_partitioning(
    database_url: str, dask_cluster_address: str
) -> None:
    options = {"max_features": "500"}
    with session(database_url, dask_cluster_address, extractor="rootsift", extractor_options=options) as lm:
        lm.index([str(p) for p in SACRE[:6]])
        first = lm.query(str(SACRE[7]), add=False, top_k=100)
    with session(database_url, dask_cluster_address, partition_size=2) as lm:
        second = lm.query(str(SACRE[7]), add=False, top_k=100)
    assert (first.counts["partitions"], second.counts["partitions"]) == (3, 4)  # id blocks of 3, then of 2
    assert [(m.uri, m.inliers, m.putative_matches) for m in first.matches] == [
        (m.uri, m.inliers, m.putative_matches) for m in second.matches
    ]


def test_a_featureless_query_is_a_clear_error(database_url: str, dask_cluster_address: str, tmp_path: Path) -> None:
    blank = tmp_path / "blank.jpg"
    blank.write_bytes(jpeg_bytes(np.full((100, 100, 3), 50, np.uint8)))
    with session(database_url, dask_cluster_address, extractor="rootsift") as lm:
        with pytest.raises(ImageError) as error:
            lm.query(str(blank))
    assert str(error.value) == f"{blank.as_uri()}: no local features found (blank or featureless image)"


def test_leave_one_out_on_the_shared_landmarks(database_url: str, dask_cluster_address: str) -> None:
    """Default (offline) extractor, ALIKED: every top-1 from the query's group, mAP >= 0.95."""
    announced: list[str] = []
    with session(database_url, dask_cluster_address, announce=announced.append) as lm:
        report = evaluate(lm, LANDMARKS)
    assert any(line.startswith("extractor auto: chose aliked") for line in announced), announced
    assert report.extractor["name"] == "aliked" and report.matching["rule"] == "mutual"
    assert report.indexed == sum(len(paths) for paths in landmark_groups().values()) and not report.index_failures
    assert len(report.queries) == 17 and not report.query_failures
    assert [q.uri for q in report.queries if q.precision_at_1 < 1] == []
    assert report.mean_average_precision >= 0.95, f"mAP {report.mean_average_precision:.3f}"


def test_a_repeated_query_uses_the_partitions_the_workers_hold(database_url: str, dask_cluster_address: str) -> None:
    options = {"max_features": "300"}
    with session(
        database_url, dask_cluster_address, extractor="rootsift", extractor_options=options, partition_size=3
    ) as lm:
        lm.index([str(p) for p in SACRE[:6]])
        cold = lm.query(str(SACRE[7]), add=False)
        warm = lm.query(str(SACRE[7]), add=False)
        other = lm.query(str(SACRE[8]), add=False)  # a new query on the partitions already held
        assert cold.counts["partitions"] == 3 and cold.counts["partitions_read"] == 3
        assert warm.counts["partitions_read"] == 0 and other.counts["partitions_read"] == 0
        assert [(m.uri, m.inliers) for m in warm.matches] == [(m.uri, m.inliers) for m in cold.matches]
        # Writing a row changes only its own block's fingerprint: that block alone is read again.
        lm.index([str(SACRE[6])])
        after = lm.query(str(SACRE[7]), add=False)
        assert after.counts["partitions_read"] == 1
        assert after.counts["compared"] == warm.counts["compared"] + 1
