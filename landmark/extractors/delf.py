"""DELF: attentive deep local features (Noh et al., ICCV 2017), through its TF-Hub SavedModel.

The model's ``default`` signature, called with keyword arguments:

inputs
  - ``image``            float32 ``[H, W, 3]``, RGB scaled to ``[0, 1]`` (uint8 / 255).
  - ``score_threshold``  float32 scalar; keep features whose attention score is at least this.
  - ``image_scales``     float32 ``[S]``; the image pyramid, as factors of the input size.
  - ``max_feature_num``  int32 scalar; keep at most this many features, strongest first.

outputs (a dict; only the first two are used here)
  - ``locations``    float32 ``[N, 2]``, ``(y, x)`` in pixels of the input image.
  - ``descriptors``  float32 ``[N, 40]`` (the 1024-d DELF features, PCA-reduced to 40).
  - ``scales``, ``attention``  float32 ``[N]``.

The contract (:mod:`landmark.contract`) wants ``(x, y)``, so :meth:`DelfExtractor.extract`
swaps the two location columns; it L2-normalises the descriptors too, so that any SavedModel
with this signature, not only Google's, yields contract-conforming features.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from ..config import setting
from ..contract import Features, l2_normalise
from ..errors import ConfigError, ModelLoadError

DEFAULT_MODEL = "https://tfhub.dev/google/delf/1"
DOWNLOAD_URL = "https://tfhub.dev/google/delf/1?tf-hub-format=compressed"
MODEL_ENV = "LANDMARK_DELF_MODEL"
DESCRIPTOR_DIM = 40


@dataclass(frozen=True)
class DelfConfig:
    """DELF extractor options."""

    model: str = setting(
        DEFAULT_MODEL,
        env=MODEL_ENV,
        help="TF-Hub handle or URL of the DELF model, or a local SavedModel directory",
    )
    max_image_side: int = setting(1024, help="downscale images so the longer side is at most this (px)")
    score_threshold: float = setting(100.0, help="keep features whose attention score is at least this")
    image_scales: tuple[float, ...] = setting(
        (0.25, 0.3536, 0.5, 0.7071, 1.0, 1.4142, 2.0),
        help="image pyramid scales, comma-separated factors of the image size",
    )
    max_feature_num: int = setting(1000, help="keep at most this many features, strongest first")

    def validate(self) -> None:
        if not self.model.strip():
            raise ConfigError(f"model: must be a TF-Hub handle or a local directory, got {self.model!r}")
        if self.max_image_side < 32:
            raise ConfigError(f"max_image_side: must be at least 32, got {self.max_image_side}")
        if not self.image_scales:
            raise ConfigError("image_scales: must name at least one scale, got none")
        if any(not scale > 0 for scale in self.image_scales):  # `not >` also rejects NaN
            raise ConfigError(f"image_scales: every scale must be positive, got {list(self.image_scales)}")
        if self.max_feature_num < 1:
            raise ConfigError(f"max_feature_num: must be at least 1, got {self.max_feature_num}")


class DelfExtractor:
    name: ClassVar[str] = "delf"
    matching_preset: ClassVar[str] = "delf"
    descriptor_encoding: ClassVar[str] = "float16"

    def __init__(self, config: DelfConfig) -> None:
        self.config = config
        # Loaded here, not on first extract: `auto` needs a failure now to fall back to RootSIFT.
        self._signature = load_signature(config.model)

    def extract(self, image: np.ndarray) -> Features:
        import tensorflow as tf

        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"DELF needs an RGB image [H x W x 3]; got shape {tuple(image.shape)}")
        height, width = image.shape[:2]
        outputs = self._signature(
            image=tf.constant(image.astype(np.float32) / np.float32(255.0)),
            score_threshold=tf.constant(self.config.score_threshold, tf.float32),
            image_scales=tf.constant(list(self.config.image_scales), tf.float32),
            max_feature_num=tf.constant(self.config.max_feature_num, tf.int32),
        )
        locations_yx = np.asarray(outputs["locations"], dtype=np.float32).reshape(-1, 2)
        descriptors = np.asarray(outputs["descriptors"], dtype=np.float32).reshape(len(locations_yx), -1)
        return Features(locations_yx[:, ::-1], l2_normalise(descriptors), (width, height))


_SIGNATURES: dict[str, Any] = {}
"""Loaded ``default`` signatures by handle: a process loads each model once."""
_LOAD_LOCK = threading.Lock()


def load_signature(handle: str) -> Any:
    """The ``default`` signature of the DELF model at ``handle``; :class:`ModelLoadError` if it cannot load."""
    with _LOAD_LOCK:  # threads of one worker share the load instead of each doing it
        if handle not in _SIGNATURES:
            try:
                _SIGNATURES[handle] = _load(handle)
            except Exception as error:  # any failure, whatever its type, means "no DELF here"
                raise ModelLoadError(load_error_message(handle, _one_line(error))) from error
        return _SIGNATURES[handle]


def load_error_message(handle: str, reason: str) -> str:
    return (
        f"cannot load the DELF model from '{handle}': {reason}. Download it where the internet is "
        f"reachable ({DOWNLOAD_URL}), unpack it into a directory and set {MODEL_ENV}=/path/to/delf "
        f"(or the extractor option model=/path/to/delf)."
    )


class _BadModelDirectory(Exception):
    pass


def _load(handle: str) -> Any:
    target = handle
    if not _is_url(handle):
        # Checked before TF-Hub sees it: hub would take an unknown local path for a hub handle
        # and report something unrelated.
        target = os.path.expanduser(handle)
        if not os.path.exists(target):
            raise _BadModelDirectory("no such directory")
        if not os.path.isdir(target):
            raise _BadModelDirectory("not a directory")
        if not os.path.isfile(os.path.join(target, "saved_model.pb")):
            raise _BadModelDirectory("the directory holds no saved_model.pb, so it is not a SavedModel")
    # TF logs a screenful at import; quieten it unless the user asked for a level.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_silenced():
        import tensorflow  # noqa: F401  (imported after the log level is set, before hub imports it)
        import tensorflow_hub as hub

    signatures = hub.load(target).signatures
    if "default" not in signatures:
        raise _BadModelDirectory(f"the model has no 'default' signature (it has: {', '.join(signatures) or 'none'})")
    signature = signatures["default"]
    missing = {"locations", "descriptors"} - set(signature.structured_outputs)
    if missing:
        raise _BadModelDirectory(f"its 'default' signature lacks the outputs {', '.join(sorted(missing))}")
    return signature


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what native code writes to file descriptor 2 (TF's C++ start-up log, which ignores
    TF_CPP_MIN_LOG_LEVEL in recent releases) unless logging is verbose. Python exceptions still
    propagate, so an import that fails is still reported."""
    if logging.getLogger().isEnabledFor(logging.INFO):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _is_url(handle: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", handle) is not None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()).rstrip(".")
    return text or type(error).__name__
