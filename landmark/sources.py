"""Where images come from: expand sources into image URIs, and read an image's bytes.

A source is a local file, a local directory (searched recursively for image files, following
links to directories), a text file listing one URI or path per line (``.txt``/``.lst``; blank
lines and ``#`` comments skipped, relative paths taken from the list's directory), a ``file://``
URI, an ``s3://bucket/key`` object or an ``s3://bucket/prefix/``.

Identity: local paths become absolute ``file://`` URIs (``Path.as_uri``, no symlinks resolved;
names that are not UTF-8 are percent-encoded byte for byte); ``s3://`` URIs are kept as given,
less duplicate slashes in the key.

Only regular files are read (no devices, FIFOs or sockets: a FIFO is opened without blocking and
refused), and no more than :data:`MAX_IMAGE_BYTES` of an image or :data:`MAX_LIST_BYTES` of a
list. Under a :class:`~landmark.policy.SourcePolicy` (a job from the HTTP API), every source,
list line and linked entry must stay inside the allowed roots, and the reasons given for a list's
bad lines never repeat the line, so that a list cannot be used to read a file out.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote_to_bytes, urlparse

from . import s3
from .errors import SourceError, TransientError

if TYPE_CHECKING:
    from .policy import SourcePolicy

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
LIST_SUFFIXES = frozenset({".txt", ".lst"})

MAX_IMAGE_BYTES = 256_000_000
"""Largest image file read, in bytes (256 MB): far above any photo, well below what hurts a worker."""

MAX_LIST_BYTES = 16_000_000
"""Largest URI list read, in bytes (16 MB: some 100,000 lines of long paths)."""


class Unusable(NamedTuple):
    """A source, list line or directory entry that names no readable image, and why."""

    name: str
    """the source as given, ``<list URI> line <n>``, or the entry's URI"""
    reason: str


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def normalise(source: str, base: Path | None = None) -> str:
    """The identity URI of ``source`` (a path, ``file://`` or ``s3://`` URI)."""
    if "\x00" in source:
        raise SourceError(f"{source!r}: contains a NUL character")
    source = source.strip()
    if not source:
        raise SourceError("empty source")
    if s3.is_s3(source):
        bucket, key = s3.split(source)
        return f"s3://{bucket}/{re.sub('/{2,}', '/', key)}"
    if source.startswith("file://"):
        parsed = urlparse(source)
        if parsed.netloc not in ("", "localhost"):
            raise SourceError(f"{source}: file:// URIs must name a local path (no host)")
        path = Path(os.fsdecode(unquote_to_bytes(parsed.path)))
    elif "://" in source:
        raise SourceError(f"{source}: unsupported URI scheme (use a path, file:// or s3://)")
    else:
        path = Path(os.path.expanduser(source))
        if not path.is_absolute() and base is not None:
            path = base / path
    if "\x00" in str(path):  # percent-encoded in a file:// URI
        raise SourceError(f"{source}: names a NUL character")
    try:
        return Path(os.path.abspath(path)).as_uri()
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold (from JSON's \ud800)
        raise SourceError(f"{source!r}: not a file name this system can hold") from None


def local_path(uri: str) -> Path:
    """The path of a ``file://`` identity URI; the inverse of ``Path.as_uri`` for any name,
    UTF-8 or not (the percent-encoded bytes are the file system's)."""
    return Path(os.fsdecode(unquote_to_bytes(urlparse(uri).path)))


def read_bytes(uri: str, *, policy: SourcePolicy | None = None) -> bytes:
    """The bytes behind an identity URI (at most :data:`MAX_IMAGE_BYTES`), if ``policy``
    (when given) allows it."""
    if policy is not None:
        policy.check(uri)
        policy.confirm(uri)
    if s3.is_s3(uri):
        return s3.read(uri, limit=MAX_IMAGE_BYTES)
    return _read_file(uri, MAX_IMAGE_BYTES)


def _read_file(uri: str, limit: int) -> bytes:
    """A regular local file's bytes, refused over ``limit``. Anything else (a FIFO, a device) is
    refused before it is read, and opened without blocking should it have been swapped in."""
    path = local_path(uri)
    _regular(uri, _stat(uri, path), limit)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise _os_failure(uri, error) from None
    with open(fd, "rb") as file:
        _regular(uri, os.fstat(fd), limit)
        data = file.read(limit + 1)
    if len(data) > limit:
        raise s3.too_large(uri, limit)
    return data


def _stat(uri: str, path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as error:
        raise _os_failure(uri, error) from None


def _regular(uri: str, status: os.stat_result, limit: int) -> None:
    if stat.S_ISDIR(status.st_mode):
        raise SourceError(f"{uri}: is a directory, not an image file")
    if not stat.S_ISREG(status.st_mode):
        raise SourceError(f"{uri}: not a regular file ({_kind(status.st_mode)})")
    if status.st_size > limit:
        raise s3.too_large(uri, limit)


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a file")


def _os_failure(uri: str, error: OSError) -> SourceError:
    if isinstance(error, FileNotFoundError):
        return SourceError(f"{uri}: no such file")
    return SourceError(f"{uri}: cannot read ({error.strerror or error})")


# -- expansion --------------------------------------------------------------------------------


def expand(sources: Iterable[str], policy: SourcePolicy | None = None) -> Iterator[str | Unusable]:
    """Image URIs named by ``sources``, each once, in a stable order (directories sorted), and an
    :class:`Unusable` for each source, list line or entry that names no readable image.

    Explicitly named files are yielded whatever their suffix (decoding decides); files found
    while walking a directory or S3 prefix are yielded only if their suffix is an image's. Only
    :class:`TransientError` (S3 unreachable for now) is raised, for a caller that retries.
    """
    seen: set[str] = set()
    for source in sources:
        for item in _expand_entry(source, None, None, policy, name=source):
            if isinstance(item, Unusable):
                yield item
            elif item not in seen:
                seen.add(item)
                yield item


def _expand_entry(
    text: str, base: Path | None, listed_in: str | None, policy: SourcePolicy | None, *, name: str
) -> Iterator[str | Unusable]:
    """The images ``text`` names (a source, or a line of the list ``listed_in``), and its own
    failure as an :class:`Unusable` called ``name``.

    Under a policy a line's reason leaves the line out: the list may be any text file in an
    allowed root, and its lines are not for the requester to read.
    """
    uri = None
    try:
        uri = _admit(text, base, policy)
        yield from _expand_uri(uri, listed_in, policy)
    except TransientError:
        raise
    except SourceError as error:
        if listed_in is None:
            reason = _reason(error, text, uri)
        elif policy is None:
            reason = str(error)  # the operator's own list: show the line
        else:
            reason = _reason(error, text, uri, hide=True)
        yield Unusable(name, reason)


def _admit(source: str, base: Path | None, policy: SourcePolicy | None) -> str:
    """The identity URI of ``source``, if ``policy`` allows it (lexically: see :func:`_expand_uri`)."""
    return normalise(source, base) if policy is None else policy.check(source, base)


def _expand_uri(uri: str, listed_in: str | None, policy: SourcePolicy | None) -> Iterator[str | Unusable]:
    """The images of one admitted source, if its real path stays inside ``policy``; ``listed_in``:
    the list that named it, if any."""
    if policy is not None:
        policy.confirm(uri)
    if s3.is_s3(uri):
        yield from _expand_s3(uri, listed_in, policy)
        return
    path = local_path(uri)
    try:
        status = os.stat(path)
    except OSError as error:
        if listed_in is None:
            yield uri  # a named file is reported when it is read, as that image's failure
            return
        raise _os_failure(uri, error) from None  # a list's line is reported as that line
    if stat.S_ISDIR(status.st_mode):
        for item in walk(path, policy):
            yield item if isinstance(item, Unusable) else item.as_uri()
    elif path.suffix.lower() in LIST_SUFFIXES:
        _not_nested(uri, listed_in)
        yield from _expand_list(uri, _read_file(uri, MAX_LIST_BYTES), path.parent, policy)
    else:
        if listed_in is not None:
            _regular(uri, status, MAX_IMAGE_BYTES)
        yield uri


def _expand_s3(uri: str, listed_in: str | None, policy: SourcePolicy | None) -> Iterator[str | Unusable]:
    bucket, key = s3.split(uri)
    suffix = Path(key).suffix.lower()
    if key and not key.endswith("/"):
        if suffix in IMAGE_SUFFIXES:
            yield uri  # read (and reported, if missing) with the image itself; no round trip here
            return
        if suffix in LIST_SUFFIXES:
            _not_nested(uri, listed_in)
            yield from _expand_list(uri, s3.read(uri, limit=MAX_LIST_BYTES), None, policy)
            return
        if s3.exists(uri):
            yield uri
            return
    prefix = uri if (not key or key.endswith("/")) else uri + "/"
    found = [k for k in s3.list_keys(prefix) if is_image_name(k)]
    if not found:
        raise SourceError(f"{uri}: no image objects under this S3 prefix")
    yield from found


def _not_nested(uri: str, listed_in: str | None) -> None:
    if listed_in is not None:
        raise SourceError(f"{uri}: a URI list may not name another list")


def _expand_list(uri: str, data: bytes, base: Path | None, policy: SourcePolicy | None) -> Iterator[str | Unusable]:
    """The images of a list's lines; a bad line is reported as ``<list> line <n>`` and the rest go on."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{uri}: a URI list must be UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        yield from _expand_entry(line, base, uri, policy, name=f"{uri} line {number}")


def _reason(error: SourceError, *names: str | None, hide: bool = False) -> str:
    """The error's message less the leading ``"name: "`` (any of ``names``); with ``hide``, a
    message that does not start with one of them is replaced, so that nothing else shows."""
    text = str(error)
    for name in filter(None, names):
        for spelling in (name, repr(name)):
            if text.startswith(spelling + ": "):
                return text[len(spelling) + 2:]
    return "cannot be used as a source" if hide else text


# -- directories ------------------------------------------------------------------------------


def walk(root: Path, policy: SourcePolicy | None = None) -> Iterator[Path | Unusable]:
    """The image files under the directory ``root`` (absolute), depth first with names sorted,
    and an :class:`Unusable` per image-named entry or folder that cannot be read.

    Hidden files and folders are skipped. Links to directories are followed, each real directory
    walked once (by ``(st_dev, st_ino)``), so that a loop ends and a folder linked twice is not
    listed twice. Under ``policy``, a link whose target leaves the allowed roots is reported,
    not followed. Paths are as walked, links unresolved.
    """
    status = _stat(root.as_uri(), root)
    seen = {(status.st_dev, status.st_ino)}
    stack = [iter(_entries(root))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if isinstance(entry, Unusable):
            yield entry
            continue
        path = Path(entry.path)
        uri = path.as_uri()
        try:
            is_dir = entry.is_dir()
            if not is_dir and not is_image_name(entry.name):
                continue
            if policy is not None and entry.is_symlink():
                policy.confirm(uri)
            status = entry.stat() if is_dir else _stat(uri, path)
            if not is_dir:
                _regular(uri, status, MAX_IMAGE_BYTES)
        except (SourceError, OSError) as error:
            failure = error if isinstance(error, SourceError) else _os_failure(uri, error)
            yield Unusable(uri, _reason(failure, uri))
            continue
        if not is_dir:
            yield path
        elif (status.st_dev, status.st_ino) not in seen:  # else a loop, or a folder walked already
            seen.add((status.st_dev, status.st_ino))
            stack.append(iter(_entries(path)))


def _entries(folder: Path) -> list[os.DirEntry | Unusable]:
    """The visible entries of ``folder`` sorted by name, or why it cannot be listed."""
    try:
        with os.scandir(folder) as found:
            return sorted((e for e in found if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as error:
        uri = folder.as_uri()
        return [Unusable(uri, f"cannot read directory ({error.strerror or error})")]
