"""Unit tests of :mod:`landmark.matching`: putative matching against a k-d tree, and partitions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from landmark.contract import Features
from landmark.matching import PRESETS, MatchConfig, match_partition, putative_matches
from landmark.reference import reference_inliers, reference_putatives
from landmark.verification import count_inliers

RULES = {
    "delf": PRESETS["delf"],
    "ratio": MatchConfig(rule="ratio", ratio=0.8),
    "mutual": PRESETS["aliked"],
}
"""One config per matching rule: DELF's distance rule, Lowe's ratio test, mutual nearest neighbours."""


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def descriptor_sets(nq: int, m: int, dim: int, seed: int, dtype=np.float64):
    """Random unit query rows, and stored rows of which half are noisy copies of query rows (noise
    spread so that distances straddle the 0.8 threshold and ratios straddle 0.8)."""
    rng = np.random.default_rng(seed)
    query = unit(rng.normal(size=(nq, dim)))
    stored = unit(rng.normal(size=(m, dim)))
    copies = rng.random(m) < 0.5
    source = rng.integers(0, nq, m)
    noise = rng.uniform(0.0, 1.5, m)[:, None] / np.sqrt(dim)
    stored[copies] = unit(query[source[copies]] + noise[copies] * rng.normal(size=(copies.sum(), dim)))
    return query.astype(dtype), stored.astype(dtype)


def boundary_gap(query: np.ndarray, stored: np.ndarray, config: MatchConfig) -> np.ndarray:
    """Per stored row, how far (float64) its nearest distance is from the rule's decision boundary."""
    d = np.sqrt(((stored[:, None, :].astype(np.float64) - query[None, :, :]) ** 2).sum(-1))
    d.sort(axis=1)
    if config.rule == "distance":
        return np.abs(d[:, 0] - config.max_distance)
    if config.rule == "mutual":
        # A mutual match may also flip where a query row has two near-equidistant stored rows.
        e = np.sort(d, axis=0)
        column_gap = np.abs(e[0] - e[1]) if len(e) > 1 else np.full(d.shape[1], np.inf)
        row_gap = np.abs(d[:, 0] - config.ratio * (d[:, 1] if d.shape[1] > 1 else np.inf))
        nearest = np.argsort(np.sqrt(((stored[:, None, :].astype(np.float64) - query[None]) ** 2).sum(-1)), axis=1)[:, 0]
        return np.minimum(row_gap, column_gap[nearest])
    second = d[:, 1] if d.shape[1] > 1 else np.full(len(d), np.inf)
    return np.abs(d[:, 0] - config.ratio * second)


def assert_same_matches(query, stored, config, tie_tolerance):
    fast_q, fast_s = putative_matches(query, stored, config)
    ref_q, ref_s = reference_putatives(query, stored, config)
    differ = np.setxor1d(fast_s, ref_s)
    gap = boundary_gap(query, stored, config)
    assert (gap[differ] <= tie_tolerance).all(), f"{differ.size} stored rows matched differently off a tie"
    common, fast_at, ref_at = np.intersect1d(fast_s, ref_s, return_indices=True)
    np.testing.assert_array_equal(fast_q[fast_at], ref_q[ref_at])
    assert fast_s.size > 20 and fast_s.size < len(stored)  # the data does exercise the rule
    return differ.size


