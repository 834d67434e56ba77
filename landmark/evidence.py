"""Why a stored image matched: the transformation RANSAC fitted, and the inliers that agree on it.

The Dask fan-out returns counts only, so that its results stay small however many images are
stored. After ranking, the returned matches alone are verified again here, on the client: their
stored features are read by URI and matched by :func:`landmark.matching.match_pair`, the same
putative matching and RANSAC with the same seed as the fan-out, so each finds the model behind
its count (a stored image rewritten in between may give another count, or none if it is gone).

Coordinates are pixels of each image as its features were extracted: decoded, turned upright
by its EXIF orientation and shrunk to the extractor's ``max_image_side`` (``query_size`` and
``stored_size``; for an original's pixels, multiply by its size over these). ``matrix`` maps a
query point ``(x, y, 1)`` to the stored image's ``(x, y, 1)`` (homogeneous: an affine matrix's
last row is ``0, 0, 1``; divide a homography's result by its third coordinate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .contract import Features
from .errors import ConfigError
from .matching import MatchConfig, match_pair

if TYPE_CHECKING:
    from .results import QueryResult

Level = Literal["none", "transform", "inliers"]
LEVELS: tuple[str, ...] = ("none", "transform", "inliers")
"""What a query's JSON carries per match: nothing more (no second verification), the fitted
transformation (the default), or that and the inlier correspondences."""


@dataclass(frozen=True, eq=False)
class Evidence:
    """One match's model and inliers, in the coordinates of the module's docstring."""

    model: str
    """``affine`` or ``homography`` (the matching settings' ``verification``)."""
    matrix: np.ndarray | None
    """float64 ``[3 x 3]``, query ``(x, y, 1)`` to stored ``(x, y, 1)``; ``None``: no model."""
    query_size: tuple[int, int]
    stored_size: tuple[int, int]
    """``(width, height)`` in pixels of the decoded images."""
    correspondences: np.ndarray
    """float64 ``[I x 4]``: query ``x, y`` and stored ``x, y`` of each inlier, in stored order."""

    @property
    def inliers(self) -> int:
        return int(self.correspondences.shape[0])

    def to_json(self, *, correspondences: bool) -> dict[str, Any]:
        """``{"transform": {...}}``, with ``"correspondences": [[qx, qy, sx, sy], ...]`` if asked."""
        matrix = None if self.matrix is None else np.round(self.matrix, 9).tolist()
        document: dict[str, Any] = {"transform": {
            "model": self.model, "matrix": matrix,
            "query_size": list(self.query_size), "stored_size": list(self.stored_size),
        }}
        if correspondences:  # to 0.01 px: a query's own locations carry float32 noise below that
            document["correspondences"] = np.round(self.correspondences, 2).tolist()
        return document


def of_pair(query: Features, stored: Features, config: MatchConfig) -> Evidence:
    """The evidence of one pair, as the fan-out verified it."""
    pair = match_pair(query, stored, config)
    keep = pair.inliers
    points = np.concatenate(
        [query.locations[pair.query_idx[keep]], stored.locations[pair.stored_idx[keep]]], axis=1
    ).astype(np.float64)
    return Evidence(config.verification, pair.matrix, query.image_size, stored.image_size, points)


def gather(
    fetch: Callable[[str], Features | None], query: Features, uris: Sequence[str], config: MatchConfig
) -> dict[str, Evidence]:
    """``{uri: evidence}`` for the stored images ``uris`` that ``fetch`` still finds."""
    found = {}
    for uri in uris:
        stored = fetch(uri)
        if stored is not None:
            found[uri] = of_pair(query, stored, config)
    return found


def attach(
    result: QueryResult, fetch: Callable[[str], Features | None], query: Features, config: MatchConfig,
    level: str,
) -> None:
    """Verify ``result``'s matches again and keep their evidence on it, for its page; its JSON
    carries as much as ``level`` says. The time it took is the ``evidence`` timing."""
    check(level)
    start = time.perf_counter()
    result.evidence = gather(fetch, query, [m.uri for m in result.matches], config)
    result.evidence_level = level
    result.timings_s["evidence"] = time.perf_counter() - start


def check(level: str) -> str:
    if level not in LEVELS:
        raise ConfigError(f"evidence: {level!r} is not one of {', '.join(LEVELS)}")
    return level
