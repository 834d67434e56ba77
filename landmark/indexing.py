"""Index images: read, skip the unchanged, decode, extract, and write in batches.

One bad image never stops a batch: its error is recorded in the report and the rest are
stored. Work goes in chunks of ``batch_size`` URIs: their bytes are read and hashed, the
store says which are unchanged (same URI, same SHA-256), the rest are decoded and extracted
on a thread pool (Pillow and OpenCV release the GIL) and written in one statement, with their
thumbnails (:mod:`landmark.thumbnails`). An unchanged image without a thumbnail (stored before
they were kept) is done again, so indexing a folder again fills them in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from . import thumbnails
from .contract import Features
from .errors import ImageError, LandmarkError, TransientError
from .extractors.base import Extractor
from .images import MAX_PIXELS, decode_image
from .retrieval import build as retrieval
from .sources import Unusable, expand, normalise, read_bytes
from .store import Row, Store

if TYPE_CHECKING:
    from .policy import SourcePolicy


@dataclass
class IndexReport:
    """What happened to each image of an indexing run."""

    stored: int = 0
    """written (new, or replacing a changed image)"""
    unchanged: int = 0
    """skipped: already stored with the same bytes"""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """``(uri, reason)`` of each image that could not be stored; ``(name, reason)`` of each source,
    ``<list URI> line <n>`` or entry that named no readable image"""

    @property
    def total(self) -> int:
        return self.stored + self.unchanged + len(self.failed)

    def summary(self) -> str:
        return f"stored {self.stored}, skipped {self.unchanged} unchanged, failed {len(self.failed)}"

    def merge(self, other: IndexReport) -> None:
        self.stored += other.stored
        self.unchanged += other.unchanged
        self.failed.extend(other.failed)


def gather(
    sources: Iterable[str], *, raise_transient: bool = False, policy: SourcePolicy | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """The image URIs named by ``sources`` (in order, without repeats) and ``(name, reason)`` for
    each source, list line or entry that names no readable image (see :func:`expand`); under
    ``policy``, everything outside it is such an entry."""
    uris: dict[str, None] = {}
    unusable: list[tuple[str, str]] = []
    for source in sources:
        try:
            for item in expand([source], policy):
                if isinstance(item, Unusable):
                    unusable.append(tuple(item))
                else:
                    uris[item] = None
        except TransientError as error:
            if raise_transient:
                raise
            unusable.append((source, reason_of(error, source, _as_uri(source))))
    return list(uris), unusable


def _as_uri(source: str) -> str:
    try:
        return normalise(source)
    except LandmarkError:
        return source


def extract_bytes(extractor: Extractor, data: bytes, uri: str, *, max_pixels: int = MAX_PIXELS) -> Features:
    """Decode ``data`` (refused over ``max_pixels``) and extract its features; an image with none
    is an :class:`ImageError`."""
    return decode_and_extract(extractor, data, uri, max_pixels=max_pixels)[1]


def decode_and_extract(
    extractor: Extractor, data: bytes, uri: str, *, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, Features]:
    """:func:`extract_bytes`, with the decoded image (uint8 ``[H x W x 3]``) it extracted from."""
    image = decode_image(data, uri, extractor.config.max_image_side, max_pixels=max_pixels)
    features = extractor.extract(image)
    if features.num_features == 0:
        raise ImageError(uri, "no local features found (blank or featureless image)")
    return image, features


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def index_uris(
    store: Store,
    extractor: Extractor,
    uris: Iterable[str],
    *,
    batch_size: int = 64,
    threads: int = 2,
    progress: Callable[[int], None] | None = None,
    raise_transient: bool = False,
    max_pixels: int = MAX_PIXELS,
) -> IndexReport:
    """Index every image of ``uris`` into ``store`` with ``extractor``; images of more than
    ``max_pixels`` pixels are refused before decoding.

    An image whose source cannot be reached for now (:class:`TransientError`) is reported as
    failed like a bad one, unless ``raise_transient``: then the error is raised before anything
    of its chunk is written, for a caller that retries the whole batch (a queue worker).
    """
    report = IndexReport()
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="landmark-index") as pool:
        for chunk in chunks(uris, batch_size):
            report.merge(_index_chunk(store, extractor, chunk, pool, raise_transient, max_pixels))
            if progress is not None:
                progress(len(chunk))
    return report


def _index_chunk(
    store: Store, extractor: Extractor, uris: list[str], pool: ThreadPoolExecutor, raise_transient: bool,
    max_pixels: int,
) -> IndexReport:
    report = IndexReport()
    payloads: dict[str, bytes] = {}
    for uri, outcome in zip(uris, pool.map(_read, uris)):
        if raise_transient and isinstance(outcome, TransientError):
            raise outcome
        if isinstance(outcome, LandmarkError):
            report.failed.append((uri, reason_of(outcome, uri)))
        else:
            payloads[uri] = outcome
    hashes = {uri: sha256(data) for uri, data in payloads.items()}
    stored_hashes = store.content_hashes(list(hashes))
    unpictured = thumbnails.Thumbnails(store).missing(list(stored_hashes))
    todo = [uri for uri in payloads if stored_hashes.get(uri) != hashes[uri] or uri in unpictured]
    report.unchanged = len(payloads) - len(todo)
    rows, pictures = [], {}
    for uri, outcome in zip(todo, pool.map(lambda u: _extract(extractor, payloads[u], u, max_pixels), todo)):
        if isinstance(outcome, LandmarkError):
            report.failed.append((uri, reason_of(outcome, uri)))
        else:
            features, pictures[uri] = outcome
            rows.append(Row(uri, extractor.name, features, hashes[uri], extractor.descriptor_encoding))
    # Counted from what the database wrote, not from what was sent: another indexer may have
    # stored the same image since its hash was looked up (and an image done again only for its
    # thumbnail is not written), and then this write changes nothing.
    report.stored = store.upsert(rows, also=thumbnails.Thumbnails.writer(pictures))
    report.unchanged += len(rows) - report.stored
    # Their retrieval vectors, when the store has an index; a crash between the two writes leaves
    # images without a vector, which queries then verify exhaustively (never a stale vector).
    retrieval.add(store, {row.uri: row.features for row in rows}, hashes)
    return report


def _read(uri: str) -> bytes | LandmarkError:
    try:
        return read_bytes(uri)
    except LandmarkError as error:
        return error


def _extract(extractor: Extractor, data: bytes, uri: str, max_pixels: int) -> tuple[Features, bytes] | LandmarkError:
    """The image's features and thumbnail, or why it has none."""
    try:
        image, features = decode_and_extract(extractor, data, uri, max_pixels=max_pixels)
        return features, thumbnails.encode(image)
    except LandmarkError as error:
        return error
    except Exception as error:  # an extractor crash on one image must not end the batch
        return ImageError(uri, f"extraction failed ({type(error).__name__}: {error})")


def reason_of(error: LandmarkError, *names: str) -> str:
    """The error's message less the leading ``"name: "`` (any of ``names``) the report already shows."""
    text = str(error)
    for name in names:
        if text.startswith(name + ": "):
            return text[len(name) + 2:]
    return text


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
