"""Unit tests of a match's evidence: the fitted model and inliers of one pair, as the fan-out counts them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from landmark.evidence import gather, of_pair
from landmark.matching import match_pair, match_partition
from landmark.results import QueryResult
from landmark.search import Candidate
from landmark.verification import affine_model, homography_model, verify
from test_matching import RULES, image_pair, random_features, view

PLANTED = np.array([[0.8, 0.1, 40.0], [-0.1, 0.9, 60.0], [0.0, 0.0, 1.0]])
"""The affine map :func:`test_matching.view` puts its consistent features by (query to stored)."""


def mapped(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    out = np.column_stack([points, np.ones(len(points))]) @ matrix.T
    return out[:, :2] / out[:, 2:]


def test_the_affine_model_is_the_map_its_inliers_agree_on() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 500, (80, 2))
    dst = mapped(PLANTED, src) + rng.normal(0, 0.5, src.shape)
    dst[60:] = rng.uniform(0, 500, (20, 2))  # outliers
    matrix, mask = affine_model(src, dst, threshold=5.0, trials=500, seed=0)
    assert mask[:60].all() and mask.sum() <= 61
    np.testing.assert_allclose(matrix[2], [0, 0, 1])
    np.testing.assert_allclose(matrix[:, :2], PLANTED[:, :2], atol=0.02)
    np.testing.assert_allclose(matrix[:2, 2], PLANTED[:2, 2], atol=3.0)
    # The mask is exactly the points the matrix maps within the threshold.
    residuals = np.linalg.norm(mapped(matrix, src) - dst, axis=1)
    np.testing.assert_array_equal(mask, residuals < 5.0)


def test_the_homography_model_maps_its_inliers() -> None:
    rng = np.random.default_rng(1)
    truth = np.array([[0.9, 0.05, 30.0], [-0.04, 1.1, 12.0], [2e-4, -1e-4, 1.0]])
    src = rng.uniform(0, 600, (60, 2))
    dst = mapped(truth, src)
    dst[50:] = rng.uniform(0, 600, (10, 2))
    matrix, mask = homography_model(src, dst, threshold=3.0, trials=1000, seed=0)
    assert mask[:50].all() and mask.sum() <= 51
    np.testing.assert_allclose(mapped(matrix, src[:50]), dst[:50], atol=0.5)


def test_no_model_without_enough_points() -> None:
    matrix, mask = affine_model(np.zeros((2, 2)), np.zeros((2, 2)), threshold=5.0, trials=10, seed=0)
    assert matrix is None and mask.tolist() == [False, False]
    matrix, mask = homography_model(np.zeros((3, 2)), np.ones((3, 2)), threshold=5.0, trials=10, seed=0)
    assert matrix is None and not mask.any()


@pytest.mark.parametrize("rule", ["delf", "ratio", "mutual"])
@pytest.mark.parametrize("verification", ["affine", "homography"])
def test_a_pair_verified_alone_counts_what_its_partition_counted(rule: str, verification: str) -> None:
    config = dataclasses.replace(RULES[rule], verification=verification, ransac_trials=300, seed=3, min_inliers=8)
    query, _ = image_pair(0)
    stored = [view(query, 1, shared=140, consistent=110), random_features(250, 2),
              view(query, 3, shared=40, consistent=25), view(query, 4, shared=2, consistent=2)]
    counts = match_partition(query, stored, config)
    for features, (inliers, putatives) in zip(stored, counts):
        pair = match_pair(query, features, config)
        assert (int(pair.inliers.sum()), len(pair.stored_idx)) == (inliers, putatives)
        assert (pair.matrix is None) == (inliers == 0)
    assert counts[0, 0] >= 100 and counts[3, 1] < 8 and counts[3, 0] == 0  # under min_inliers: not verified


def test_evidence_holds_the_inliers_in_query_then_stored_coordinates() -> None:
    config = dataclasses.replace(RULES["mutual"], ransac_trials=300)
    query, stored = image_pair(0)
    found = of_pair(query, stored, config)
    pair = match_pair(query, stored, config)
    assert found.inliers == pair.inliers.sum() >= 100 and found.model == "affine"
    assert (found.query_size, found.stored_size) == ((800, 800), (800, 800))
    q, s = found.correspondences[:, :2], found.correspondences[:, 2:]
    np.testing.assert_array_equal(q, query.locations[pair.query_idx[pair.inliers]])
    np.testing.assert_array_equal(s, stored.locations[pair.stored_idx[pair.inliers]])
    assert (np.linalg.norm(mapped(found.matrix, q) - s, axis=1) < config.ransac_threshold).all()


def test_gather_leaves_out_what_the_store_no_longer_has() -> None:
    config = RULES["mutual"]
    query, stored = image_pair(0)
    found = gather({"a": stored}.get, query, ["a", "gone"], config)
    assert list(found) == ["a"]


def test_the_json_gives_the_transform_and_on_request_the_correspondences() -> None:
    config = RULES["mutual"]
    query, stored = image_pair(0)
    result = QueryResult(
        query="file:///q.jpg", store="s", extractor={}, matching={}, top_k=2,
        matches=[Candidate("file:///a.jpg", 110, 140), Candidate("file:///gone.jpg", 9, 20)],
        counts={}, timings_s={}, added_to_store=False,
    )
    result.evidence = {"file:///a.jpg": of_pair(query, stored, config)}
    assert "transform" not in result.to_json()["matches"][0]  # level none: nothing verified again
    result.evidence_level = "transform"
    first, gone = result.to_json()["matches"]
    transform = first["transform"]
    assert transform["model"] == "affine" and transform["query_size"] == [800, 800]
    assert len(transform["matrix"]) == 3 and transform["matrix"][2] == [0, 0, 1]
    assert "correspondences" not in first and gone["transform"] is None
    result.evidence_level = "inliers"
    rows = result.to_json()["matches"][0]["correspondences"]
    assert len(rows) == result.evidence["file:///a.jpg"].inliers and len(rows[0]) == 4
