"""The retrieval index's pure parts: VLAD vectors, codebooks, shortlists (no database, no Dask)."""

from __future__ import annotations

import numpy as np
import pytest

from landmark.retrieval.shortlist import HeldVectors, chunked, merge_shortlists, most_similar
from landmark.retrieval.vlad import train_codebook, vlad


def unit_rows(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_vlad_is_unit_length_and_sums_residuals_per_codeword() -> None:
    centroids = np.eye(4, dtype=np.float32)
    descriptors = np.array([[1.0, 0.1, 0, 0], [0.9, 0, 0.2, 0], [0, 0, 0, 1.0]], np.float32)
    vector = vlad(descriptors, centroids)
    assert vector.shape == (16,) and np.isclose(np.linalg.norm(vector), 1.0)
    blocks = vector.reshape(4, 4)
    # Word 0 holds the first two descriptors' residuals; word 3's only residual is zero.
    residual = descriptors[:2].sum(axis=0) - 2 * centroids[0]
    expected = residual / np.linalg.norm(residual)
    expected = np.sign(expected) * np.sqrt(np.abs(expected))
    assert np.allclose(blocks[0] / np.linalg.norm(blocks[0]), expected / np.linalg.norm(expected), atol=1e-6)
    assert not blocks[1:].any()
    assert not vlad(np.zeros((0, 4), np.float32), centroids).any()


def test_the_same_photo_scores_higher_than_another() -> None:
    rng = np.random.default_rng(1)
    photo, other = unit_rows(rng, 300), unit_rows(rng, 300)
    centroids = train_codebook(unit_rows(rng, 2000), 8, seed=0)  # from the collection, not these two
    noisy = photo[rng.permutation(300)[:200]] + 0.05 * rng.standard_normal((200, 16)).astype(np.float32)
    a, b, c = vlad(photo, centroids), vlad(noisy, centroids), vlad(other, centroids)
    assert a @ b > 0.6 and abs(a @ c) < 0.3


def test_a_codebook_is_the_same_for_the_same_seed_and_needs_enough_descriptors() -> None:
    data = unit_rows(np.random.default_rng(2), 500)
    assert np.array_equal(train_codebook(data, 8, seed=3), train_codebook(data, 8, seed=3))
    with pytest.raises(ValueError, match="a codebook of 8 words needs at least 8 descriptors, got 5"):
        train_codebook(data[:5], 8)


def held(ids: list[int], vectors: list[list[float] | None]) -> HeldVectors:
    have = np.array([v is not None for v in vectors])
    matrix = np.array([v for v in vectors if v is not None], np.float16)
    return HeldVectors(np.array(ids), [f"u{i}" for i in ids], matrix, np.flatnonzero(have), np.flatnonzero(~have))


def test_a_partition_returns_its_best_and_every_image_without_a_vector() -> None:
    part = held([10, 11, 12, 13], [[1, 0], [0.6, 0.8], None, [0, 1]])
    best, unindexed = most_similar(part, np.array([1.0, 0.0]), None, 2)
    assert [i for _, i in best] == [10, 11] and unindexed == [12]
    best, unindexed = most_similar(part, np.array([1.0, 0.0]), "u10", 2)  # the query's own row left out
    assert [i for _, i in best] == [11, 13] and unindexed == [12]
    assert most_similar(part, np.array([1.0, 0.0]), "u12", 5)[1] == []


def test_shortlists_merge_best_first_with_ties_by_id() -> None:
    merged = merge_shortlists([[(0.9, 5), (0.5, 1)], [(0.9, 2), (0.7, 8)]], 3)
    assert merged == [(0.9, 2), (0.9, 5), (0.7, 8)]
    assert chunked([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]] and chunked([1], 4) == [[1]]
