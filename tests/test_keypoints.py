"""Keypoint detection from a score map (pure numpy), against brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest

from landmark.extractors.keypoints import detect, max_filter, suppress_non_maxima


def brute_max_filter(values: np.ndarray, radius: int) -> np.ndarray:
    height, width = values.shape
    out = np.empty_like(values)
    for r in range(height):
        for c in range(width):
            out[r, c] = values[max(0, r - radius): r + radius + 1, max(0, c - radius): c + radius + 1].max()
    return out


@pytest.mark.parametrize("shape", [(7, 9), (1, 5), (30, 2), (16, 16)])
@pytest.mark.parametrize("radius", [1, 2, 3])
def test_max_filter_is_the_window_maximum(shape: tuple[int, int], radius: int) -> None:
    values = np.random.default_rng(sum(shape) + radius).random(shape).astype(np.float32)
    np.testing.assert_array_equal(max_filter(values, radius), brute_max_filter(values, radius))


def test_suppression_keeps_only_maxima_that_no_kept_maximum_covers() -> None:
    scores = np.random.default_rng(3).random((40, 50)).astype(np.float32)
    kept = suppress_non_maxima(scores, 2)
    rows, cols = np.nonzero(kept)
    assert len(rows) > 20
    np.testing.assert_array_equal(kept[rows, cols], scores[rows, cols])
    for r, c in zip(rows, cols):
        window = kept[max(0, r - 2): r + 3, max(0, c - 2): c + 3]
        assert np.count_nonzero(window) == 1, "two kept maxima within one window"
    # every strict local maximum of the raw scores is kept
    strict = scores == brute_max_filter(scores, 2)
    assert np.all(kept[strict] == scores[strict])


def test_detect_ranks_caps_and_keeps_off_the_border() -> None:
    scores = np.zeros((60, 80), np.float32)
    peaks = [(10, 10, 0.9), (30, 40, 0.7), (50, 70, 0.8), (1, 40, 0.99), (30, 78, 0.95)]  # last two on the border
    for r, c, s in peaks:
        scores[r, c] = s
    xy, peak = detect(scores, max_keypoints=10)
    np.testing.assert_allclose(xy, [[10, 10], [70, 50], [40, 30]], atol=1e-6)
    np.testing.assert_allclose(peak, [0.9, 0.8, 0.7])
    xy, _ = detect(scores, max_keypoints=2)
    assert len(xy) == 2
    xy, _ = detect(scores, max_keypoints=10, threshold=0.75)
    np.testing.assert_allclose(xy, [[10, 10], [70, 50]], atol=1e-6)
    assert detect(np.zeros((40, 40), np.float32), max_keypoints=5)[0].shape == (0, 2)


def test_detect_refines_towards_the_stronger_neighbour() -> None:
    scores = np.zeros((20, 20), np.float32)
    scores[8, 8] = 1.0
    scores[8, 9] = 0.95  # right neighbour almost as strong: the soft-argmax moves right
    scores[7, 8] = 0.9  # upper neighbour: moves up, less
    (x, y), = detect(scores, max_keypoints=1)[0]
    assert 8.0 < x < 8.5 and 7.5 < y < 8.0
    assert x - 8 > 8 - y


def test_ties_are_broken_by_position_so_runs_agree() -> None:
    scores = np.zeros((30, 30), np.float32)
    for r, c in [(5, 20), (5, 5), (20, 5), (20, 20)]:
        scores[r, c] = 0.5
    xy, _ = detect(scores, max_keypoints=3)
    np.testing.assert_allclose(xy, [[5, 5], [20, 5], [5, 20]], atol=1e-6)  # row-major order
