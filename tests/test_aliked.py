"""ALIKED through ONNX Runtime: equal to the PyTorch network, repeatable and right on planar scenes
with known homographies, and chosen by ``auto`` when DELF is not there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from landmark.errors import ConfigError, ImageError, ModelLoadError
from landmark.extractors import aliked, registry
from landmark.images import decode_image
from landmark.indexing import extract_bytes
from landmark.matching import PRESETS, putative_matches
from landmark.verification import ransac_homography

REFERENCE = Path(__file__).parent / "data" / "aliked-n16-reference.npz"


def test_onnx_output_equals_the_pytorch_reference_saved_by_the_export(shared_data: Path) -> None:
    """``tools/export_aliked.py`` ran the published network (PyTorch, torchvision's deformable
    convolution) on this image and saved its keypoints and descriptors."""
    reference = np.load(REFERENCE)
    name = str(reference["image"])
    image = decode_image((shared_data / name).read_bytes(), name, int(reference["max_image_side"]))
    extractor = registry.create("aliked", {"max_keypoints": int(reference["max_keypoints"])}, environ={})
    features = extractor.extract(image)
    assert features.image_size == (image.shape[1], image.shape[0])
    assert features.num_features == len(reference["keypoints"]) == 256
    # Matched by position: two maxima of equal score may be listed in either order.
    distance = np.linalg.norm(reference["keypoints"][:, None] - features.locations[None], axis=2)
    nearest = distance.argmin(axis=1)
    assert distance[np.arange(len(nearest)), nearest].max() < 1e-3
    np.testing.assert_allclose(features.descriptors[nearest], reference["descriptors"], atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)


def project(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    projected = np.c_[points, np.ones(len(points))] @ homography.T
    return projected[:, :2] / projected[:, 2:]


HOMOGRAPHY_PAIRS = [
    ("hpatches_v_churchill", "1.png", "2.png", "H_1_2"),
    ("hpatches_v_churchill", "1.png", "4.png", "H_1_4"),
    ("hpatches_v_wormhole", "1.png", "3.png", "H_1_3"),
    ("oxford_boat", "img1.png", "img2.png", "H1to2p"),
]


@pytest.mark.parametrize("scene, first, second, truth", HOMOGRAPHY_PAIRS)
def test_keypoints_repeat_and_verified_matches_follow_the_true_homography(
    shared_data: Path, scene: str, first: str, second: str, truth: str
) -> None:
    """Measured with the defaults (1024 keypoints, full resolution): 57-72% of the keypoints of
    image 1 that land inside image 2 have a keypoint of image 2 within 3 px, and 96-99% of the
    matches the ALIKED preset verifies lie within 3 px of where the true homography puts them."""
    folder = shared_data / "homography" / scene
    extractor = registry.create("aliked", {"max_image_side": 4096}, environ={})
    a = extractor.extract(decode_image((folder / first).read_bytes(), first, 4096))
    b = extractor.extract(decode_image((folder / second).read_bytes(), second, 4096))
    homography = np.loadtxt(folder / truth).reshape(3, 3)

    projected = project(homography, a.locations)
    width, height = b.image_size
    inside = (projected[:, 0] >= 0) & (projected[:, 1] >= 0) & (projected[:, 0] < width) & (projected[:, 1] < height)
    nearest = np.linalg.norm(projected[inside][:, None] - b.locations[None], axis=2).min(axis=1)
    assert np.mean(nearest < 3) >= 0.5

    config = PRESETS["aliked"]
    q_idx, s_idx = putative_matches(a.descriptors, b.descriptors, config)
    src, dst = a.locations[q_idx], b.locations[s_idx]
    inliers = ransac_homography(src, dst, threshold=config.ransac_threshold, trials=config.ransac_trials, seed=0)
    error = np.linalg.norm(project(homography, src) - dst, axis=1)
    assert inliers.sum() >= 100
    assert np.mean(error[inliers] < 3) >= 0.9


def test_a_featureless_image_has_no_keypoints() -> None:
    from tests.conftest import jpeg_bytes

    extractor = registry.create("aliked", {}, environ={})
    features = extractor.extract(np.full((64, 96, 3), 128, np.uint8))
    assert features.num_features == 0 and features.descriptors.shape == (0, 128)
    with pytest.raises(ImageError, match="no local features"):
        extract_bytes(extractor, jpeg_bytes(np.full((64, 96, 3), 128, np.uint8)), "file:///grey.jpg")


def test_variants_and_options(shared_data: Path) -> None:
    tiny = registry.create("aliked", {"variant": "aliked-t16", "max_keypoints": "50"}, environ={})
    photo = shared_data / "landmarks" / "sacre_coeur" / "lightglue_sacre_coeur1.jpg"
    image = decode_image(photo.read_bytes(), photo.name, 320)
    features = tiny.extract(image)
    assert features.descriptor_dim == 64 and 0 < features.num_features <= 50
    loose = registry.create("aliked", {"max_keypoints": "5000"}, environ={}).extract(image)
    strict = registry.create("aliked", {"max_keypoints": "5000", "detection_threshold": "0.5"}, environ={}).extract(image)
    assert 0 < strict.num_features < loose.num_features
    assert {tuple(p) for p in strict.locations} <= {tuple(p) for p in loose.locations}
    for options, message in [
        ({"max_keypoints": "0"}, "max_keypoints: must be at least 1, got 0"),
        ({"detection_threshold": "1.5"}, "detection_threshold: must be in [0, 1), got 1.5"),
        ({"variant": "aliked-n32"}, "variant: 'aliked-n32' is not one of aliked-n16, aliked-n16rot, aliked-t16"),
    ]:
        with pytest.raises(ConfigError) as error:
            registry.create("aliked", options, environ={})
        assert str(error.value) == message


def test_auto_falls_back_to_rootsift_when_aliked_cannot_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(aliked, "_SESSIONS", {})
    monkeypatch.setattr(aliked, "model_paths", lambda variant: (tmp_path / "a.onnx", tmp_path / "b.onnx"))
    with pytest.raises(ModelLoadError, match=r"a\.onnx is missing from the installed package"):
        registry.create("aliked", {}, environ={})
    said: list[str] = []
    chosen = registry.create("auto", {"model": "/nonexistent"}, environ={}, announce=said.append)
    assert chosen.name == "rootsift"
    assert "delf unavailable: cannot load the DELF model" in said[0]
    assert "aliked unavailable: cannot run ALIKED aliked-n16:" in said[0]
