"""Unit tests of :func:`landmark.verification.ransac_affine` on synthetic correspondences."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from landmark import verification
from landmark.verification import ransac_affine

AFFINE = np.array([[0.9, 0.25], [-0.15, 1.1]])
SHIFT = np.array([35.0, -20.0])


def scene(k: int, inlier_share: float, noise: float = 0.0, seed: int = 0):
    """``src, dst [k x 2]`` in a 1000 px square; ``truth`` marks the correspondences that follow
    AFFINE + SHIFT (with Gaussian ``noise`` px); the others land at least 60 px from their image."""
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 1000, (k, 2))
    dst = src @ AFFINE.T + SHIFT + rng.normal(0, noise, (k, 2)) if noise else src @ AFFINE.T + SHIFT
    truth = np.arange(k) < round(k * inlier_share)
    for i in np.flatnonzero(~truth):
        while True:
            candidate = rng.uniform(0, 1000, 2)
            if np.linalg.norm(candidate - (src[i] @ AFFINE.T + SHIFT)) > 60:
                dst[i] = candidate
                break
    order = rng.permutation(k)
    return src[order], dst[order], truth[order]


def skimage_count(src, dst, threshold, trials, seed):
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, inliers = ransac(
            (src, dst), AffineTransform, min_samples=3, residual_threshold=threshold, max_trials=trials, rng=seed
        )
    return 0 if inliers is None else int(inliers.sum())


@pytest.mark.parametrize("k, share", [(12, 0.5), (60, 0.4), (300, 0.3)])
def test_exact_affine_with_outliers(k, share):
    src, dst, truth = scene(k, share)
    for seed in range(3):
        mask = ransac_affine(src, dst, threshold=20.0, trials=1000, seed=seed)
        assert mask.dtype == bool and mask.shape == (k,)
        np.testing.assert_array_equal(mask, truth)


def test_noisy_inliers_found_outliers_rejected():
    src, dst, truth = scene(200, 0.5, noise=1.5, seed=3)
    mask = ransac_affine(src, dst, threshold=10.0, trials=1000, seed=0)
    assert not (mask & ~truth).any(), "outliers (>= 60 px off) must not be inliers"
    assert (mask & truth).sum() >= 0.98 * truth.sum()


@pytest.mark.parametrize("k", [0, 1, 2])
def test_fewer_than_three_points_give_an_empty_mask(k):
    src = np.arange(2 * k, dtype=np.float64).reshape(k, 2)
    mask = ransac_affine(src, src, threshold=5.0, trials=100, seed=0)
    assert mask.dtype == bool and mask.shape == (k,) and not mask.any()


def test_degenerate_inputs():
    t = np.linspace(0, 500, 40)
    collinear = np.stack([t, 2 * t + 3], axis=1)
    assert not ransac_affine(collinear, collinear + 7, threshold=5.0, trials=200, seed=0).any()
    same = np.full((10, 2), 42.0)
    assert not ransac_affine(same, same, threshold=5.0, trials=200, seed=0).any()
    # Distinct sources all sent to one point: skimage cannot fit that sample either.
    src = np.random.default_rng(0).uniform(0, 100, (10, 2))
    assert not ransac_affine(src, np.zeros((10, 2)), threshold=5.0, trials=200, seed=0).any()
    # Duplicated correspondences are fine as long as some samples span the plane.
    src, dst, truth = scene(30, 0.6)
    mask = ransac_affine(np.repeat(src, 2, axis=0), np.repeat(dst, 2, axis=0), threshold=5.0, trials=500, seed=0)
    np.testing.assert_array_equal(mask, np.repeat(truth, 2))
    # One source point for all: every sample is degenerate.
    noise = np.random.default_rng(1).uniform(size=(5, 2))
    mask = ransac_affine(np.zeros((5, 2)), noise, threshold=1.0, trials=50, seed=0)
    assert mask.shape == (5,) and not mask.any()


def test_deterministic_and_independent_of_dtype():
    src, dst, _ = scene(150, 0.2, noise=3.0, seed=5)
    first = ransac_affine(src, dst, threshold=8.0, trials=700, seed=11)
    assert first.any()
    np.testing.assert_array_equal(first, ransac_affine(src, dst, threshold=8.0, trials=700, seed=11))
    np.testing.assert_array_equal(
        first, ransac_affine(src.astype(np.float32), dst.astype(np.float32), threshold=8.0, trials=700, seed=11)
    )


def test_threshold_is_strict():
    rng = np.random.default_rng(2)
    src = rng.integers(0, 1000, (25, 2)).astype(np.float64)
    dst = src.copy()
    dst[0] += (3.0, 4.0)  # 5 px off the identity, exactly
    at = ransac_affine(src, dst, threshold=5.0, trials=300, seed=0)
    assert at.sum() == 24 and not at[0]
    assert ransac_affine(src, dst, threshold=5.0 + 1e-6, trials=300, seed=0).all()


def test_trial_limit_mirrors_skimage():
    from skimage.measure.fit import _dynamic_max_trials

    for k, best in [(100, 100), (100, 50), (500, 160), (200, 20), (10, 0)]:
        assert verification.dynamic_trials(best, k) == _dynamic_max_trials(best, k, 3, 1)


def test_all_inliers_stop_after_one_trial_as_skimage_does():
    # With every point an inlier the limit drops to 1 trial; a later, better-fitting trial
    # is never drawn, so the mask is the first hypothesis's.
    src, dst, truth = scene(50, 1.0, noise=0.5, seed=9)
    mask = ransac_affine(src, dst, threshold=20.0, trials=1000, seed=0)
    assert mask.all() and truth.all()


@pytest.mark.parametrize(
    "k, share, noise, threshold", [(40, 0.6, 2.0, 10.0), (150, 0.4, 3.0, 12.0), (400, 0.35, 4.0, 15.0)]
)
def test_counts_agree_with_skimage(k, share, noise, threshold):
    src, dst, truth = scene(k, share, noise=noise, seed=k)
    ours = [ransac_affine(src, dst, threshold=threshold, trials=500, seed=s).sum() for s in range(5)]
    theirs = [skimage_count(src, dst, threshold, 500, s) for s in range(3)]
    assert abs(np.median(ours) - np.median(theirs)) <= max(2, 0.05 * np.median(theirs))
    assert min(ours) >= 0.9 * truth.sum()
