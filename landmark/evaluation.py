"""Retrieval quality of a ranking: average precision and precision at 1. Pure functions."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def average_precision(ranked: Sequence[str], relevant: Collection[str]) -> float:
    """Mean over the relevant items of the precision at each one's rank.

    A relevant item missing from ``ranked`` (dropped, or never retrieved) contributes 0, so a
    ranking that finds nothing relevant scores 0. With no relevant items at all, AP is 1.
    """
    relevant = set(relevant)
    if not relevant:
        return 1.0
    hits = 0
    total = 0.0
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            hits += 1
            total += hits / position
    return total / len(relevant)


def precision_at_1(ranked: Sequence[str], relevant: Collection[str]) -> float:
    return 1.0 if ranked and ranked[0] in set(relevant) else 0.0
