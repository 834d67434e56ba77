"""Putative matching of one query against a partition of stored images. Pure numpy.

Every stored descriptor takes its nearest query descriptor; a rule decides which of those
pairs are kept (the presets in :data:`PRESETS` name one per extractor):

- ``distance`` (DELF, as DELF's own matching does): Euclidean distance at most ``max_distance``.
- ``ratio``: closer than ``ratio`` times the second nearest query descriptor (Lowe's test).
- ``mutual`` (ALIKED, RootSIFT): the stored descriptor is also the nearest, among its own
  image's descriptors, to that query descriptor (mutual nearest neighbours), and passes the
  ratio test. Each query and each stored feature then takes part in at most one match, so a
  repeated pattern cannot pile up matches on one point; the ratio test drops the ambiguous ones.

Kept pairs are then verified by RANSAC (:mod:`landmark.verification`): an affine map (DELF's),
or a homography (MAGSAC++), counting the inliers.

Descriptors are unit length (:mod:`landmark.contract`), so distances come from one matrix
product per block of stored images: ``|a - b|^2 = 2 - 2 a.b``.
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
from .verification import MIN_SAMPLES, count_inliers, verify


@dataclass(frozen=True)
class MatchConfig:
    """Matching and verification options."""

    rule: Literal["distance", "ratio", "mutual"] = setting(
        "distance",
        help="putative matching rule: distance (DELF), ratio (Lowe's test) or mutual (mutual nearest "
        "neighbours passing the ratio test)",
        shown="the extractor's preset",
    )
    max_distance: float = setting(0.8, help="distance rule: keep a nearest neighbour at most this far")
    ratio: float = setting(
        0.8, help="ratio and mutual rules: keep a nearest neighbour closer than RATIO x the second",
        shown="the extractor's preset",
    )
    verification: Literal["affine", "homography"] = setting(
        "affine", help="RANSAC model: affine (DELF's) or homography (MAGSAC++)", shown="the extractor's preset"
    )
    ransac_threshold: float = setting(
        20.0, help="RANSAC inlier threshold in pixels of the stored image", shown="the extractor's preset"
    )
    ransac_trials: int = setting(1000, help="RANSAC hypotheses per image pair", shown="the extractor's preset")
    min_inliers: int = setting(5, help="drop images with fewer verified inliers than this")
    seed: int = setting(0, help="RANSAC seed; the same seed gives the same inlier counts")
    search: Literal["auto", "index", "exhaustive"] = setting(
        "auto", help="which stored images a query verifies: exhaustive (all), index (a shortlist from the "
        "retrieval index, and every image it does not cover yet), auto (index once the store has one and is "
        "large enough that it pays)",
    )
    shortlist: int = setting(100, help="index search: images the retrieval index shortlists for verification")
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
        if self.shortlist < 1:
            raise ConfigError(f"shortlist: must be at least 1, got {self.shortlist}")
        gemm.check(self.precision)


PRESETS: dict[str, MatchConfig] = {
    # DELF's own matching and verification, which a user with the DELF model gets as it is.
    "delf": MatchConfig(rule="distance", max_distance=0.8),
    # Mutual nearest neighbours with a ratio test, and a tighter affine threshold than DELF's 20 px.
    "rootsift": MatchConfig(rule="mutual", ratio=0.9, ransac_threshold=12.0),
    "aliked": MatchConfig(rule="mutual", ratio=0.9, ransac_threshold=12.0),
}
"""Named matching presets; each extractor names the one its descriptors need. The measurements
behind the choices (and against the homography) are in the README's quality table."""


