"""Putative matches of one query against a run of held images, on the device.

For every stored row: the similarity of its nearest query descriptor and that descriptor's
index, the second-best similarity (``ratio`` and ``mutual`` rules), and for the ``mutual``
rule each query descriptor's best similarity within each image. :func:`kept` then applies the
rule exactly as :func:`landmark.matching._nearest_kept` does, in float32.

:func:`nearest_torch` computes them with one matrix product per run of images (the
``[rows x Nq]`` similarities are materialised: a run is kept to :data:`TORCH_PRODUCT_ELEMENTS`);
:func:`landmark.gpu.kernels.nearest_triton` computes the same without materialising it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch


if TYPE_CHECKING:
    from ..matching import MatchConfig
    from .held import HeldBatch

TORCH_PRODUCT_ELEMENTS = 1 << 26
"""Largest ``[rows x Nq]`` float32 similarity block of :func:`nearest_torch` (256 MB)."""


@dataclass(frozen=True)
class Nearest:
    """Per stored row of a run of ``C`` images (``R`` rows): ``best`` float32 ``[R]`` and
    ``index`` int64 ``[R]`` (nearest query descriptor; the first of equals), ``second`` float32
    ``[R]`` or ``None``; ``columns`` float32 ``[C x Nq]`` (each query descriptor's best
    similarity within each image, ``-inf`` for an image without rows) or ``None``."""

    best: torch.Tensor
    index: torch.Tensor
    second: torch.Tensor | None
    columns: torch.Tensor | None


def needs(config: MatchConfig) -> tuple[bool, bool]:
    """Whether ``config``'s rule needs the second-best similarities, and the per-image columns."""
    return config.rule in ("ratio", "mutual"), config.rule == "mutual"


def nearest_torch(held: HeldBatch, first: int, end: int, query: torch.Tensor, image: torch.Tensor,
                  config: MatchConfig) -> Nearest:
    """:class:`Nearest` for images ``first:end`` of ``held`` against ``query`` float32 ``[Nq x D]``
    (on ``held``'s device); ``image`` int64 ``[R]`` is each row's image, counted from ``first``."""
    lo, hi = int(held.offsets[first]), int(held.offsets[end])
    second_needed, columns_needed = needs(config)
    stored = held.descriptors[lo:hi].float()
    similarity = stored @ query.T  # [R x Nq]
    if held.scales is not None:
        similarity *= held.scales[lo:hi, None]
    best, index = similarity.max(dim=1)
    columns = None
    if columns_needed:
        columns = torch.full((end - first, query.shape[0]), float("-inf"), device=similarity.device)
        columns.scatter_reduce_(0, image[:, None].expand_as(similarity), similarity, "amax")
    second = None
    if second_needed:
        similarity[torch.arange(hi - lo, device=similarity.device), index] = float("-inf")
        second = similarity.max(dim=1).values
    return Nearest(best, index, second, columns)


def kept(nearest: Nearest, image: torch.Tensor, config: MatchConfig, query_rows: int) -> torch.Tensor:
    """bool ``[R]``: whether ``config``'s rule keeps each row's pair with its nearest query row.

    The CPU path's arithmetic, in float32: squared distances ``max(2 - 2 s, 0)``; ``distance``:
    at most ``max_distance^2``; ``ratio``: ``d1 < ratio^2 d2`` (always, with one query row);
    ``mutual``: that, and the row's similarity is its nearest query row's best in its image.
    """
    best = torch.clamp(2.0 - 2.0 * nearest.best, min=0.0)
    if config.rule == "distance":
        return best <= torch.tensor(config.max_distance, dtype=torch.float32) ** 2
    passes = torch.ones_like(best, dtype=torch.bool)
    if query_rows >= 2:
        second = torch.clamp(2.0 - 2.0 * nearest.second, min=0.0)
        passes = best < (torch.tensor(config.ratio, dtype=torch.float32) ** 2) * second
    if config.rule == "mutual":
        passes &= nearest.best >= nearest.columns[image, nearest.index]
    return passes
