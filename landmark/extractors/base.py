"""What an extractor is: a typed config and a function from pixels to :class:`Features`."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import numpy as np

from ..contract import Features


class Extractor(Protocol):
    """Turns one decoded image into features that follow :mod:`landmark.contract`."""

    name: ClassVar[str]
    """Registry name; stored with every row the extractor produces."""
    matching_preset: ClassVar[str]
    """Name of the matching preset (see :data:`landmark.matching.PRESETS`) its descriptors need."""
    descriptor_encoding: ClassVar[str]
    """How the store keeps its descriptors: ``float16`` or ``int8`` (see :mod:`landmark.contract`)."""
    config: Any
    """The extractor's frozen config dataclass."""

    def extract(self, image: np.ndarray) -> Features:
        """``image``: uint8 ``[H x W x 3]`` RGB, already EXIF-oriented and fitted to
        ``config.max_image_side``. Returns features in that image's pixel coordinates."""
        ...
