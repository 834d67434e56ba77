"""Where images come from: expand sources into image URIs, and read an image's bytes.

A source is a local file, a local directory (searched recursively for image files), a text
file listing one URI or path per line (``.txt``; blank lines and ``#`` comments skipped,
relative paths taken from the list's directory), a ``file://`` URI, an ``s3://bucket/key``
object or an ``s3://bucket/prefix/``.

Identity: local paths become absolute ``file://`` URIs (``Path.as_uri``, no symlinks
resolved); ``s3://`` URIs are kept as given, less duplicate slashes in the key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import s3
from .errors import SourceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
LIST_SUFFIXES = frozenset({".txt", ".lst"})


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def normalise(source: str, base: Path | None = None) -> str:
    """The identity URI of ``source`` (a path, ``file://`` or ``s3://`` URI)."""
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
        path = Path(unquote(parsed.path))
    elif "://" in source:
        raise SourceError(f"{source}: unsupported URI scheme (use a path, file:// or s3://)")
    else:
        path = Path(os.path.expanduser(source))
        if not path.is_absolute() and base is not None:
            path = base / path
    return Path(os.path.abspath(path)).as_uri()


def local_path(uri: str) -> Path:
    """The path of a ``file://`` identity URI."""
    return Path(unquote(urlparse(uri).path))


def read_bytes(uri: str) -> bytes:
    """The bytes behind an identity URI."""
    if s3.is_s3(uri):
        return s3.read(uri)
    path = local_path(uri)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{uri}: no such file") from None
    except IsADirectoryError:
        raise SourceError(f"{uri}: is a directory, not an image file") from None
    except OSError as error:
        raise SourceError(f"{uri}: cannot read ({error.strerror or error})") from None


def expand(sources: Iterable[str]) -> Iterator[str]:
    """Image URIs named by ``sources``, each once, in a stable order (directories sorted).

    Explicitly named files are yielded whatever their suffix (decoding decides); files found
    while walking a directory or S3 prefix are yielded only if their suffix is an image's.
    """
    seen: set[str] = set()
    for source in sources:
        for uri in _expand_one(source, base=None, depth=0):
            if uri not in seen:
                seen.add(uri)
                yield uri


def _expand_one(source: str, base: Path | None, depth: int) -> Iterator[str]:
    uri = normalise(source, base)
    if s3.is_s3(uri):
        yield from _expand_s3(uri, depth)
        return
    path = local_path(uri)
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*")
            if p.is_file() and is_image_name(p.name) and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        yield from (Path(os.path.abspath(p)).as_uri() for p in found)
    elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
        yield from _expand_list(uri, read_bytes(uri), path.parent, depth)
    else:
        # A missing file is reported when it is read, as that image's failure, not the batch's.
        yield uri


def _expand_s3(uri: str, depth: int) -> Iterator[str]:
    bucket, key = s3.split(uri)
    suffix = Path(key).suffix.lower()
    if key and not key.endswith("/"):
        if suffix in IMAGE_SUFFIXES:
            yield uri  # read (and reported, if missing) with the image itself; no round trip here
            return
        if suffix in LIST_SUFFIXES:
            yield from _expand_list(uri, s3.read(uri), None, depth)
            return
        if s3.exists(uri):
            yield uri
            return
    prefix = uri if (not key or key.endswith("/")) else uri + "/"
    found = [k for k in s3.list_keys(prefix) if is_image_name(k)]
    if not found:
        raise SourceError(f"{uri}: no image objects under this S3 prefix")
    yield from found


def _expand_list(uri: str, data: bytes, base: Path | None, depth: int) -> Iterator[str]:
    if depth >= 1:
        raise SourceError(f"{uri}: a URI list may not name another list")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(f"{uri}: a URI list must be UTF-8 text") from None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield from _expand_one(line, base, depth + 1)
