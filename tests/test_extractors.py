"""The extractor registry and the RootSIFT extractor."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import LANDMARKS
from landmark.errors import ConfigError, UnknownExtractorError
from landmark.extractors import create, extractor_names, make_config
from landmark.extractors.rootsift import RootSiftConfig, root_sift
from landmark.images import decode_image


def photo(name: str = "sacre_coeur/03903474_1471484089.jpg", max_side: int = 1024) -> np.ndarray:
    return decode_image((LANDMARKS / name).read_bytes(), name, max_side)


def test_names_include_auto_and_every_plugin() -> None:
    assert extractor_names() == ["auto", "aliked", "delf", "rootsift"]


def test_unknown_name_lists_the_valid_names() -> None:
    with pytest.raises(UnknownExtractorError) as error:
        create("orb")
    assert str(error.value) == "unknown extractor 'orb'; valid names: auto, aliked, delf, rootsift"


def test_unknown_option_is_an_error_even_for_auto() -> None:
    with pytest.raises(ConfigError) as error:
        create("rootsift", {"max_featurs": "5"})
    assert str(error.value).startswith("unknown option 'max_featurs' for RootSiftConfig; valid options: ")
    with pytest.raises(ConfigError, match="unknown option 'max_featurs' for extractor auto"):
        create("auto", {"max_featurs": "5"})


def test_typed_config_with_named_defaults() -> None:
    config = make_config("rootsift", {"max_features": "250"}, environ={})
    assert config == RootSiftConfig(max_features=250)
    with pytest.raises(ConfigError) as error:
        make_config("rootsift", {"max_features": "0"}, environ={})
    assert str(error.value) == "max_features: must be at least 1, got 0"


def test_rootsift_follows_the_feature_contract() -> None:
    image = photo()
    extractor = create("rootsift", {"max_features": "500"})
    features = extractor.extract(image)
    height, width = image.shape[:2]
    assert features.image_size == (width, height)
    assert 100 < features.num_features <= 500
    assert features.descriptors.shape == (features.num_features, 128)
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    assert (features.descriptors >= 0).all()
    x, y = features.locations[:, 0], features.locations[:, 1]
    assert x.min() >= -1 and x.max() <= width and y.min() >= -1 and y.max() <= height
    # (x, y) order: this photo is wider than tall, so some x exceed every possible y.
    assert width > height and x.max() > height


def test_rootsift_is_deterministic_and_follows_the_content() -> None:
    image = photo()
    extractor = create("rootsift")
    first, second = extractor.extract(image), extractor.extract(image)
    np.testing.assert_array_equal(first.locations, second.locations)
    np.testing.assert_array_equal(first.descriptors, second.descriptors)
    # Mirror the image: most keypoints reappear at the mirrored x and the same y.
    from scipy.spatial import cKDTree

    mirrored = extractor.extract(np.ascontiguousarray(image[:, ::-1])).locations
    width = image.shape[1]
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    distances, _ = cKDTree(mirrored).query(first.locations)
    assert np.mean(distances < 1.5) > 0.8


def test_blank_image_has_no_features() -> None:
    features = create("rootsift").extract(np.full((200, 300, 3), 128, np.uint8))
    assert features.num_features == 0 and features.descriptors.shape == (0, 128)


def test_root_sift_is_the_hellinger_map() -> None:
    sift = np.array([[1.0, 3.0, 0.0, 12.0]], np.float32)
    np.testing.assert_allclose(root_sift(sift), np.sqrt(sift / 16.0), rtol=1e-6)
