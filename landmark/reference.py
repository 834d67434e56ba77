"""The reference pipeline: DELF's own matching, written the way DELF writes it.

A k-d tree (``scipy.spatial.cKDTree``) on the query descriptors, queried with the stored ones,
then ``skimage.measure.ransac`` with an affine model from query to stored locations. It is slow
(one Python RANSAC loop per pair) and exists to check :func:`landmark.matching.match_partition`
against, in tests and benchmarks.

Differences from :func:`~landmark.matching.match_partition`, on purpose:

- RANSAC runs whenever there are at least 3 putative matches (``min_inliers`` is not applied);
- the RANSAC random stream is skimage's, so counts agree in distribution, not bit for bit;
- cKDTree's ``distance_upper_bound`` keeps distances strictly below ``max_distance`` (matching keeps
  ``<=``) and works in float64; only exact ties can differ.
"""

from __future__ import annotations

import warnings

import numpy as np

from .contract import Features
from .matching import MatchConfig


def reference_putatives(
    query_descriptors: np.ndarray, stored_descriptors: np.ndarray, config: MatchConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(query_idx [K], stored_idx [K])``, like :func:`landmark.matching.putative_matches`: each stored
    descriptor ``[M x D]`` takes its nearest query descriptor ``[Nq x D]`` (Euclidean, float64), kept by
    the config's rule (``distance``: closer than ``max_distance``; ``ratio``: Lowe's test; ``mutual``:
    Lowe's test, and the stored descriptor is the nearest of the stored ones to that query
    descriptor, found with a second tree)."""
    from scipy.spatial import cKDTree

    empty = np.zeros(0, dtype=np.int64)
    if len(query_descriptors) == 0 or len(stored_descriptors) == 0:
        return empty, empty
    tree = cKDTree(query_descriptors)
    if config.rule == "distance":
        distances, nearest = tree.query(stored_descriptors, k=1, distance_upper_bound=config.max_distance)
        keep = np.isfinite(distances)
    else:
        distances, nearest = tree.query(stored_descriptors, k=2)
        # With a single query descriptor the second distance is inf and every match passes.
        keep = distances[:, 0] < config.ratio * distances[:, 1]
        nearest = nearest[:, 0]
        if config.rule == "mutual":
            _, back = cKDTree(stored_descriptors).query(query_descriptors, k=1)
            keep &= back[np.minimum(nearest, len(query_descriptors) - 1)] == np.arange(len(stored_descriptors))
    stored_idx = np.flatnonzero(keep)
    return nearest[stored_idx].astype(np.int64), stored_idx


def reference_inliers(
    query: Features, stored: Features, config: MatchConfig, rng: np.random.Generator | int | None = None
) -> tuple[int, int]:
    """``(inliers, putative matches)`` of one pair, the DELF way. ``rng`` seeds skimage's RANSAC."""
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    query_idx, stored_idx = reference_putatives(query.descriptors, stored.descriptors, config)
    putatives = int(stored_idx.size)
    if putatives < 3:
        return 0, putatives
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No inliers found")
        warnings.filterwarnings("ignore", message="Estimated model is not valid")
        _, inliers = ransac(
            (query.locations[query_idx].astype(np.float64), stored.locations[stored_idx].astype(np.float64)),
            AffineTransform,
            min_samples=3,
            residual_threshold=config.ransac_threshold,
            max_trials=config.ransac_trials,
            rng=rng,
        )
    return (0 if inliers is None else int(np.count_nonzero(inliers))), putatives
