"""Sources expand to image URIs; URIs are normalised into identities."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from landmark import sources
from landmark.errors import ForbiddenSourceError, SourceError
from landmark.indexing import gather
from landmark.policy import SourcePolicy
from landmark.sources import Unusable, expand, local_path, normalise, read_bytes, walk


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


def test_names_no_file_can_hold_are_refused() -> None:
    with pytest.raises(SourceError) as error:
        normalise("file:///srv/a%00.jpg")
    assert str(error.value) == "file:///srv/a%00.jpg: names a NUL character"
    with pytest.raises(SourceError) as error:
        normalise("/srv/\ud800.jpg")
    assert str(error.value) == "'/srv/\\ud800.jpg': not a file name this system can hold"


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


# -- only regular files, within caps ------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(SourceError) as error:
        read_bytes(fifo.as_uri())
    assert str(error.value) == f"{fifo.as_uri()}: not a regular file (a FIFO)"
    listed = tmp_path / "list.txt"
    os.mkfifo(listed)
    assert list(expand([str(listed)])) == [(str(listed), "not a regular file (a FIFO)")]


def test_device_files_are_refused() -> None:
    with pytest.raises(SourceError) as error:
        read_bytes("file:///dev/zero")
    assert str(error.value) == "file:///dev/zero: not a regular file (a character device)"


def test_image_and_list_files_are_read_up_to_their_caps(tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as file:
        file.truncate(sources.MAX_IMAGE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(SourceError) as error:
        read_bytes(huge.as_uri())
    assert str(error.value) == f"{huge.as_uri()}: too large to read (over 256000000 bytes)"
    long_list = tmp_path / "long.txt"
    with long_list.open("wb") as file:
        file.truncate(sources.MAX_LIST_BYTES + 1)
    assert list(expand([str(long_list)])) == [(str(long_list), "too large to read (over 16000000 bytes)")]


# -- bad entries are reported, the rest go on ---------------------------------------------------


def test_each_bad_line_of_a_list_is_reported_with_its_number(tree: Path) -> None:
    (tree / "inner.txt").write_text("a.jpg\n")
    listing = tree / "list.txt"
    listing.write_bytes(b"a.jpg\nhttp://example.com/x.jpg\nbad\x00name.jpg\ninner.txt\nmissing.jpg\n\n# note\nsub\n")
    items = list(expand([str(listing)]))
    where = f"{listing.as_uri()} line"
    assert items == [
        (tree / "a.jpg").as_uri(),
        Unusable(f"{where} 2", "http://example.com/x.jpg: unsupported URI scheme (use a path, file:// or s3://)"),
        Unusable(f"{where} 3", "'bad\\x00name.jpg': contains a NUL character"),
        Unusable(f"{where} 4", f"{(tree / 'inner.txt').as_uri()}: a URI list may not name another list"),
        Unusable(f"{where} 5", f"{(tree / 'missing.jpg').as_uri()}: no such file"),
        (tree / "sub" / "c.jpeg").as_uri(), (tree / "sub" / "deeper" / "d.webp").as_uri(),
    ]


def test_errors_of_the_file_system_are_the_entry_s_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No traceback: a name too long, a folder that cannot be read or listed."""
    too_long = tmp_path / ("n" * 300 + ".jpg")
    _, failed = gather([str(too_long)])
    assert failed == []
    with pytest.raises(SourceError) as error:
        read_bytes(too_long.as_uri())
    assert str(error.value) == f"{too_long.as_uri()}: cannot read (File name too long)"

    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "a.jpg").write_bytes(b"x")
    (locked / "inner" / "b.jpg").write_bytes(b"x")
    real_stat, real_scandir = os.stat, os.scandir

    def denied(real):  # noqa: ANN001, ANN202 - permission bits do not bind root, who runs CI
        def call(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            if str(path).startswith(str(locked / "inner")):
                raise PermissionError(13, "Permission denied", str(path))
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "stat", denied(real_stat))
    monkeypatch.setattr(os, "scandir", denied(real_scandir))
    uris, failed = gather([str(locked / "inner" / "b.jpg"), str(locked)])
    assert uris == [(locked / "inner" / "b.jpg").as_uri(), (locked / "a.jpg").as_uri()]
    assert failed == [((locked / "inner").as_uri(), "cannot read directory (Permission denied)")]
    with pytest.raises(SourceError) as error:
        read_bytes((locked / "inner" / "b.jpg").as_uri())
    assert str(error.value) == f"{(locked / 'inner' / 'b.jpg').as_uri()}: cannot read (Permission denied)"


# -- links -------------------------------------------------------------------------------------


