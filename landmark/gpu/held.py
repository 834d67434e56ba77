"""A partition held in device memory, uploaded once and matched against every query that comes.

Descriptors are held as

- ``float16`` (the default): exactly the values the store keeps for DELF and RootSIFT
  (:mod:`landmark.contract`), 2 bytes a component;
- ``int8``: half of that again, each row scaled to use the whole int8 range (``round(127 x /
  max|x|)``) and its similarity multiplied by ``1 / |row|``, so a row stays unit length as the
  contract's int8 decoding makes it. A product moves by ~1e-3 (measured on rankings by
  ``benchmarks/gpu.py``). A million DELF-shaped images (1000 x 40) take 40 GB this way, 80 GB as
  float16: int8 is what fits them on one 80 GB GPU.

Locations stay float32 pixels (8 bytes a feature), as RANSAC must see the CPU path's points.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..contract import FeatureBatch, Features
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..matching import MatchConfig

HELD_FORMATS = ("float16", "int8")


@dataclass(frozen=True, eq=False)
class HeldBatch:
    """The features of ``B`` images on one device, laid end to end as in a
    :class:`~landmark.contract.FeatureBatch`: image ``b`` owns rows ``offsets[b]:offsets[b + 1]``.

    ``offsets`` int64 ``[B + 1]`` (host); ``locations`` float32 ``[M x 2]`` pixels;
    ``descriptors`` float16 or int8 ``[M x D]``; ``scales`` float32 ``[M]`` for int8 (a row's
    similarity is its int8 dot product times its scale), else ``None``.
    """

    offsets: np.ndarray
    locations: torch.Tensor
    descriptors: torch.Tensor
    scales: torch.Tensor | None = None
    device_offsets: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        offsets = np.ascontiguousarray(self.offsets, dtype=np.int64)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "device_offsets", torch.from_numpy(offsets).to(self.descriptors.device))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def device(self) -> torch.device:
        return self.descriptors.device

    @property
    def descriptor_dim(self) -> int:
        return int(self.descriptors.shape[1])

    @property
    def nbytes(self) -> int:
        """Host bytes (what Dask's memory accounting is about): the offsets alone."""
        return self.offsets.nbytes

    @property
    def device_nbytes(self) -> int:
        tensors = (self.locations, self.descriptors, self.scales, self.device_offsets)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def match(self, query: Features, config: MatchConfig) -> np.ndarray:
        """int64 ``[B x 2]``: ``(inliers, putative matches)`` per image, as
        :func:`landmark.matching.match_batch` gives them (it hands held partitions here)."""
        from .match import match_held

        return match_held(query, self, config)

    def __reduce__(self):  # noqa: ANN204 - pickled through the host (Dask moving or spilling it)
        host = [None if t is None else t.cpu().numpy() for t in (self.locations, self.descriptors, self.scales)]
        return _restore, (self.offsets, *host, self.device.type)


def _restore(offsets: np.ndarray, locations: np.ndarray, descriptors: np.ndarray, scales: np.ndarray | None,
             device: str) -> HeldBatch:
    """A pickled :class:`HeldBatch` back on this process's current ``device``."""
    def up(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(array).to(device)

    return HeldBatch(offsets, up(locations), up(descriptors), up(scales))


def hold(batch: FeatureBatch, *, descriptors: str = "float16", device: str | torch.device = "cuda") -> HeldBatch:
    """``batch`` uploaded to ``device``, its descriptors held as ``descriptors`` (``float16``
    or ``int8``)."""
    if descriptors not in HELD_FORMATS:
        raise ValueError(f"descriptors: {descriptors!r} is not one of {', '.join(HELD_FORMATS)}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: no CUDA GPU is visible to this process (PyTorch sees none)")
    locations = torch.from_numpy(np.ascontiguousarray(batch.locations, dtype=np.float32)).to(device)
    values = torch.from_numpy(np.ascontiguousarray(batch.descriptors, dtype=np.float32))
    if descriptors == "float16":
        return HeldBatch(batch.offsets, locations, values.to(device=device, dtype=torch.float16))
    quantised, scales = quantise_int8(values.to(device))
    return HeldBatch(batch.offsets, locations, quantised, scales)


def quantise_int8(descriptors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float ``[M x D]`` rows -> int8 ``[M x D]`` (each row over the whole int8 range) and float32
    ``[M]`` scales that make each row unit length again (zero rows stay zero)."""
    values = descriptors.float()
    peak = values.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    quantised = torch.round(values * (127.0 / peak)).clamp_(-127, 127)
    norms = torch.linalg.vector_norm(quantised, dim=1).clamp_min(1e-12)
    return quantised.to(torch.int8), (1.0 / norms).float()
