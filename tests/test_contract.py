"""The feature contract and its byte encodings."""

from __future__ import annotations

import numpy as np
import pytest

from landmark.contract import (
    Features,
    decode_descriptors,
    decode_locations,
    encode_descriptors,
    encode_locations,
    l2_normalise,
)


def test_features_take_contract_dtypes_and_shapes() -> None:
    features = Features(np.array([[1, 2], [3, 4]]), np.ones((2, 5)), (640.0, 480.0))
    assert features.locations.dtype == np.float32 and features.descriptors.dtype == np.float32
    assert features.image_size == (640, 480)
    assert (features.num_features, features.descriptor_dim) == (2, 5)


def test_features_refuse_mismatched_counts() -> None:
    with pytest.raises(ValueError) as error:
        Features(np.zeros((3, 2)), np.zeros((2, 8)), (10, 10))
    assert str(error.value) == "features need descriptors [N x D] for locations [N x 2]; got (2, 8) for (3, 2)"


def test_locations_round_trip_to_a_quarter_pixel() -> None:
    rng = np.random.default_rng(0)
    locations = (rng.random((500, 2)) * [4000, 3000]).astype(np.float32)
    data = encode_locations(locations)
    assert len(data) == 500 * 2 * 2
    assert np.abs(decode_locations(data) - locations).max() <= 0.125 + 1e-4


def test_locations_outside_the_encodable_range_are_refused() -> None:
    with pytest.raises(ValueError, match=r"locations must lie in \[0, 16383\] pixels"):
        encode_locations(np.array([[20000.0, 1.0]]))
    # Half a pixel outside (sub-pixel refinement at the border) is clipped, not refused.
    assert decode_locations(encode_locations(np.array([[-0.4, 2.0]])))[0, 0] == 0.0


def test_descriptors_round_trip_as_float16() -> None:
    rng = np.random.default_rng(1)
    descriptors = l2_normalise(rng.normal(size=(300, 40)))
    data = encode_descriptors(descriptors)
    assert len(data) == 300 * 40 * 2
    decoded = decode_descriptors(data, 40)
    assert decoded.dtype == np.float32 and decoded.shape == (300, 40)
    # Dot products of unit vectors move by far less than the gaps matching thresholds care about.
    assert np.abs(decoded @ decoded.T - descriptors @ descriptors.T).max() < 2e-3


def test_descriptors_round_trip_as_int8_in_half_the_bytes() -> None:
    rng = np.random.default_rng(2)
    descriptors = l2_normalise(rng.normal(size=(300, 128)))
    data = encode_descriptors(descriptors, "int8")
    assert len(data) == 300 * 128
    decoded = decode_descriptors(data, 128, "int8")
    assert decoded.dtype == np.float32 and decoded.shape == (300, 128)
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=1e-6)
    assert np.abs(decoded - descriptors).max() < 1 / 127  # half a step, and the re-normalising
    moved = np.abs(decoded @ decoded.T - descriptors @ descriptors.T)
    assert moved.mean() < 3e-3 and moved.max() < 0.02
    # The extremes of a unit vector's components fit: nothing is clipped.
    corners = np.array([[1.0] + [0.0] * 127, [-1.0] + [0.0] * 127], np.float32)
    np.testing.assert_array_equal(decode_descriptors(encode_descriptors(corners, "int8"), 128, "int8"), corners)
    with pytest.raises(ValueError, match="unknown descriptor encoding 'int4'"):
        encode_descriptors(descriptors, "int4")


def test_l2_normalise_makes_unit_rows_and_keeps_zero_rows() -> None:
    out = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