def test_the_walk_follows_linked_folders_once_and_ends_loops(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "a.jpg").write_bytes(b"x")
    (real / "sub" / "b.jpg").write_bytes(b"x")
    (real / "sub" / "up").symlink_to(real)  # a loop
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(real)
    (root / "more").symlink_to(real / "sub")  # walked already through "linked": not listed twice
    (root / "own.jpg").write_bytes(b"x")
    os.mkfifo(root / "pipe.jpg")
    assert list(walk(root)) == [
        root / "linked" / "a.jpg", root / "linked" / "sub" / "b.jpg", root / "own.jpg",
        Unusable((root / "pipe.jpg").as_uri(), "not a regular file (a FIFO)"),
    ]
    assert [Path(uri).name for uri in expand([str(root)]) if isinstance(uri, str)] == ["a.jpg", "b.jpg", "own.jpg"]


# -- under a policy ----------------------------------------------------------------------------


@pytest.fixture()
def confined(tmp_path: Path) -> tuple[Path, Path, SourcePolicy]:
    """An allowed root holding an image, a link out and a list; a secret outside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "a.jpg").write_bytes(b"x")
    (outside / "secret.jpg").write_bytes(b"x")
    (outside / "list.txt").write_text("hunter2\n")
    (root / "escape").symlink_to(outside)
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    return root, outside, SourcePolicy.parse([str(root)])


def test_a_policy_keeps_the_walk_inside_its_roots(confined: tuple[Path, Path, SourcePolicy]) -> None:
    root, _, policy = confined
    link = "not allowed: a symbolic link leads outside the sources this service may read (LANDMARK_ALLOWED_SOURCES)"
    assert list(expand([str(root)], policy)) == [
        (root / "a.jpg").as_uri(), Unusable((root / "escape").as_uri(), link),
        Unusable((root / "escape.jpg").as_uri(), link),
    ]
    assert list(expand([str(root)])) == [  # unconfined (the CLI): links are followed
        (root / "a.jpg").as_uri(), (root / "escape" / "secret.jpg").as_uri(),
        (root / "escape.jpg").as_uri(),
    ]
    assert list(expand([str(root / "escape" / "secret.jpg")], policy)) == [
        Unusable(str(root / "escape" / "secret.jpg"), link)
    ]


def test_a_list_under_a_policy_never_shows_its_lines(confined: tuple[Path, Path, SourcePolicy]) -> None:
    root, outside, policy = confined
    listing = root / "list.txt"
    listing.write_text(f"a.jpg\n{outside}/secret.jpg\nhunter2\nhttp://hunter2\nescape.jpg\n{outside}/list.txt\n"
                       "bad\x00hunter2\n")
    outside_rule = "not allowed: outside the sources this service may read (LANDMARK_ALLOWED_SOURCES)"
    where = f"{listing.as_uri()} line"
    items = list(expand([str(listing)], policy))
    assert items == [
        (root / "a.jpg").as_uri(),
        Unusable(f"{where} 2", outside_rule),
        Unusable(f"{where} 3", "no such file"),
        Unusable(f"{where} 4", "unsupported URI scheme (use a path, file:// or s3://)"),
        Unusable(f"{where} 5", "not allowed: a symbolic link leads outside the sources this service may read "
                               "(LANDMARK_ALLOWED_SOURCES)"),
        Unusable(f"{where} 6", outside_rule),
        Unusable(f"{where} 7", "contains a NUL character"),
    ]
    assert "hunter2" not in repr(items) and "secret" not in repr(items)
    # A list outside the roots is refused by name; it is never opened.
    assert list(expand([str(outside / "list.txt")], policy)) == [
        Unusable(str(outside / "list.txt"), outside_rule)
    ]


def test_a_query_read_under_a_policy_stays_inside(confined: tuple[Path, Path, SourcePolicy]) -> None:
    root, outside, policy = confined
    assert read_bytes((root / "a.jpg").as_uri(), policy=policy) == b"x"
    for uri in ((root / "escape.jpg").as_uri(), (outside / "secret.jpg").as_uri()):
        with pytest.raises(ForbiddenSourceError):
            read_bytes(uri, policy=policy)


# -- names that are not UTF-8 ------------------------------------------------------------------


def test_names_that_are_not_utf8_round_trip(tmp_path: Path) -> None:
    path = tmp_path / os.fsdecode(b"caf\xe9 \xff.jpg")
    path.write_bytes(b"latin-1 name")
    uri = path.as_uri()
    assert uri == f"{tmp_path.as_uri()}/caf%E9%20%FF.jpg"
    assert local_path(uri) == path and normalise(uri) == uri and normalise(str(path)) == uri
    assert read_bytes(uri) == b"latin-1 name"
    assert list(expand([str(tmp_path)])) == [uri]
