"""Keypoints from a dense score map: non-maximum suppression, the strongest K, sub-pixel refinement.

Pure numpy. These are the inference-time semantics of ALIKED's keypoint detection (DKD, Zhao
et al., IEEE TIM 2023), which follows SuperPoint's non-maximum suppression:

1. a pixel is a local maximum when it equals the maximum of its ``(2r+1) x (2r+1)`` window
   (outside the map counts as ``-inf``); two more rounds add the maxima that remain once the
   windows of the maxima found so far are suppressed;
2. maxima within ``r`` pixels of the border are dropped;
3. the maxima scoring above ``threshold`` are ranked by score (ties by row-major position) and
   the first ``max_keypoints`` kept;
4. each is moved by the soft-argmax of the scores in its window: the mean of the window's
   offsets weighted by ``exp((score - window max) / 0.1)``, the window zero-padded at the border.
"""

from __future__ import annotations

import numpy as np

TEMPERATURE = 0.1
"""Soft-argmax temperature of the sub-pixel refinement (ALIKED's tuned value)."""


def max_filter(values: np.ndarray, radius: int) -> np.ndarray:
    """Maximum over the ``(2 radius + 1)``-square window around each pixel of ``[H x W]``, the
    outside counting as ``-inf`` (``max_pool2d`` with stride 1 and padding ``radius``). Separable:
    a pass along rows, then along columns."""
    out = values.copy()
    for axis in (0, 1):
        source = out.copy()
        n = source.shape[axis]
        for shift in range(1, radius + 1):
            if shift >= n:
                break
            lead = [slice(None)] * 2
            lag = [slice(None)] * 2
            lead[axis], lag[axis] = slice(shift, None), slice(None, -shift)
            np.maximum(out[tuple(lag)], source[tuple(lead)], out=out[tuple(lag)])
            np.maximum(out[tuple(lead)], source[tuple(lag)], out=out[tuple(lead)])
    return out


def suppress_non_maxima(scores: np.ndarray, radius: int) -> np.ndarray:
    """``scores`` ``[H x W]`` with every pixel but the local maxima set to 0 (three rounds)."""
    maxima = scores == max_filter(scores, radius)
    for _ in range(2):
        suppressed = max_filter(maxima.astype(np.float32), radius) > 0
        remaining = np.where(suppressed, np.float32(0), scores)
        maxima |= (remaining == max_filter(remaining, radius)) & ~suppressed
    return np.where(maxima, scores, np.float32(0))


def detect(
    scores: np.ndarray, *, max_keypoints: int, threshold: float = 0.0, radius: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of the score map ``[H x W]`` (float32, higher is better).

    Returns ``(xy, peak)``: float32 ``[N x 2]`` ``(x, y)`` pixels (pixel centres at integers), and
    float32 ``[N]`` the score of each keypoint's maximum, strongest first; ``N <= max_keypoints``.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    height, width = scores.shape
    peaks = suppress_non_maxima(scores, radius)
    peaks[:radius, :] = 0
    peaks[:, :radius] = 0
    peaks[height - radius:, :] = 0
    peaks[:, width - radius:] = 0
    flat = peaks.ravel()
    candidates = np.flatnonzero(flat > max(threshold, 0.0))
    # Stable sort on the negated score: equal scores keep row-major order, so the result is the same
    # on every run and platform.
    order = np.argsort(-flat[candidates], kind="stable")[:max_keypoints]
    chosen = candidates[order]
    if len(chosen) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, np.float32)
    rows, cols = np.divmod(chosen, width)
    offsets = np.arange(-radius, radius + 1)
    padded = np.pad(scores, radius)  # zeros outside, as the reference's unfold
    window_rows = rows[:, None, None] + radius + offsets[None, :, None]
    window_cols = cols[:, None, None] + radius + offsets[None, None, :]
    windows = padded[window_rows, window_cols].reshape(len(chosen), -1)  # [N x (2r+1)^2], row-major
    weights = np.exp((windows - windows.max(axis=1, keepdims=True)) / np.float32(TEMPERATURE))
    weights /= weights.sum(axis=1, keepdims=True)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    grid = np.stack([dx.ravel(), dy.ravel()], axis=1).astype(np.float32)  # (dx, dy) per window cell
    xy = np.stack([cols, rows], axis=1).astype(np.float32) + weights @ grid
    return xy.astype(np.float32), flat[chosen]
