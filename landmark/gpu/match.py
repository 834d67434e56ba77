"""One query against a held partition: :func:`landmark.matching.match_batch` on the device.

The partition is walked in runs of whole images (a bounded number of rows each, so device
memory stays flat however large the partition); per run:

1. nearest query descriptors and the rule (:mod:`.nearest`, or the fused kernel);
2. putative matches per image; images with enough of them (``max(3, min_inliers)``, as the CPU
   path) have their correspondences gathered into one array, in the CPU path's order;
3. affine RANSAC for all those pairs at once (:mod:`.ransac`, or the counting kernel). A
   homography (MAGSAC++, OpenCV's) has no device version: its pairs go to the CPU one by one.

Only the ``[B x 2]`` counts come back to the host, once.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..contract import Features
from ..matching import _blocks
from ..verification import MIN_SAMPLES, count_inliers
from . import nearest as nn
from . import ransac

if TYPE_CHECKING:
    from ..matching import MatchConfig
    from .held import HeldBatch

KERNEL_ROWS = 1 << 24
"""Stored rows per run with the fused kernels: ~40 bytes of device memory a row (640 MB)."""

KERNELS = ("auto", "triton", "torch")


def match_held(query: Features, held: HeldBatch, config: MatchConfig, *, kernels: str = "auto") -> np.ndarray:
    """int64 ``[B x 2]``: ``(inliers, putative matches)`` of ``query`` against each held image.

    ``kernels``: ``triton`` (the fused kernels), ``torch`` (plain tensor operations, any device)
    or ``auto`` (Triton on a CUDA device where it is installed, else PyTorch).
    """
    result = np.zeros((len(held), 2), dtype=np.int64)
    if len(held) == 0 or query.num_features == 0 or held.offsets[-1] == 0:
        return result
    if query.descriptor_dim != held.descriptor_dim:
        raise ValueError(f"query descriptors are {query.descriptor_dim}-D, the held ones {held.descriptor_dim}-D")
    device = held.device
    fused = use_triton(device, kernels)
    descriptors = torch.from_numpy(query.descriptors).to(device)
    locations = torch.from_numpy(query.locations).to(device)
    if fused:
        from .kernels import nearest_triton, split_query

        halves = split_query(descriptors)
    needed = max(MIN_SAMPLES[config.verification], config.min_inliers)
    second_needed, columns_needed = nn.needs(config)
    nq = query.num_features
    counts = torch.zeros((len(held), 2), dtype=torch.int64, device=device)
    rows_per_run = KERNEL_ROWS if fused else max(1, nn.TORCH_PRODUCT_ELEMENTS // nq)
    largest = int(np.diff(held.offsets).max())  # the most putative matches a pair can have
    for first, end in _blocks(held.offsets, rows_per_run):
        lo, hi = int(held.offsets[first]), int(held.offsets[end])
        if hi == lo:
            continue
        bounds = held.device_offsets[first:end + 1] - lo  # [C + 1] rows of the run
        image = torch.repeat_interleave(torch.arange(end - first, device=device), bounds.diff(), output_size=hi - lo)
        if fused:
            found = nearest_triton(held, first, end, halves, second_needed, columns_needed)
        else:
            found = nn.nearest_torch(held, first, end, descriptors, image, config)
        keep = nn.kept(found, image, config, nq)
        before = torch.nn.functional.pad(torch.cumsum(keep, 0), (1, 0))
        putatives = before[bounds[1:]] - before[bounds[:-1]]  # [C]
        counts[first:end, 1] = putatives
        # Every image of the run is a pair, those not verified with no points: nothing here waits
        # for the device, so Python queues the next run while this one computes.
        verified = putatives >= needed
        chosen = keep & verified[image]
        slot = torch.where(chosen, torch.cumsum(chosen, 0) - 1, hi - lo)  # by stored row: the CPU path's order
        points = torch.empty((hi - lo + 1, 4), dtype=torch.float32, device=device)  # the rest into a spare row
        points[slot] = torch.cat([locations[found.index], held.locations[lo:hi]], dim=1)
        sizes = torch.where(verified, putatives, 0)
        counts[first:end, 0] = verify(points, torch.cumsum(sizes, 0) - sizes, sizes, config, fused, largest)
    return counts.cpu().numpy()


def verify(points: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, config: MatchConfig,
           fused: bool, largest: int) -> torch.Tensor:
    """int64 ``[P]`` inliers of each pair: pair ``p``'s correspondences are ``points`` float32
    ``[n x 4]`` rows ``starts[p]:starts[p] + sizes[p]``, ``(src x, src y, dst x, dst y)``; no
    pair has more than ``largest`` (0 for a pair with fewer than the model's minimum)."""
    if config.verification != "affine":
        host, first, size = points.cpu().numpy(), starts.cpu().numpy(), sizes.cpu().numpy()
        found = [count_inliers(host[s:s + n, :2], host[s:s + n, 2:], config) if n else 0 for s, n in zip(first, size)]
        return torch.tensor(found, dtype=torch.int64, device=points.device)
    samples, stops = ransac.tables(config.seed, config.ransac_trials, ransac.table_size(largest), str(points.device))
    if fused:
        from .kernels import counts_triton

        scores = counts_triton(points, starts, sizes, samples, config.ransac_threshold)
    else:
        scores = ransac.counts_torch(points, starts, sizes, samples, config.ransac_threshold)
    return ransac.best_counts(scores, sizes, stops)


def use_triton(device: torch.device, kernels: str) -> bool:
    """Whether the fused kernels run: ``triton`` always, ``auto`` on CUDA with Triton installed."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels: {kernels!r} is not one of {', '.join(KERNELS)}")
    if kernels != "auto":
        return kernels == "triton"
    return device.type == "cuda" and importlib.util.find_spec("triton") is not None