@pytest.mark.parametrize("rule, dim", [("delf", 40), ("ratio", 128), ("ratio", 40), ("mutual", 128), ("mutual", 40)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_putatives_agree_with_kd_tree_in_float64(rule, dim, seed):
    query, stored = descriptor_sets(300, 400, dim, seed)
    # float64 leaves room for exact ties only; none occur in continuous random data.
    assert assert_same_matches(query, stored, RULES[rule], tie_tolerance=1e-9) == 0


@pytest.mark.parametrize("rule, dim", [("delf", 40), ("ratio", 128), ("mutual", 128)])
def test_putatives_agree_with_kd_tree_in_float32(rule, dim):
    # Production descriptors are float32: |a - b|^2 = 2 - 2 a.b rounds to ~1e-7, so rows within
    # ~1e-5 of the boundary may fall either way; nothing else may differ.
    query, stored = descriptor_sets(500, 800, dim, seed=7, dtype=np.float32)
    assert assert_same_matches(query, stored, RULES[rule], tie_tolerance=1e-5) <= 2


def test_mutual_matches_are_one_to_one_and_a_subset_of_the_ratio_rule():
    query, stored = descriptor_sets(300, 400, 64, seed=4)
    q_mutual, s_mutual = putative_matches(query, stored, RULES["mutual"])
    q_ratio, s_ratio = putative_matches(query, stored, MatchConfig(rule="ratio", ratio=RULES["mutual"].ratio))
    assert len(np.unique(q_mutual)) == len(q_mutual) > 20  # no query feature matched twice
    assert set(s_mutual) < set(s_ratio)
    np.testing.assert_array_equal(q_ratio[np.isin(s_ratio, s_mutual)], q_mutual)


def test_ratio_rule_with_one_query_descriptor_keeps_every_match():
    query, stored = descriptor_sets(1, 5, 16, seed=0)
    config = RULES["ratio"]
    q, s = putative_matches(query, stored, config)
    np.testing.assert_array_equal(s, np.arange(5))
    np.testing.assert_array_equal(q, np.zeros(5))
    np.testing.assert_array_equal(reference_putatives(query, stored, config)[1], s)


def random_features(n: int, seed: int, dim: int = 64) -> Features:
    rng = np.random.default_rng(seed)
    return Features(rng.uniform(0, 800, (n, 2)), unit(rng.normal(size=(n, dim))), (800, 800))


def view(query: Features, seed: int, shared: int, consistent: int, m: int = 250) -> Features:
    """A stored image of ``m`` features: ``shared`` of them have (slightly noisy) query descriptors,
    and the first ``consistent`` of those sit where an affine map puts their query location; the
    rest are unrelated."""
    rng = np.random.default_rng(seed)
    source = rng.choice(query.num_features, shared, replace=False)
    desc = unit(rng.normal(size=(m, query.descriptor_dim)))
    desc[:shared] = unit(query.descriptors[source] + 0.02 * rng.normal(size=(shared, query.descriptor_dim)))
    loc = rng.uniform(0, 800, (m, 2))
    moved = query.locations[source] @ np.array([[0.8, 0.1], [-0.1, 0.9]]).T + (40, 60)
    loc[:consistent] = moved[:consistent] + rng.normal(0, 1, (consistent, 2))
    return Features(np.clip(loc, 0, 799), desc, (800, 800))


def image_pair(seed: int) -> tuple[Features, Features]:
    query = random_features(200, seed)
    return query, view(query, seed + 1, shared=140, consistent=110)


@pytest.mark.parametrize("rule", ["delf", "ratio", "mutual"])
@pytest.mark.parametrize("min_inliers", [0, 8, 60])
def test_partition_equals_pairs(rule, min_inliers):
    config = dataclasses.replace(RULES[rule], min_inliers=min_inliers, ransac_trials=300, seed=3)
    query, matching = image_pair(0)
    stored = [
        matching,  # 140 putatives, 110 geometric inliers
        random_features(0, 2),
        view(query, 3, shared=40, consistent=25),  # below min_inliers=60: not verified there
        random_features(5, 3),
        view(query, 4, shared=10, consistent=0),  # putatives, no geometry
    ]
    result = match_partition(query, stored, config)
    assert result.shape == (5, 2) and result.dtype == np.int64
    for b, features in enumerate(stored):
        np.testing.assert_array_equal(result[b], match_partition(query, [features], config)[0])
        q_idx, s_idx = putative_matches(query.descriptors, features.descriptors, config)
        assert result[b, 1] == s_idx.size
        expected = 0
        if s_idx.size >= max(4 if config.verification == "homography" else 3, min_inliers):
            expected = count_inliers(query.locations[q_idx], features.locations[s_idx], config)
        assert result[b, 0] == expected
    # The planted matches, give or take a chance match that passes a looser ratio (mutual: 0.9).
    assert result[0, 0] == 110 and 140 <= result[0, 1] <= 142 and result[1].tolist() == [0, 0]
    assert 40 <= result[2, 1] <= 45 and 10 <= result[4, 1] <= 15 and result[4, 0] <= 5
    # Partitions in any order give the same per-image rows.
    order = [4, 2, 0, 3, 1]
    np.testing.assert_array_equal(match_partition(query, [stored[i] for i in order], config), result[order])


def test_partition_agrees_with_reference_on_a_clear_match():
    config = dataclasses.replace(RULES["ratio"], min_inliers=0, ransac_trials=300)
    query, stored = image_pair(5)
    fast = match_partition(query, [stored], config)[0]
    inliers, putatives = reference_inliers(query, stored, config, rng=0)
    assert fast[1] == putatives
    assert abs(fast[0] - inliers) <= 3


def test_empty_inputs():
    config = RULES["ratio"]
    query = random_features(50, 0)
    assert match_partition(query, [], config).shape == (0, 2)
    np.testing.assert_array_equal(match_partition(query, [random_features(0, 1)] * 3, config), np.zeros((3, 2)))
    np.testing.assert_array_equal(match_partition(random_features(0, 2), [query, query], config), np.zeros((2, 2)))
    for rule in RULES:
        q, s = putative_matches(np.zeros((0, 64)), query.descriptors, RULES[rule])
        assert q.size == s.size == 0
        q, s = putative_matches(query.descriptors, np.zeros((0, 64)), RULES[rule])
        assert q.size == s.size == 0
    assert reference_inliers(random_features(0, 2), query, config) == (0, 0)
    assert reference_inliers(query, random_features(0, 2), config) == (0, 0)
