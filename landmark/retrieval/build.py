"""Building and keeping the retrieval index: train a codebook, give every image its vector,
and add the vectors of images as they are indexed.

Training reads a deterministic sample of the stored images (by hash of URI), so the same
collection gives the same codebook. The new codebook becomes current only once every image
has its vector; until then queries use the previous one (or exhaustive search), so a retrain
never leaves a window with a half-built index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..contract import Features
from ..store import Store, read_rows, rows_with_hashes
from . import table
from .vlad import CODEWORDS, SAMPLE_PER_CODEWORD, train_codebook, vlad

AUTO_TRAIN_IMAGES = 1000
"""A store without an index gets one, trained at the end of an indexing run, once it holds this
many images; below that, exhaustive search costs about as little as the index would."""

VECTOR_BATCH = 256
"""Images read and given vectors per transaction while (re)building."""


@dataclass(frozen=True)
class IndexState:
    """What ``landmark info`` and a query say about the index."""

    codebook_id: int | None
    words: int
    images_at_training: int
    coverage: table.Coverage | None

    def describe(self) -> str:
        if self.codebook_id is None or self.coverage is None:
            return "no retrieval index (queries verify every image; `landmark reindex` builds one)"
        text = (f"retrieval index: VLAD, {self.words} words, trained on {self.images_at_training} images; "
                f"{self.coverage.indexed} of {self.coverage.images} images have vectors")
        if self.coverage.images > 8 * max(1, self.images_at_training):
            text += " (the collection has outgrown its codebook: `landmark reindex` retrains it)"
        return text


def state(store: Store) -> IndexState:
    with table.transaction(store) as cur:
        codebook = table.current_codebook(cur)
        if codebook is None:
            return IndexState(None, 0, 0, None)
        return IndexState(codebook.id, len(codebook.centroids), codebook.images, table.coverage(cur, codebook.id))


def train(store: Store, *, words: int = CODEWORDS, seed: int = 0,
          progress: Callable[[int], None] | None = None) -> IndexState:
    """Train a codebook on the store's images, give every image its vector, make it current."""
    spec = store.extractor_spec()
    with table.transaction(store) as cur:
        images = _count(cur)
        if spec is None or images == 0:
            raise ValueError("the store holds no images: index some before building a retrieval index")
        sample = _sample_descriptors(cur, words * SAMPLE_PER_CODEWORD)
    centroids = train_codebook(sample, words, seed=seed)
    with table.transaction(store) as cur:
        codebook_id = table.add_codebook(cur, spec.name, centroids, images)
    catch_up(store, codebook_id, centroids, progress=progress)
    with table.transaction(store) as cur:
        table.complete_codebook(cur, codebook_id)
    return state(store)


def catch_up(store: Store, codebook_id: int, centroids: np.ndarray,
             progress: Callable[[int], None] | None = None) -> int:
    """Give every image without a current vector for ``codebook_id`` its vector; how many."""
    done = 0
    while True:
        with table.transaction(store) as cur:
            ids = table.missing_ids(cur, codebook_id, VECTOR_BATCH)
            if not ids:
                return done
            rows = read_rows(cur, ids)
            table.put_vectors(cur, codebook_id, [
                (i, r, vlad(f.descriptors, centroids)) for i, r, f in zip(rows.ids, rows.revisions, rows.features)
            ])
        done += len(rows.ids)
        if progress is not None:
            progress(len(rows.ids))


def add(store: Store, features: Mapping[str, Features], hashes: Mapping[str, str]) -> int:
    """Vectors for images just stored (``features`` and content ``hashes`` by URI) under the
    current codebook, if there is one; how many were written.

    An image written again meanwhile by someone else (another hash) is left without a vector
    rather than given one of features that are no longer its own."""
    with table.transaction(store) as cur:
        codebook = table.current_codebook(cur)
        if codebook is None or not features:
            return 0
        rows = rows_with_hashes(cur, {uri: hashes[uri] for uri in features})
        table.put_vectors(cur, codebook.id, [
            (i, r, vlad(features[uri].descriptors, codebook.centroids)) for uri, i, r in rows
        ])
    return len(rows)


def train_if_due(store: Store, progress: Callable[[int], None] | None = None) -> IndexState | None:
    """Train the first codebook once the store holds :data:`AUTO_TRAIN_IMAGES`; the new state, or
    ``None`` when nothing was due."""
    with table.transaction(store) as cur:
        if table.current_codebook(cur) is not None or _count(cur) < AUTO_TRAIN_IMAGES:
            return None
    return train(store, progress=progress)


def _count(cur: object) -> int:
    cur.execute("SELECT count(*) FROM landmarks")  # type: ignore[attr-defined]
    return int(cur.fetchone()[0])  # type: ignore[attr-defined]


def _sample_descriptors(cur: object, wanted: int) -> np.ndarray:
    """About ``wanted`` descriptors from images drawn by URI hash (the same store, the same draw)."""
    cur.execute("SELECT avg(num_features) FROM landmarks")  # type: ignore[attr-defined]
    per_image = float(cur.fetchone()[0] or 1)  # type: ignore[attr-defined]
    images = max(1, int(np.ceil(wanted / max(per_image, 1.0))) * 2)  # twice over: spread over more photos
    cur.execute("SELECT id FROM landmarks ORDER BY md5(uri) LIMIT %s", (images,))  # type: ignore[attr-defined]
    ids = [r[0] for r in cur.fetchall()]  # type: ignore[attr-defined]
    rows = read_rows(cur, ids)
    return np.concatenate([np.asarray(f.descriptors, np.float32) for f in rows.features if f.num_features])
