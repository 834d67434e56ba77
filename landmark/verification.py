"""Geometric verification: RANSAC over affine maps or homographies. Arrays in, arrays out.

:func:`count_inliers` picks the model a :class:`~landmark.matching.MatchConfig` names
(:func:`verify` returns that model's matrix with the inlier mask, for a match's evidence):

- ``affine``: :func:`ransac_affine` below, DELF's own verification, compiled with numba;
- ``homography``: :func:`ransac_homography`, OpenCV's USAC with MAGSAC++ scoring and local
  optimisation. A homography maps a plane (a facade) exactly under any viewpoint, where an affine
  map only approximates it; MAGSAC++ scores a hypothesis by all residuals up to the threshold
  rather than a hard cut, and the local optimisation refits on the inliers, so the consensus a
  true pair reaches is larger and a tighter threshold can be used, which leaves fewer chance
  inliers to unrelated pairs (measured in the README's quality table).

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
never on how pairs were batched; they are drawn once per ``(seed, K, trials)`` and reused.
The trial loop is compiled with numba: one pass over the points per hypothesis, abandoned as
soon as the hypothesis can no longer reach the best count (which cannot change the result).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .matching import MatchConfig

_EPS = np.spacing(1.0)

MIN_SAMPLES = {"affine": 3, "homography": 4}
"""Correspondences a model needs; a pair with fewer putative matches has no inliers."""


def count_inliers(src: np.ndarray, dst: np.ndarray, config: MatchConfig) -> int:
    """Inliers of the best ``config.verification`` model mapping ``src`` to ``dst`` (``[K x 2]`` pixels)."""
    return int(np.count_nonzero(verify(src, dst, config)[1]))


def verify(src: np.ndarray, dst: np.ndarray, config: MatchConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """The best ``config.verification`` model and its inliers: ``(matrix, mask)``.

    ``src``, ``dst`` ``[K x 2]`` ``(x, y)`` pixels, row ``i`` of one matching row ``i`` of the other.
    ``matrix`` float64 ``[3 x 3]`` maps ``(x, y, 1)`` of ``src`` to ``dst`` (homogeneous; an affine
    map's last row is ``0, 0, 1``), or ``None`` when no model was found; ``mask`` bool ``[K]``.
    The same inputs and settings give the same answer (the seed is ``config.seed``).
    """
    fit = homography_model if config.verification == "homography" else affine_model
    return fit(src, dst, threshold=config.ransac_threshold, trials=config.ransac_trials, seed=config.seed)


def ransac_homography(src: np.ndarray, dst: np.ndarray, *, threshold: float, trials: int, seed: int) -> np.ndarray:
    """Inlier mask, bool ``[K]``, of :func:`homography_model`."""
    return homography_model(src, dst, threshold=threshold, trials=trials, seed=seed)[1]


def homography_model(
    src: np.ndarray, dst: np.ndarray, *, threshold: float, trials: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """The homography OpenCV's USAC (MAGSAC++) finds from ``src`` to ``dst``: float64 ``[3 x 3]``
    (``None`` if none) and its inlier mask, bool ``[K]``.

    ``src``, ``dst`` ``[K x 2]`` ``(x, y)`` pixels; ``threshold`` in pixels of ``dst``; at most
    ``trials`` hypotheses (fewer once the confidence is reached). The sampler's state is ``seed``
    and the search runs on one thread, so the result depends only on the inputs. Fewer than 4
    points, or no model, gives an all-False mask.
    """
    import cv2

    src = np.ascontiguousarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.ascontiguousarray(dst, dtype=np.float64).reshape(-1, 2)
    k = src.shape[0]
    if k < MIN_SAMPLES["homography"] or trials < 1:
        return None, np.zeros(k, dtype=bool)
    matrix, mask = cv2.findHomography(src, dst, _usac_params(float(threshold), int(trials), int(seed)))
    if mask is None or matrix is None:
        return None, np.zeros(k, dtype=bool)
    return matrix, mask.ravel().astype(bool)


@functools.lru_cache(maxsize=64)
def _usac_params(threshold: float, trials: int, seed: int):  # noqa: ANN202 - cv2.UsacParams
    import cv2

    params = cv2.UsacParams()
    params.threshold = threshold
    params.maxIterations = trials
    params.confidence = 0.999
    params.sampler = cv2.SAMPLING_UNIFORM
    params.score = cv2.SCORE_METHOD_MAGSAC
    params.loMethod = cv2.LOCAL_OPTIM_SIGMA
    params.loIterations = 10
    params.loSampleSize = 14
    params.final_polisher = cv2.MAGSAC
    params.final_polisher_iterations = 10
    params.randomGeneratorState = seed
    params.isParallel = False
    return params


def ransac_affine(src: np.ndarray, dst: np.ndarray, *, threshold: float, trials: int, seed: int) -> np.ndarray:
    """Inlier mask, bool ``[K]``, of :func:`affine_model`."""
    return affine_model(src, dst, threshold=threshold, trials=trials, seed=seed)[1]


def affine_model(
    src: np.ndarray, dst: np.ndarray, *, threshold: float, trials: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """The best affine hypothesis mapping ``src`` to ``dst``: float64 ``[3 x 3]`` (last row
    ``0, 0, 1``; ``None`` if none) and its inlier mask, bool ``[K]``.

    ``src`` and ``dst`` are ``[K x 2]`` ``(x, y)`` pixels (row ``i`` of one corresponds to row ``i`` of
    the other); ``threshold`` is in pixels of ``dst``. Fewer than 3 points, or no hypothesis with
    an inlier, gives no model and an all-False mask. The matrix is the hypothesis through the
    winning sample, as the mask is its consensus set (no refit on the inliers).
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    k = src.shape[0]
    if k < 3 or trials < 1:
        return None, np.zeros(k, dtype=bool)
    samples = _sample_triples(seed, k, trials)
    mask = np.zeros(k, dtype=np.bool_)
    model = np.zeros(6)
    count = _kernel()(
        np.ascontiguousarray(src[:, 0]), np.ascontiguousarray(src[:, 1]),
        np.ascontiguousarray(dst[:, 0]), np.ascontiguousarray(dst[:, 1]),
        samples, float(threshold) ** 2, _EPS, mask, model,
    )
    if count == 0:
        return None, mask
    return np.array([model[0:3], model[3:6], [0.0, 0.0, 1.0]]), mask


@functools.lru_cache(maxsize=4096)
def _sample_triples(seed: int, k: int, trials: int) -> np.ndarray:
    """int64 ``[T x 3]`` indices, distinct within each trial, uniform over ordered triples."""
    rng = np.random.default_rng([seed, k])
    a = rng.integers(0, k, trials)
    b = rng.integers(0, k - 1, trials)
    b += b >= a
    c = rng.integers(0, k - 2, trials)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    c += c >= lo
    c += c >= hi
    samples = np.stack([a, b, c], axis=1)
    samples.setflags(write=False)
    return samples


def dynamic_trials(best: int, k: int) -> float:
    """skimage's trial limit once ``best`` of ``k`` points are inliers (``stop_probability=1``)."""
    if best <= 0:
        return np.inf
    denom = min(max(1.0 - (best / k) ** 3, _EPS), 1.0 - _EPS)
    return float(np.ceil(np.log(_EPS) / np.log(denom)))


@functools.cache
def _kernel():  # noqa: ANN202 - a numba dispatcher
    """Compile the trial loop on first use (numba is imported here, not at package import)."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def best_hypothesis(sx, sy, dx, dy, samples, limit, eps, mask, model):  # noqa: ANN001, ANN202
        k = sx.shape[0]
        trials = samples.shape[0]
        best_count = 0
        best_ssr = np.inf
        best = np.zeros(6)  # m0x, m1x, tx, m0y, m1y, ty of the best hypothesis
        max_trials = trials
        t = 0
        while t < max_trials:
            i, j, m = samples[t, 0], samples[t, 1], samples[t, 2]
            t += 1
            d1x, d1y = sx[j] - sx[i], sy[j] - sy[i]
            d2x, d2y = sx[m] - sx[i], sy[m] - sy[i]
            e1x, e1y = dx[j] - dx[i], dy[j] - dy[i]
            e2x, e2y = dx[m] - dx[i], dy[m] - dy[i]
            det = d1x * d2y - d1y * d2x
            scale = np.sqrt(d1x * d1x + d1y * d1y) * np.sqrt(d2x * d2x + d2y * d2y)
            if abs(det) <= 1e-9 * scale or (e1x == 0 and e1y == 0 and e2x == 0 and e2y == 0):
                continue  # degenerate: no unique affine map (skimage skips these too)
            inv = 1.0 / det
            m0x = (e1x * d2y - e2x * d1y) * inv
            m0y = (e1y * d2y - e2y * d1y) * inv
            m1x = (e2x * d1x - e1x * d2x) * inv
            m1y = (e2y * d1x - e1y * d2x) * inv
            tx = dx[i] - m0x * sx[i] - m1x * sy[i]
            ty = dy[i] - m0y * sx[i] - m1y * sy[i]
            count = 0
            ssr = 0.0
            hopeless = False
            for n in range(k):
                rx = m0x * sx[n] + m1x * sy[n] + tx - dx[n]
                ry = m0y * sx[n] + m1y * sy[n] + ty - dy[n]
                r2 = rx * rx + ry * ry
                ssr += r2
                if r2 < limit:
                    count += 1
                elif count + (k - n - 1) < best_count:
                    hopeless = True  # cannot reach, let alone tie, the best: stop counting
                    break
            if hopeless:
                continue
            if count > best_count or (count == best_count and ssr < best_ssr):
                best_count = count
                best_ssr = ssr
                best[0], best[1], best[2], best[3], best[4], best[5] = m0x, m1x, tx, m0y, m1y, ty
                if count > 0:
                    ratio = count / k
                    denom = min(max(1.0 - ratio * ratio * ratio, eps), 1.0 - eps)
                    dynamic = np.ceil(np.log(eps) / np.log(denom))
                    if dynamic < max_trials:
                        max_trials = int(dynamic)
        if best_count > 0:
            model[:] = best
            for n in range(k):
                rx = best[0] * sx[n] + best[1] * sy[n] + best[2] - dx[n]
                ry = best[3] * sx[n] + best[4] * sy[n] + best[5] - dy[n]
                mask[n] = rx * rx + ry * ry < limit
        return best_count

    return best_hypothesis
