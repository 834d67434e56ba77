"""RootSIFT: OpenCV SIFT with the Hellinger mapping (Arandjelovic & Zisserman, CVPR 2012).

Needs no weights, so it runs everywhere; it is what ``auto`` falls back to offline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..config import setting
from ..contract import Features


@dataclass(frozen=True)
class RootSiftConfig:
    """RootSIFT extractor options."""

    max_features: int = setting(1000, help="keep at most this many keypoints, strongest first")
    max_image_side: int = setting(1024, help="downscale images so the longer side is at most this (px)")
    contrast_threshold: float = setting(0.04, help="SIFT contrast threshold; lower finds more keypoints")

    def validate(self) -> None:
        from ..errors import ConfigError

        if self.max_features < 1:
            raise ConfigError(f"max_features: must be at least 1, got {self.max_features}")
        if self.max_image_side < 32:
            raise ConfigError(f"max_image_side: must be at least 32, got {self.max_image_side}")


class RootSiftExtractor:
    name: ClassVar[str] = "rootsift"
    matching_preset: ClassVar[str] = "rootsift"
    descriptor_encoding: ClassVar[str] = "float16"

    def __init__(self, config: RootSiftConfig) -> None:
        self.config = config
        # OpenCV does not promise that one detector may serve several threads: one per thread.
        self._local = threading.local()

    def _sift(self):  # noqa: ANN202 - cv2.SIFT
        import cv2

        if not hasattr(self._local, "sift"):
            self._local.sift = cv2.SIFT_create(
                nfeatures=self.config.max_features, contrastThreshold=self.config.contrast_threshold
            )
        return self._local.sift

    def extract(self, image: np.ndarray) -> Features:
        import cv2

        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        keypoints, descriptors = self._sift().detectAndCompute(gray, None)
        height, width = gray.shape
        if descriptors is None or not keypoints:
            return Features(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32), (width, height))
        # SIFT may return a few more than nfeatures (ties in response); the cap is a promise.
        keypoints, descriptors = keypoints[: self.config.max_features], descriptors[: self.config.max_features]
        locations = np.array([kp.pt for kp in keypoints], dtype=np.float32)
        return Features(locations, root_sift(descriptors), (width, height))


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """SIFT ``[N x 128]`` -> RootSIFT: L1-normalise, then square root. Rows come out unit-L2."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    l1 = np.maximum(descriptors.sum(axis=1, keepdims=True), np.float32(1e-12))
    return np.sqrt(descriptors / l1)
