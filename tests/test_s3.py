"""s3:// input and output against a real S3 server (moto's) on loopback."""

from __future__ import annotations

import json

import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark import s3
from landmark.errors import SourceError
from landmark.session import Session
from landmark.settings import Settings
from landmark.sources import expand

pytestmark = pytest.mark.integration

PHOTOS = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))[:4] + sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))


@pytest.fixture()
def uploaded(bucket: str) -> str:
    client = s3.client()
    for path in PHOTOS:
        client.put_object(Bucket=bucket, Key=f"photos/{path.parent.name}/{path.name}", Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key="photos/readme.md", Body=b"not listed")
    client.put_object(Bucket=bucket, Key="photos/broken.jpg", Body=b"broken")
    client.put_object(Bucket=bucket, Key="other/x.jpg", Body=PHOTOS[0].read_bytes())
    return bucket


def test_prefix_expands_to_its_image_objects(uploaded: str) -> None:
    uris = list(expand([f"s3://{uploaded}/photos/"]))
    assert len(uris) == len(PHOTOS) + 1
    assert uris == sorted(uris) and all(u.startswith(f"s3://{uploaded}/photos/") for u in uris)
    # Without the trailing slash a prefix still works; an object is itself.
    assert list(expand([f"s3://{uploaded}/photos"])) == uris
    assert list(expand([f"s3://{uploaded}/other/x.jpg"])) == [f"s3://{uploaded}/other/x.jpg"]


def test_a_list_object_is_read_up_to_its_cap_and_its_bad_lines_reported(
    uploaded: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from landmark import sources

    listing = f"s3://{uploaded}/lists/l.txt"
    s3.client().put_object(Bucket=uploaded, Key="lists/l.txt",
                           Body=f"s3://{uploaded}/other/x.jpg\nhttp://example.com/y.jpg\n".encode())
    assert list(expand([listing])) == [
        f"s3://{uploaded}/other/x.jpg",
        (f"{listing} line 2", "http://example.com/y.jpg: unsupported URI scheme (use a path, file:// or s3://)"),
    ]
    monkeypatch.setattr(sources, "MAX_LIST_BYTES", 10)
    assert list(expand([listing])) == [(listing, "too large to read (over 10 bytes)")]


def test_empty_prefix_and_missing_bucket_are_clear_errors(uploaded: str) -> None:
    assert list(expand([f"s3://{uploaded}/nothing/"])) == [
        (f"s3://{uploaded}/nothing/", "no image objects under this S3 prefix")
    ]
    with pytest.raises(SourceError) as error:
        s3.read("s3://no-such-bucket-here/a.jpg")
    assert str(error.value) == "s3://no-such-bucket-here/a.jpg: cannot read from S3 (no such bucket)"


def test_index_a_prefix_and_query_with_results_on_s3(uploaded: str, database_url: str, dask_cluster_address: str) -> None:
    settings = cfg.resolve(
        Settings, {"database_url": database_url, "dask_scheduler": dask_cluster_address, "extractor": "rootsift"},
        environ={},
    )
    with Session(settings) as lm:
        report = lm.index([f"s3://{uploaded}/photos/"])
        assert report.stored == len(PHOTOS)
        assert report.failed == [(f"s3://{uploaded}/photos/broken.jpg", "not an image (Pillow cannot identify the format)")]
        missing = lm.index([f"s3://{uploaded}/photos/gone.jpg"])
        assert missing.failed == [(f"s3://{uploaded}/photos/gone.jpg", "cannot read from S3 (no such object)")]
        result = lm.query(f"s3://{uploaded}/other/x.jpg", out=f"s3://{uploaded}/results/q1", add=False)
    assert result.files == {"txt": f"s3://{uploaded}/results/q1.txt", "json": f"s3://{uploaded}/results/q1.json"}
    text = s3.read(result.files["txt"]).decode()
    document = json.loads(s3.read(result.files["json"]))
    # The query is a copy of an indexed photo: that photo ranks first, with many inliers.
    first = f"s3://{uploaded}/photos/sacre_coeur/{PHOTOS[0].name}"
    assert text.splitlines()[0].split("\t")[2] == first
    assert document["matches"][0]["uri"] == first and document["matches"][0]["inliers"] > 100
    assert document["query"] == f"s3://{uploaded}/other/x.jpg"


def test_an_unusable_source_is_reported_and_the_others_indexed(
    uploaded: str, database_url: str, dask_cluster_address: str
) -> None:
    settings = cfg.resolve(
        Settings, {"database_url": database_url, "dask_scheduler": dask_cluster_address, "extractor": "rootsift"},
        environ={},
    )
    with Session(settings) as lm:
        report = lm.index([f"s3://{uploaded}/nothing/", f"s3://{uploaded}/other/x.jpg"])
    assert report.stored == 1
    assert report.failed == [
        (f"s3://{uploaded}/nothing/", "no image objects under this S3 prefix")
    ]
