"""Geometric verification: RANSAC over affine models, vectorised over trials. Pure numpy.

:func:`ransac_affine` mirrors ``skimage.measure.ransac((src, dst), AffineTransform, min_samples=3,
residual_threshold=threshold, max_trials=trials)`` with its default ``stop_probability=1``:

- each trial draws 3 distinct correspondences and fits the affine map through them exactly;
  degenerate samples (collinear or coincident ``src`` points, or 3 identical ``dst`` points) are
  skipped but still count as trials;
- a point is an inlier when the Euclidean distance of ``model(src)`` to ``dst`` is strictly below
  ``threshold``; the best trial has the most inliers, ties going to the smaller sum of squared
  residuals over all points, then to the earlier trial;
- skimage's dynamic trial limit is kept: after each new best with ``n`` inliers of ``K`` the loop
  stops once ``ceil(log(eps) / log(1 - (n / K)^3))`` trials have run (with ``eps`` the float64
  spacing of 1, which is what ``stop_probability=1`` clips to);
- the mask returned is the best trial's consensus set (skimage's final refit does not change it).

The samples come from ``np.random.default_rng([seed, K])``, so the mask depends only on the inputs,
never on how pairs were batched. Trials are evaluated in chunks of at most :data:`CHUNK_ELEMENTS`
trial x point residuals, so memory stays bounded for any ``K``.
"""

from __future__ import annotations

import numpy as np

CHUNK_ELEMENTS = 1 << 16
"""Most trial x point residuals held at once: 512 KiB of float64 per temporary stays in cache
(measured: chunks of 4M elements are 2-5x slower for K >= 300)."""

_EPS = np.spacing(1.0)


def ransac_affine(src: np.ndarray, dst: np.ndarray, *, threshold: float, trials: int, seed: int) -> np.ndarray:
    """Inlier mask, bool ``[K]``, of the best affine hypothesis mapping ``src`` to ``dst``.

    ``src`` and ``dst`` are ``[K x 2]`` ``(x, y)`` pixels (row ``i`` of one corresponds to row ``i`` of
    the other); ``threshold`` is in pixels of ``dst``. Fewer than 3 points, or no hypothesis with
    an inlier, gives an all-False mask.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    k = src.shape[0]
    if k < 3 or trials < 1:
        return np.zeros(k, dtype=bool)
    coef = _fit(src, dst, *_sample_triples(np.random.default_rng([seed, k]), k, trials))  # [T x 2 x 3]
    valid = ~np.isnan(coef[:, 0, 0])
    points = np.vstack([src.T, np.ones((1, k))])  # [3 x K] homogeneous
    limit = float(threshold) ** 2
    counts = np.full(trials, -1, dtype=np.int64)  # -1: skipped (degenerate) or not run
    ssr = np.full(trials, np.inf)
    best_count, best_ssr, mask = 0, np.inf, np.zeros(k, dtype=bool)
    chunk = max(1, CHUNK_ELEMENTS // k)
    for lo in range(0, trials, chunk):
        hi = min(lo + chunk, trials)
        squared = _squared_residuals(coef[lo:hi], points, dst)  # [t x K]
        inside = squared < limit
        counts[lo:hi] = np.where(valid[lo:hi], np.count_nonzero(inside, axis=1), -1)
        ssr[lo:hi] = np.where(valid[lo:hi], squared.sum(axis=1), np.inf)
        used = _trials_run(counts[:hi], k, trials)
        n = min(used, hi) - lo  # trials of this chunk that skimage would have run
        top = counts[lo : lo + n].max()
        if top > 0 and top >= best_count:
            candidates = np.flatnonzero(counts[lo : lo + n] == top)
            j = candidates[np.argmin(ssr[lo:][candidates])]  # argmin: the earliest of equal sums
            if top > best_count or ssr[lo + j] < best_ssr:
                best_count, best_ssr, mask = top, ssr[lo + j], inside[j].copy()
        if used <= hi:
            break
    return mask


def _sample_triples(rng: np.random.Generator, k: int, trials: int) -> tuple[np.ndarray, ...]:
    """Three ``[T]`` index arrays, distinct within each trial, uniform over ordered triples."""
    a = rng.integers(0, k, trials)
    b = rng.integers(0, k - 1, trials)
    b += b >= a
    c = rng.integers(0, k - 2, trials)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    c += c >= lo
    c += c >= hi
    return a, b, c


def _fit(src: np.ndarray, dst: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Exact affine maps through the sampled triples: ``[T x 2 x 3]`` rows ``(a0, a1, a2)``, ``(b0, b1, b2)``
    with ``x' = a0 x + a1 y + a2``; all-NaN where the sample is degenerate."""
    p0, d1, d2 = src[a], src[b] - src[a], src[c] - src[a]
    q0, e1, e2 = dst[a], dst[b] - dst[a], dst[c] - dst[a]
    det = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    scale = np.linalg.norm(d1, axis=1) * np.linalg.norm(d2, axis=1)
    same_dst = ~(e1.any(axis=1) | e2.any(axis=1))  # skimage cannot normalise 3 identical points
    degenerate = (np.abs(det) <= 1e-9 * scale) | same_dst
    inv_det = 1.0 / np.where(degenerate, 1.0, det)
    # A = E D^-1 with D = [d1 d2], E = [e1 e2] as columns.
    m0 = (e1 * d2[:, 1:2] - e2 * d1[:, 1:2]) * inv_det[:, None]  # first column of A, [T x 2]
    m1 = (e2 * d1[:, 0:1] - e1 * d2[:, 0:1]) * inv_det[:, None]  # second column of A
    t = q0 - m0 * p0[:, 0:1] - m1 * p0[:, 1:2]
    coef = np.stack([m0, m1, t], axis=2)  # [T x 2 (output x, y) x 3]
    coef[degenerate] = np.nan
    return coef


def _squared_residuals(coef: np.ndarray, points: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Squared distances ``|model(src) - dst|^2``, ``[t x K]`` for ``t`` models."""
    dx = coef[:, 0, :] @ points
    dx -= dst[:, 0]
    dy = coef[:, 1, :] @ points
    dy -= dst[:, 1]
    dx *= dx
    dy *= dy
    dx += dy
    return dx


def _trials_run(counts: np.ndarray, k: int, trials: int) -> int:
    """How many trials skimage runs given the inlier counts seen so far (``trials + 1``: not decided)."""
    best = np.maximum.accumulate(np.maximum(counts, 0))
    denom = np.clip(1.0 - (best / k) ** 3, _EPS, 1.0 - _EPS)
    dynamic = np.where(best > 0, np.ceil(np.log(_EPS) / np.log(denom)), np.inf)
    done = np.arange(1, counts.size + 1) >= np.minimum(dynamic, trials)
    return int(np.argmax(done)) + 1 if done.any() else trials + 1
