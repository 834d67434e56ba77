"""The data contract: what every stage hands to the next. Written once, referenced everywhere.

Features of one image (every extractor produces exactly this):

- ``locations``   float32 ``[N x 2]``, ``(x, y)`` in pixels of the *decoded* image (after EXIF
  orientation and the extractor's ``max_image_side`` downscale); x to the right, y down,
  integer coordinates at pixel centres (the OpenCV convention).
- ``descriptors`` float32 ``[N x D]``, each row L2-normalised (unit length), so the squared
  Euclidean distance of two rows is ``2 - 2 * dot``.
- ``image_size``  ``(width, height)`` of the decoded image in pixels.

A partition of stored images travels as one :class:`FeatureBatch`: their locations and
descriptors laid end to end, with ``offsets`` marking where each image's rows start.

The ``landmarks`` table (one row per image; see :mod:`landmark.store`):

===================  ===============  ==========================================================
column               type             meaning
===================  ===============  ==========================================================
id                   bigint           surrogate key, used to split the table into partitions
uri                  text unique      normalised URI of the image (its identity in the store)
extractor            text             name of the extractor that produced the row
width, height        integer          ``image_size``
num_features         integer          N
descriptor_dim       integer          D
locations            bytea            ``[N x 2]`` uint16 little-endian, quarter pixels (x4)
descriptors          bytea            ``[N x D]`` in ``descriptor_encoding``
descriptor_encoding  text             ``float16`` (little-endian) or ``int8`` (``round(127 x value)``)
content_sha256       text             SHA-256 of the image bytes (unchanged bytes are not redone)
added_at             timestamptz      when the row was written
===================  ===============  ==========================================================

Why these encodings: float16 keeps ~3 significant digits of a unit-length descriptor
(dot products move by < 1e-3) and quarter-pixel locations move a point by at most 0.18 px
against a 6-20 px RANSAC threshold, so rankings do not change; together they take exactly
half the bytes of float32 storage. ``int8`` halves the descriptors again for extractors with
many long descriptors (ALIKED: 1024 x 128 is 128 kB instead of 256 kB): each component of a
unit vector is stored in steps of 1/127, which moves a dot product by ~2e-3 (decoded rows are
re-normalised); the extractor declares which encoding it needs (``descriptor_encoding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LOCATION_QUANTUM = 4.0
"""Locations are stored as ``round(x * 4)`` in uint16: quarter-pixel steps."""

MAX_IMAGE_SIDE_STORABLE = int(np.iinfo(np.uint16).max // LOCATION_QUANTUM)
"""The largest pixel coordinate the location encoding can hold (16383 px)."""


@dataclass(frozen=True, eq=False)
class Features:
    """Local features of one image, in the contract's shapes and units (see module docstring)."""

    locations: np.ndarray
    """float32 ``[N x 2]``, ``(x, y)`` pixels."""
    descriptors: np.ndarray
    """float32 ``[N x D]``, L2-normalised rows."""
    image_size: tuple[int, int]
    """``(width, height)`` in pixels."""

    def __post_init__(self) -> None:
        locations = np.ascontiguousarray(self.locations, dtype=np.float32).reshape(-1, 2)
        descriptors = np.ascontiguousarray(self.descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[0] != locations.shape[0]:
            raise ValueError(
                f"features need descriptors [N x D] for locations [N x 2]; got "
                f"{tuple(descriptors.shape)} for {tuple(locations.shape)}"
            )
        width, height = (int(v) for v in self.image_size)
        object.__setattr__(self, "locations", locations)
        object.__setattr__(self, "descriptors", descriptors)
        object.__setattr__(self, "image_size", (width, height))

    @property
    def num_features(self) -> int:
        return int(self.locations.shape[0])

    @property
    def descriptor_dim(self) -> int:
        return int(self.descriptors.shape[1])


@dataclass(frozen=True, eq=False)
class FeatureBatch:
    """The features of ``B`` images laid end to end, ready to be matched as one partition.

    ``locations`` float32 ``[M x 2]`` and ``descriptors`` float32 ``[M x D]`` (contract units),
    image ``b`` owning rows ``offsets[b]:offsets[b + 1]`` (``offsets`` int64 ``[B + 1]``).
    """

    locations: np.ndarray
    descriptors: np.ndarray
    offsets: np.ndarray
    _converted: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, stored: Sequence[Features], dim: int | None = None) -> FeatureBatch:
        counts = [f.num_features for f in stored]
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        dim = dim if dim is not None else (stored[0].descriptor_dim if stored else 0)
        if offsets[-1] == 0:
            return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.float32), offsets)
        return cls(
            np.concatenate([f.locations for f in stored]),
            np.concatenate([f.descriptors for f in stored]),
            offsets,
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        converted = sum(a.nbytes for a in self._converted.values())
        return self.locations.nbytes + self.descriptors.nbytes + self.offsets.nbytes + converted

    def descriptors_as(self, precision: str) -> np.ndarray:
        """The descriptors in ``precision``'s layout (:func:`landmark.gemm.as_precision`),
        converted once per batch: a held partition pays for it on its first query only."""
        if precision == "float32":
            return self.descriptors
        if precision not in self._converted:
            from .gemm import as_precision

            self._converted[precision] = as_precision(self.descriptors, precision)
        return self._converted[precision]


def l2_normalise(descriptors: np.ndarray) -> np.ndarray:
    """Rows of ``[N x D]`` scaled to unit length (zero rows stay zero), as float32."""
    descriptors = np.asarray(descriptors, dtype=np.float32)
    norms = np.linalg.norm(descriptors, axis=1, keepdims=True)
    return descriptors / np.maximum(norms, np.float32(1e-12))


def encode_locations(locations: np.ndarray) -> bytes:
    """``[N x 2]`` float32 pixels -> bytes of uint16 quarter pixels."""
    locations = np.asarray(locations, dtype=np.float64)
    # Sub-pixel refinement may put a keypoint a hair outside the image; a pixel of slack is clipped.
    if locations.size and (locations.min() < -1 or locations.max() > MAX_IMAGE_SIDE_STORABLE + 1):
        raise ValueError(
            f"locations must lie in [0, {MAX_IMAGE_SIDE_STORABLE}] pixels to be stored; "
            f"got [{locations.min():.1f}, {locations.max():.1f}]"
        )
    quantised = np.clip(np.rint(locations * LOCATION_QUANTUM), 0, np.iinfo(np.uint16).max)
    return quantised.astype("<u2").tobytes()


def decode_locations(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_locations`: float32 ``[N x 2]`` pixels."""
    return (np.frombuffer(data, dtype="<u2").astype(np.float32) / LOCATION_QUANTUM).reshape(-1, 2)


DESCRIPTOR_ENCODINGS = ("float16", "int8")
INT8_STEPS = 127.0
"""``int8`` stores ``round(127 x component)``: a unit vector's components lie in [-1, 1]."""


def encode_descriptors(descriptors: np.ndarray, encoding: str = "float16") -> bytes:
    """``[N x D]`` float32 unit rows -> bytes in ``encoding`` (little-endian float16, or int8)."""
    if encoding == "int8":
        steps = np.rint(np.asarray(descriptors, dtype=np.float32) * np.float32(INT8_STEPS))
        return np.clip(steps, -INT8_STEPS, INT8_STEPS).astype(np.int8).tobytes()
    if encoding != "float16":
        raise ValueError(f"unknown descriptor encoding {encoding!r}; known: {', '.join(DESCRIPTOR_ENCODINGS)}")
    return np.asarray(descriptors, dtype="<f2").tobytes()


def decode_descriptors(data: bytes, dim: int, encoding: str = "float16") -> np.ndarray:
    """Inverse of :func:`encode_descriptors`: float32 ``[N x D]`` (``int8`` rows re-normalised)."""
    if encoding == "int8":
        return l2_normalise(np.frombuffer(data, dtype=np.int8).reshape(-1, dim))
    if encoding != "float16":
        raise ValueError(f"unknown descriptor encoding {encoding!r}; known: {', '.join(DESCRIPTOR_ENCODINGS)}")
    return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(-1, dim)