def putative_matches(
    query_descriptors: np.ndarray, stored_descriptors: np.ndarray, config: MatchConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(query_idx [K], stored_idx [K])`` of the putative matches of one pair.

    ``query_descriptors`` ``[Nq x D]`` and ``stored_descriptors`` ``[M x D]`` are unit-length rows.
    """
    stored_descriptors = np.asarray(stored_descriptors)
    nearest, keep = _nearest_kept(
        gemm.as_precision(query_descriptors, config.precision),
        gemm.as_precision(stored_descriptors, config.precision),
        np.array([0, len(stored_descriptors)], np.int64),
        config,
    )
    stored_idx = np.flatnonzero(keep)
    return nearest[stored_idx], stored_idx


@dataclass(frozen=True, eq=False)
class PairMatch:
    """One verified pair: the putative matches and the model RANSAC found among them."""

    query_idx: np.ndarray
    """int64 ``[K]``: rows of the query's features."""
    stored_idx: np.ndarray
    """int64 ``[K]``: rows of the stored image's features (ascending)."""
    matrix: np.ndarray | None
    """float64 ``[3 x 3]`` mapping query ``(x, y, 1)`` to stored ``(x, y, 1)``, or ``None``."""
    inliers: np.ndarray
    """bool ``[K]``: which putative matches the model explains."""


def match_pair(query: Features, stored: Features, config: MatchConfig) -> PairMatch:
    """:func:`match_batch` of one stored image, keeping what it counts: the putative matches in
    the same order, verified by the same RANSAC with the same seed, so ``inliers.sum()`` is the
    count :func:`match_batch` gives the pair (a pair with too few putatives gets no model)."""
    query_idx, stored_idx = putative_matches(query.descriptors, stored.descriptors, config)
    if len(stored_idx) < _verified_from(config):
        return PairMatch(query_idx, stored_idx, None, np.zeros(len(stored_idx), bool))
    matrix, mask = verify(query.locations[query_idx], stored.locations[stored_idx], config)
    return PairMatch(query_idx, stored_idx, matrix, mask)


STORED_ROWS_PER_PRODUCT = 1024
"""Stored descriptors per matrix product (whole images, so at least one image): a ``[1024 x Nq]``
float32 block (4 MB at Nq = 1000) keeps memory flat however large the partition; measured 5-10%
faster than 256 or 4096 rows, as the passes for the nearest neighbours then read it from cache."""


def _blocks(offsets: np.ndarray, rows: int = STORED_ROWS_PER_PRODUCT) -> list[tuple[int, int]]:
    """Consecutive image ranges ``(first, end)`` of at most ``rows`` rows each (at least one image)."""
    blocks, first = [], 0
    images = len(offsets) - 1
    while first < images:
        end = int(np.searchsorted(offsets, offsets[first] + rows, side="right")) - 1
        end = min(max(end, first + 1), images)
        blocks.append((first, end))
        first = end
    return blocks


def _nearest_kept(
    query: np.ndarray, stored: np.ndarray, offsets: np.ndarray, config: MatchConfig
) -> tuple[np.ndarray, np.ndarray]:
    """For each stored row: the index of its nearest query row, and whether the rule keeps the pair.
    Shapes ``[M]``. Image ``b`` owns stored rows ``offsets[b]:offsets[b + 1]`` (the mutual check
    looks within one image); both inputs are in ``config.precision``'s layout."""
    m, nq = stored.shape[0], query.shape[0]
    nearest = np.zeros(m, np.int64)
    keep = np.zeros(m, bool)
    if nq == 0 or m == 0:
        return nearest, keep
    limit = np.float32(config.max_distance) ** 2 if config.rule == "distance" else None
    ratio2 = np.float32(config.ratio) ** 2
    for first, end in _blocks(offsets):
        lo, hi = int(offsets[first]), int(offsets[end])
        if hi == lo:
            continue
        similarity = gemm.similarity(stored[lo:hi], query, config.precision)  # [rows x Nq] float32
        rows = np.arange(hi - lo)
        index = similarity.argmax(axis=1)
        nearest[lo:hi] = index
        top = similarity[rows, index]
        best = np.maximum(2.0 - 2.0 * top, 0.0)
        if limit is not None:
            keep[lo:hi] = best <= limit
            continue
        if config.rule == "mutual":
            # Each row against the best row of its own image in its nearest query's column (ties
            # count as mutual). One max per image: np.maximum.reduceat along rows is 40x slower.
            mutual = np.empty(hi - lo, bool)
            for b in range(first, end):
                start, stop = int(offsets[b]) - lo, int(offsets[b + 1]) - lo
                if stop > start:
                    column_best = similarity[start:stop].max(axis=0)  # [Nq]
                    mutual[start:stop] = top[start:stop] >= column_best[index[start:stop]]
        passes = np.ones(len(best), bool)  # one query descriptor: no second to compare with
        if nq >= 2:
            similarity[rows, index] = -np.inf
            second = np.maximum(2.0 - 2.0 * similarity.max(axis=1), 0.0)
            passes = best < ratio2 * second  # d1 < r * d2  <=>  d1^2 < r^2 * d2^2
        keep[lo:hi] = passes & mutual if config.rule == "mutual" else passes
    return nearest, keep


def _verified_from(config: MatchConfig) -> int:
    """Putative matches a pair needs to be verified at all: enough for the model's sample and
    for ``min_inliers`` (a pair with fewer could not be kept, so RANSAC is not run)."""
    return max(MIN_SAMPLES[config.verification], config.min_inliers)


def match_partition(query: Features, stored: Sequence[Features], config: MatchConfig) -> np.ndarray:
    """:func:`match_batch` of ``query`` against the images ``stored``."""
    return match_batch(query, FeatureBatch.of(stored, query.descriptor_dim), config)


def match_batch(query: Features, batch: FeatureBatch, config: MatchConfig) -> np.ndarray:
    """Verify one query against many stored images at once.

    Returns int64 ``[B x 2]``: ``(inliers, putative matches)`` for each of the ``B`` stored images,
    in order. Nearest neighbours come from blocked matrix products over the whole batch; RANSAC
    then runs per pair, and only where enough putative matches exist to reach both
    ``min_inliers`` and the model's minimal sample (otherwise inliers are 0). ``batch`` may also
    be a partition held in GPU memory (:class:`landmark.gpu.HeldBatch`, ``LANDMARK_DEVICE=cuda``).
    """
    if not isinstance(batch, FeatureBatch):
        return batch.match(query, config)  # a partition held on a GPU matches itself there (landmark.gpu)
    result = np.zeros((len(batch), 2), dtype=np.int64)
    if len(batch) == 0 or query.num_features == 0 or batch.offsets[-1] == 0:
        return result
    nearest, keep = _nearest_kept(
        gemm.as_precision(query.descriptors, config.precision),
        batch.descriptors_as(config.precision),
        batch.offsets,
        config,
    )
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    putatives = kept_before[batch.offsets[1:]] - kept_before[batch.offsets[:-1]]
    result[:, 1] = putatives
    for b in np.flatnonzero(putatives >= _verified_from(config)):
        lo, hi = batch.offsets[b], batch.offsets[b + 1]
        stored_idx = lo + np.flatnonzero(keep[lo:hi])
        # Query -> stored, the direction of DELF's own verification (residuals in stored pixels).
        result[b, 0] = count_inliers(query.locations[nearest[stored_idx]], batch.locations[stored_idx], config)
    return result
