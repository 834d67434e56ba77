"""Sources expand to image URIs; URIs are normalised into identities."""

from __future__ import annotations

from pathlib import Path

import pytest

from landmark.errors import SourceError
from landmark.sources import expand, normalise, read_bytes


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    for name in ["a.jpg", "b.PNG", "notes.md", "sub/c.jpeg", "sub/deeper/d.webp", ".hidden/e.jpg"]:
        path = tmp_path / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path / "images"


def test_local_paths_become_absolute_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalise("x/../photo one.jpg") == (tmp_path / "photo one.jpg").as_uri()
    assert normalise((tmp_path / "photo one.jpg").as_uri()) == (tmp_path / "photo one.jpg").as_uri()
    assert normalise(str(tmp_path / "p.jpg")) == normalise("file://" + str(tmp_path / "p.jpg"))


def test_s3_uris_keep_their_identity() -> None:
    assert normalise("s3://bucket/a//b.jpg") == "s3://bucket/a/b.jpg"
    with pytest.raises(SourceError) as error:
        normalise("s3:///key.jpg")
    assert str(error.value) == "s3:///key.jpg: no bucket in S3 URI"


def test_unsupported_schemes_are_refused() -> None:
    with pytest.raises(SourceError) as error:
        normalise("http://example.com/a.jpg")
    assert str(error.value) == "http://example.com/a.jpg: unsupported URI scheme (use a path, file:// or s3://)"


def test_directory_is_searched_recursively_for_image_files_only(tree: Path) -> None:
    names = [Path(uri).name for uri in expand([str(tree)])]
    assert names == ["a.jpg", "b.PNG", "c.jpeg", "d.webp"]


def test_list_file_with_relative_paths_comments_and_duplicates(tree: Path) -> None:
    listing = tree.parent / "list.txt"
    listing.write_text("# my images\nimages/a.jpg\n\n  images/sub  \nimages/a.jpg\ns3://bucket/x.jpg\n")
    uris = list(expand([str(listing)]))
    assert uris == [
        (tree / "a.jpg").as_uri(), (tree / "sub" / "c.jpeg").as_uri(),
        (tree / "sub" / "deeper" / "d.webp").as_uri(), "s3://bucket/x.jpg",
    ]


def test_named_files_pass_through_and_fail_when_read(tree: Path) -> None:
    missing = tree / "missing.jpg"
    [uri] = expand([str(missing)])
    with pytest.raises(SourceError) as error:
        read_bytes(uri)
    assert str(error.value) == f"{missing.as_uri()}: no such file"
    assert read_bytes((tree / "a.jpg").as_uri()) == b"x"
