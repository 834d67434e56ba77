"""Putative matching of one query against a partition of stored images. Pure numpy.

Two rules, one per descriptor family (the presets in :data:`PRESETS`):

- ``distance`` (DELF, as DELF's own matching does): every stored descriptor takes its nearest
  query descriptor; the pair is kept when their Euclidean distance is at most ``max_distance``.
- ``ratio`` (RootSIFT): the same nearest neighbour, kept when it is closer than ``ratio`` times
  the second nearest (Lowe's ratio test).

Descriptors are unit length (:mod:`landmark.contract`), so distances come from one matrix
product per partition: ``|a - b|^2 = 2 - 2 a.b``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import gemm
from .config import setting
from .contract import FeatureBatch, Features
from .errors import ConfigError
from .verification import ransac_affine


@dataclass(frozen=True)
class MatchConfig:
    """Matching and verification options."""

    rule: Literal["distance", "ratio"] = setting(
        "distance", help="putative matching rule: distance (DELF) or ratio (Lowe's test, RootSIFT)",
        shown="the extractor's preset",
    )
    max_distance: float = setting(0.8, help="distance rule: keep a nearest neighbour at most this far")
    ratio: float = setting(0.8, help="ratio rule: keep a nearest neighbour closer than RATIO x the second")
    ransac_threshold: float = setting(20.0, help="RANSAC inlier threshold in pixels")
    ransac_trials: int = setting(1000, help="RANSAC hypotheses per image pair")
    min_inliers: int = setting(5, help="drop images with fewer verified inliers than this")
    seed: int = setting(0, help="RANSAC seed; the same seed gives the same inlier counts")
    precision: Literal["float32", "bfloat16"] = setting(
        "float32", help="descriptor products: float32, or bfloat16 (about 2-3x faster; needs landmark[mkl])"
    )

    def validate(self) -> None:
        if not 0 < self.max_distance <= 2:
            raise ConfigError(f"max_distance: must be in (0, 2], got {self.max_distance}")
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"ratio: must be in (0, 1], got {self.ratio}")
        if self.ransac_threshold <= 0:
            raise ConfigError(f"ransac_threshold: must be positive, got {self.ransac_threshold}")
        if self.ransac_trials < 1:
            raise ConfigError(f"ransac_trials: must be at least 1, got {self.ransac_trials}")
        if self.min_inliers < 0:
            raise ConfigError(f"min_inliers: must be at least 0, got {self.min_inliers}")
        gemm.check(self.precision)


PRESETS: dict[str, MatchConfig] = {
    "delf": MatchConfig(rule="distance", max_distance=0.8),
    "rootsift": MatchConfig(rule="ratio", ratio=0.8),
}
"""Named matching presets; each extractor names the one its descriptors need."""

AFFINE_MIN_SAMPLES = 3


def putative_matches(
    query_descriptors: np.ndarray, stored_descriptors: np.ndarray, config: MatchConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(query_idx [K], stored_idx [K])`` of the putative matches of one pair.

    ``query_descriptors`` ``[Nq x D]`` and ``stored_descriptors`` ``[M x D]`` are unit-length rows.
    """
    nearest, best, second = _nearest_query(
        gemm.as_precision(query_descriptors, config.precision),
        gemm.as_precision(stored_descriptors, config.precision),
        config.rule == "ratio",
        config.precision,
    )
    keep = _keep(best, second, config)
    stored_idx = np.flatnonzero(keep)
    return nearest[stored_idx], stored_idx


STORED_ROWS_PER_PRODUCT = 1024
"""Stored descriptors per matrix product: a ``[1024 x Nq]`` float32 block (4 MB at Nq = 1000)
keeps memory flat however large the partition; measured 5-10% faster than 256 or 4096 rows,
as the passes for the nearest neighbours then read the block from cache."""


def _nearest_query(
    query: np.ndarray, stored: np.ndarray, need_second: bool, precision: str = "float32"
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """For each stored row: index of the nearest query row, squared distance, and (optionally)
    squared distance of the second nearest. Shapes ``[M]``. Both inputs are in ``precision``'s
    layout (:func:`landmark.gemm.as_precision`)."""
    m, nq = stored.shape[0], query.shape[0]
    nearest = np.zeros(m, np.int64)
    best = np.full(m, np.inf, np.float32)
    second = np.full(m, np.inf, np.float32) if need_second else None
    if nq == 0:
        return nearest, best, second
    for lo in range(0, m, STORED_ROWS_PER_PRODUCT):
        hi = min(lo + STORED_ROWS_PER_PRODUCT, m)
        similarity = gemm.similarity(stored[lo:hi], query, precision)  # [rows x Nq] float32
        rows = np.arange(hi - lo)
        index = similarity.argmax(axis=1)
        nearest[lo:hi] = index
        best[lo:hi] = np.maximum(2.0 - 2.0 * similarity[rows, index], 0.0)
        if second is not None and nq >= 2:
            similarity[rows, index] = -np.inf
            second[lo:hi] = np.maximum(2.0 - 2.0 * similarity.max(axis=1), 0.0)
    return nearest, best, second


def _keep(best: np.ndarray, second: np.ndarray | None, config: MatchConfig) -> np.ndarray:
    if config.rule == "distance":
        return best <= np.float32(config.max_distance) ** 2
    assert second is not None
    # Compare squared distances: d1 < r * d2  <=>  d1^2 < r^2 * d2^2.
    return best < np.float32(config.ratio) ** 2 * second


def match_partition(query: Features, stored: Sequence[Features], config: MatchConfig) -> np.ndarray:
    """:func:`match_batch` of ``query`` against the images ``stored``."""
    return match_batch(query, FeatureBatch.of(stored, query.descriptor_dim), config)


def match_batch(query: Features, batch: FeatureBatch, config: MatchConfig) -> np.ndarray:
    """Verify one query against many stored images at once.

    Returns int64 ``[B x 2]``: ``(inliers, putative matches)`` for each of the ``B`` stored images,
    in order. Nearest neighbours come from blocked matrix products over the whole batch; RANSAC
    then runs per pair, and only where enough putative matches exist to reach both
    ``min_inliers`` and the 3 samples of an affine model (otherwise inliers are 0).
    """
    result = np.zeros((len(batch), 2), dtype=np.int64)
    if len(batch) == 0 or query.num_features == 0 or batch.offsets[-1] == 0:
        return result
    nearest, best, second = _nearest_query(
        gemm.as_precision(query.descriptors, config.precision),
        batch.descriptors_as(config.precision),
        config.rule == "ratio",
        config.precision,
    )
    keep = _keep(best, second, config)
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    putatives = kept_before[batch.offsets[1:]] - kept_before[batch.offsets[:-1]]
    result[:, 1] = putatives
    needed = max(AFFINE_MIN_SAMPLES, config.min_inliers)
    for b in np.flatnonzero(putatives >= needed):
        lo, hi = batch.offsets[b], batch.offsets[b + 1]
        stored_idx = lo + np.flatnonzero(keep[lo:hi])
        # Query -> stored, the direction of DELF's own verification (residuals in stored pixels).
        inliers = ransac_affine(
            query.locations[nearest[stored_idx]],
            batch.locations[stored_idx],
            threshold=config.ransac_threshold,
            trials=config.ransac_trials,
            seed=config.seed,
        )
        result[b, 0] = int(np.count_nonzero(inliers))
    return result
