"""DELF extractor: loading through TF-Hub, the signature call, the (y, x) -> (x, y) swap, errors.

The real model cannot be downloaded here, so a small SavedModel with DELF's exact signature
(tests/delf_model.py) stands in for it.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from delf_model import GRID_STEP, build_delf_savedmodel
from landmark import config as cfg
from landmark.errors import ConfigError, ModelLoadError
from landmark.extractors import create
from landmark.extractors.delf import DelfConfig, DelfExtractor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHOTO = DATA / "landmarks" / "sacre_coeur" / "03903474_1471484089.jpg"  # landscape, 1080 x 695

ADVICE = (
    ". Download it where the internet is reachable "
    "(https://tfhub.dev/google/delf/1?tf-hub-format=compressed), unpack it into a directory "
    "and set LANDMARK_DELF_MODEL=/path/to/delf (or the extractor option model=/path/to/delf)."
)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return build_delf_savedmodel(tmp_path_factory.mktemp("delf") / "model")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    with Image.open(PHOTO) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        image.thumbnail((1024, 1024))  # what the caller does for max_image_side
        return np.asarray(image)


@pytest.fixture(scope="module")
def extractor(saved_model) -> DelfExtractor:
    return create("delf", {"model": str(saved_model)}, environ={})


def test_extracts_contract_features_from_a_photo(extractor, photo):
    height, width = photo.shape[:2]
    assert width > height  # a landscape photo, so x and y ranges tell the columns apart

    features = extractor.extract(photo)

    assert isinstance(extractor, DelfExtractor)
    assert (extractor.name, extractor.matching_preset) == ("delf", "delf")
    assert features.image_size == (width, height)
    assert 0 < features.num_features <= extractor.config.max_feature_num
    assert features.locations.dtype == np.float32 and features.locations.shape == (features.num_features, 2)
    x, y = features.locations[:, 0], features.locations[:, 1]
    assert (x >= 0).all() and (x < width).all() and (y >= 0).all() and (y < height).all()
    assert x.max() > height  # only possible when column 0 is x
    assert features.descriptors.dtype == np.float32 and features.descriptor_dim == 40
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)

    again = extractor.extract(photo)
    np.testing.assert_array_equal(again.locations, features.locations)
    np.testing.assert_array_equal(again.descriptors, features.descriptors)


def test_max_feature_num_caps_the_features(saved_model, photo):
    few = create("delf", {"model": str(saved_model), "max_feature_num": 25}, environ={})
    assert few.extract(photo).num_features == 25


def test_swaps_the_signatures_yx_locations_to_xy(saved_model, extractor, photo):
    import tensorflow as tf
    import tensorflow_hub as hub

    raw = hub.load(str(saved_model)).signatures["default"](
        image=tf.constant(photo.astype(np.float32) / 255.0),
        score_threshold=tf.constant(100.0, tf.float32),
        image_scales=tf.constant([0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0], tf.float32),
        max_feature_num=tf.constant(1000, tf.int32),
    )
    raw_yx = raw["locations"].numpy()
    assert raw_yx[:, 0].max() < photo.shape[0] < raw_yx[:, 1].max()  # the model's column 0 is y

    features = extractor.extract(photo)
    np.testing.assert_array_equal(features.locations, raw_yx[:, ::-1])
    np.testing.assert_allclose(features.descriptors, raw["descriptors"].numpy(), atol=1e-6)


def test_translated_image_matches_at_shifted_locations(extractor, photo):
    dy, dx = 2 * GRID_STEP, 3 * GRID_STEP
    first = extractor.extract(photo[: 600, : 900])
    second = extractor.extract(photo[dy : dy + 600, dx : dx + 900])

    where = {tuple(loc): i for i, loc in enumerate(first.locations.tolist())}
    same = [
        (i, where[(x + dx, y + dy)])
        for i, (x, y) in enumerate(second.locations.tolist())
        if (x + dx, y + dy) in where
    ]
    assert len(same) > 200
    dots = np.einsum("ij,ij->i", second.descriptors[[i for i, _ in same]], first.descriptors[[j for _, j in same]])
    np.testing.assert_allclose(dots, 1.0, atol=1e-5)


def test_model_is_loaded_once_per_handle(saved_model, extractor):
    other = create("delf", {"model": str(saved_model), "max_feature_num": 10}, environ={})
    assert other._signature is extractor._signature


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "missing", "no such directory"),
        (lambda tmp: (tmp / "file.pb").write_bytes(b"x") and tmp / "file.pb", "not a directory"),
        (
            lambda tmp: (tmp / "empty").mkdir() or tmp / "empty",
            "the directory holds no saved_model.pb, so it is not a SavedModel",
        ),
    ],
    ids=["missing", "file", "not-a-savedmodel"],
)
def test_bad_local_directory_says_why_and_how_to_fix(tmp_path, make, reason):
    handle = str(make(tmp_path))
    with pytest.raises(ModelLoadError) as caught:
        create("delf", {"model": handle}, environ={})
    assert str(caught.value) == (
        f"cannot load the DELF model from '{handle}': {reason}. Download it where the internet is "
        "reachable (https://tfhub.dev/google/delf/1?tf-hub-format=compressed), unpack it into a "
        "directory and set LANDMARK_DELF_MODEL=/path/to/delf (or the extractor option "
        "model=/path/to/delf)."
    )


def test_unreachable_url_says_why_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "hub-cache"))
    with socket.socket() as probe:  # a loopback port nobody listens on: refused at once, offline or not
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = f"http://127.0.0.1:{port}/google/delf/1"

    with pytest.raises(ModelLoadError) as caught:
        create("delf", {"model": handle}, environ={})

    reason = " ".join(str(caught.value.__cause__).split()).rstrip(".")
    assert "refused" in reason.lower()
    assert str(caught.value) == f"cannot load the DELF model from '{handle}': {reason}{ADVICE}"


def test_auto_falls_back_to_aliked_when_delf_cannot_load():
    said: list[str] = []
    chosen = create("auto", {"model": "/nonexistent"}, environ={}, announce=said.append)
    assert chosen.name == "aliked"
    assert said == [
        "extractor auto: chose aliked (delf unavailable: cannot load the DELF model from "
        f"'/nonexistent': no such directory{ADVICE})"
    ]


def test_auto_chooses_delf_when_the_model_loads(saved_model):
    said: list[str] = []
    chosen = create("auto", {"model": str(saved_model)}, environ={}, announce=said.append)
    assert chosen.name == "delf"
    assert said == [f"extractor auto: chose delf (model {saved_model})"]


def test_config_defaults_environment_and_arguments():
    assert cfg.resolve(DelfConfig, None, {}) == DelfConfig()
    assert DelfConfig().model == "https://tfhub.dev/google/delf/1"
    from_env = cfg.resolve(DelfConfig, None, {"LANDMARK_DELF_MODEL": "/models/delf"})
    assert from_env.model == "/models/delf"
    from_arg = cfg.resolve(DelfConfig, {"model": "/arg/delf"}, {"LANDMARK_DELF_MODEL": "/models/delf"})
    assert from_arg.model == "/arg/delf"
    assert cfg.resolve(DelfConfig, {"image_scales": "0.5, 1"}, {}).image_scales == (0.5, 1.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_feature_num": 0}, "max_feature_num: must be at least 1, got 0"),
        ({"image_scales": ()}, "image_scales: must name at least one scale, got none"),
        ({"image_scales": "1,0"}, "image_scales: every scale must be positive, got [1.0, 0.0]"),
        ({"image_scales": (0.5, -1.0)}, "image_scales: every scale must be positive, got [0.5, -1.0]"),
        ({"max_image_side": 16}, "max_image_side: must be at least 32, got 16"),
        ({"model": " "}, "model: must be a TF-Hub handle or a local directory, got ' '"),
    ],
)
def test_config_rejects_nonsense(options, message):
    with pytest.raises(ConfigError) as caught:
        cfg.resolve(DelfConfig, options, {})
    assert str(caught.value) == message
