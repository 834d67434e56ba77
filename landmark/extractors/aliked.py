"""ALIKED: learned keypoints and 128-D descriptors (Zhao et al., IEEE TIM 2023), through ONNX Runtime.

The network ships with the package as two ONNX graphs per variant (``aliked_models/``, exported
and checked against the published PyTorch network by ``tools/export_aliked.py``; weights
BSD-3-Clause, licence beside them), so it runs offline with no download and no PyTorch:

1. ``<variant>.dense.onnx``: the image -> a keypoint score map and the feature pyramid;
2. :func:`landmark.extractors.keypoints.detect` (numpy): the strongest local maxima, refined
   to sub-pixel positions;
3. ``<variant>.descriptors.onnx``: the pyramid and the keypoints -> unit-length descriptors
   (``D`` = 128, 64 for ``aliked-t16``).

ONNX Runtime runs on the CPU, or on CUDA where ``onnxruntime-gpu`` provides it. One session
per graph is shared by every thread of a process; each call runs on one core, so the indexer's
threads, not ONNX Runtime's, spread the work over the cores.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ..config import setting
from ..contract import Features
from ..errors import ConfigError, ModelLoadError
from .keypoints import detect

MODELS = "aliked_models"
"""Package folder of the ONNX graphs (and their licence)."""

PYRAMID = ("level1", "level2", "level3", "level4")
"""The dense graph's outputs after ``scores``, which the descriptor graph takes as they are."""

DIMS = {"aliked-n16": 128, "aliked-n16rot": 128, "aliked-t16": 64}


@dataclass(frozen=True)
class AlikedConfig:
    """ALIKED extractor options."""

    variant: Literal["aliked-n16", "aliked-n16rot", "aliked-t16"] = setting(
        "aliked-n16",
        help="network variant: aliked-n16 (128-D), aliked-n16rot (trained with rotations) or aliked-t16 (64-D, faster)",
    )
    max_keypoints: int = setting(1024, help="keep at most this many keypoints, strongest first")
    max_image_side: int = setting(1024, help="downscale images so the longer side is at most this (px)")
    detection_threshold: float = setting(
        0.01, help="keep keypoints whose score (0 to 1) is above this; flat, featureless areas score below 0.01"
    )

    def validate(self) -> None:
        if self.max_keypoints < 1:
            raise ConfigError(f"max_keypoints: must be at least 1, got {self.max_keypoints}")
        if self.max_image_side < 32:
            raise ConfigError(f"max_image_side: must be at least 32, got {self.max_image_side}")
        if not 0 <= self.detection_threshold < 1:
            raise ConfigError(f"detection_threshold: must be in [0, 1), got {self.detection_threshold}")


class AlikedExtractor:
    name: ClassVar[str] = "aliked"
    matching_preset: ClassVar[str] = "aliked"
    descriptor_encoding: ClassVar[str] = "int8"

    def __init__(self, config: AlikedConfig) -> None:
        self.config = config
        # Loaded here, not on first extract: `auto` needs to know now whether ALIKED can run.
        self._dense, self._descriptors = load_sessions(config.variant)

    def extract(self, image: np.ndarray) -> Features:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"ALIKED needs an RGB image [H x W x 3]; got shape {tuple(image.shape)}")
        height, width = image.shape[:2]
        pixels = np.ascontiguousarray((image.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None])
        scores, *pyramid = self._dense.run(None, {"image": pixels})
        keypoints, _ = detect(
            scores[0, 0], max_keypoints=self.config.max_keypoints, threshold=self.config.detection_threshold
        )
        if len(keypoints) == 0:
            return Features(keypoints, np.zeros((0, DIMS[self.config.variant]), np.float32), (width, height))
        (descriptors,) = self._descriptors.run(None, {"keypoints": keypoints, **dict(zip(PYRAMID, pyramid))})
        return Features(keypoints, descriptors, (width, height))


_SESSIONS: dict[str, tuple[Any, Any]] = {}
_LOAD_LOCK = threading.Lock()


def model_paths(variant: str) -> tuple[Path, Path]:
    """The dense and descriptor graphs of ``variant`` inside the installed package."""
    folder = Path(str(resources.files(__package__) / MODELS))
    return folder / f"{variant}.dense.onnx", folder / f"{variant}.descriptors.onnx"


def load_sessions(variant: str) -> tuple[Any, Any]:
    """ONNX Runtime sessions of ``variant``'s two graphs, made once per process;
    :class:`ModelLoadError` when they cannot be (no onnxruntime, files missing)."""
    with _LOAD_LOCK:
        if variant not in _SESSIONS:
            try:
                import onnxruntime as ort
            except ImportError as error:
                raise ModelLoadError(f"cannot run ALIKED: onnxruntime is not installed ({error})") from None
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
            sessions = []
            for path in model_paths(variant):
                if not path.is_file():
                    raise ModelLoadError(f"cannot run ALIKED {variant}: {path} is missing from the installed package")
                try:
                    sessions.append(ort.InferenceSession(str(path), options, providers=providers))
                except Exception as error:  # a corrupt or incompatible graph: "no ALIKED here"
                    raise ModelLoadError(f"cannot load ALIKED {variant} from {path}: {error}") from error
            _SESSIONS[variant] = (sessions[0], sessions[1])
        return _SESSIONS[variant]
