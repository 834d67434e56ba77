from __future__ import annotations

import pytest

from landmark.evaluation import average_precision, precision_at_1


def test_average_precision_of_known_rankings() -> None:
    assert average_precision(["a", "b", "x"], {"a", "b"}) == 1.0
    assert average_precision(["x", "a", "y", "b"], {"a", "b"}) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert average_precision(["a"], {"a", "b"}) == 0.5  # b never retrieved
    assert average_precision([], {"a"}) == 0.0


def test_precision_at_1() -> None:
    assert precision_at_1(["a", "x"], {"a"}) == 1.0
    assert precision_at_1(["x", "a"], {"a"}) == 0.0
    assert precision_at_1([], {"a"}) == 0.0
