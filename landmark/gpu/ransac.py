"""Affine RANSAC for many image pairs at once, on the device, replaying the CPU path's search.

:func:`landmark.verification.ransac_affine` draws its hypotheses from a generator seeded by
``(seed, K)``: pairs with the same number of putative matches ``K`` share them. So the device
takes the very same samples (one table for every ``K``, drawn on the host once per seed and
trial count), scores every hypothesis of every pair in parallel (float64, as the CPU does), and
then replays the CPU loop's early stop on the counts: after each new best of ``n`` inliers the
loop ends once ``ceil(log(eps) / log(1 - (n / K)^3))`` trials have run, so the inlier count it
reports is the best count among the trials it ran. Counts therefore agree with the CPU path
but for floating-point rounding of a residual at the threshold.

Points come as one float32 ``[n x 4]`` array ``(src x, src y, dst x, dst y)``, pair ``p`` owning
rows ``starts[p]:starts[p] + sizes[p]`` (in the CPU path's order: by stored row).
:func:`counts_torch` scores hypotheses with plain tensor operations;
:func:`landmark.gpu.kernels.counts_triton` does the same in one kernel.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..verification import _EPS, _sample_triples

TORCH_SCORE_ELEMENTS = 1 << 24
"""Largest ``[pairs x trials x points]`` float64 block of :func:`counts_torch` (128 MB a tensor)."""


@functools.lru_cache(maxsize=8)
def tables(seed: int, trials: int, largest: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``K`` up to ``largest`` putative matches: int16 ``[K + 1, trials, 3]`` samples (the
    CPU path's, zeros below 3) and int32 ``[K + 1, K + 1]`` stops (entry ``[K, n]``: trials the
    CPU loop runs once its best has ``n`` inliers; ``trials`` for ``n = 0``)."""
    samples = np.zeros((largest + 1, trials, 3), np.int16)
    for k in range(3, largest + 1):
        samples[k] = _sample_triples.__wrapped__(seed, k, trials)  # unwrapped: no host cache
    k = np.arange(largest + 1, dtype=np.float64)[:, None]
    n = np.arange(largest + 1, dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = n / k
        denom = np.minimum(np.maximum(1.0 - ratio * ratio * ratio, _EPS), 1.0 - _EPS)  # as the CPU loop
        dynamic = np.ceil(np.log(_EPS) / np.log(denom))
    stops = np.where((n > 0) & (n <= k), np.minimum(np.nan_to_num(dynamic, nan=trials), trials), trials)
    return torch.from_numpy(samples).to(device), torch.from_numpy(stops.astype(np.int32)).to(device)


def table_size(largest: int) -> int:
    """The ``largest`` a table is built for: the next power of two (at least 64), so a table is
    built a few times per worker, not once per new ``K``."""
    return max(64, 1 << (int(largest) - 1).bit_length())


def best_counts(counts: torch.Tensor, sizes: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """int64 ``[P]``: the inliers the CPU loop reports, from every hypothesis' count int16
    ``[P x T]`` (trial order; 0 for a degenerate sample) and ``sizes`` ``[P]``: the best count
    among the trials it runs before its early stop."""
    trials = counts.shape[1]
    running = torch.cummax(counts.int(), dim=1).values  # [P x T] best after each trial
    limit = stops[sizes.long()[:, None], running.long()]  # trials allowed once that is the best
    done = torch.arange(1, trials + 1, device=counts.device, dtype=torch.int32) >= limit
    last = done.int().argmax(dim=1)  # the first trial after which the loop stops (always one: limit <= T)
    return running.gather(1, last[:, None]).squeeze(1).long()


def fit(points: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine maps through each sample's 3 correspondences, as the CPU loop computes them.

    ``points`` float64 ``[P x K x 4]``, ``sample`` int64 ``[P x T x 3]`` -> float64 ``[P x T x 6]``
    ``(m0x, m1x, tx, m0y, m1y, ty)`` and bool ``[P x T]`` degenerate (no unique map: skipped).
    """
    def at(column: int, which: int) -> torch.Tensor:
        return points[..., column].gather(1, sample[..., which])

    sx_i, sy_i, dx_i, dy_i = (at(c, 0) for c in range(4))
    d1x, d1y = at(0, 1) - sx_i, at(1, 1) - sy_i
    d2x, d2y = at(0, 2) - sx_i, at(1, 2) - sy_i
    e1x, e1y = at(2, 1) - dx_i, at(3, 1) - dy_i
    e2x, e2y = at(2, 2) - dx_i, at(3, 2) - dy_i
    det = d1x * d2y - d1y * d2x
    scale = torch.sqrt(d1x * d1x + d1y * d1y) * torch.sqrt(d2x * d2x + d2y * d2y)
    degenerate = (det.abs() <= 1e-9 * scale) | ((e1x == 0) & (e1y == 0) & (e2x == 0) & (e2y == 0))
    inv = 1.0 / torch.where(degenerate, torch.ones_like(det), det)
    m0x = (e1x * d2y - e2x * d1y) * inv
    m0y = (e1y * d2y - e2y * d1y) * inv
    m1x = (e2x * d1x - e1x * d2x) * inv
    m1y = (e2y * d1x - e1y * d2x) * inv
    tx = dx_i - m0x * sx_i - m1x * sy_i
    ty = dy_i - m0y * sx_i - m1y * sy_i
    return torch.stack([m0x, m1x, tx, m0y, m1y, ty], dim=-1), degenerate


def counts_torch(points: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, samples: torch.Tensor,
                 threshold: float) -> torch.Tensor:
    """int16 ``[P x T]``: inliers of each hypothesis of each pair (0 where degenerate, and for a
    pair of fewer than 3 points), in runs of pairs that keep each ``[pairs x T x K]`` block under
    :data:`TORCH_SCORE_ELEMENTS`."""
    trials = samples.shape[1]
    limit = float(threshold) ** 2
    out = torch.zeros((len(sizes), trials), dtype=torch.int16, device=points.device)
    host_sizes = sizes.cpu().numpy()
    active = np.flatnonzero(host_sizes >= 3)  # the others have no hypothesis: 0
    first = 0
    while first < len(active):
        width = int(host_sizes[active[first]])
        end = first + 1
        while end < len(active) and (end - first + 1) * trials * max(width, int(host_sizes[active[end]])) \
                <= TORCH_SCORE_ELEMENTS:
            width = max(width, int(host_sizes[active[end]]))
            end += 1
        pairs = torch.from_numpy(active[first:end]).to(points.device)
        span = torch.arange(width, device=points.device)
        valid = span[None, :] < sizes[pairs, None]  # [P x K]
        rows = torch.where(valid, starts[pairs, None] + span[None, :], 0)
        padded = points[rows].double()  # [P x K x 4]
        model, degenerate = fit(padded, samples[sizes[pairs].long()].long())
        sx, sy, dx, dy = (padded[:, None, :, c] for c in range(4))  # [P x 1 x K]
        m0x, m1x, tx, m0y, m1y, ty = (model[..., c, None] for c in range(6))  # [P x T x 1]
        rx = m0x * sx + m1x * sy + tx - dx
        ry = m0y * sx + m1y * sy + ty - dy
        inside = ((rx * rx + ry * ry) < limit) & valid[:, None, :]
        out[pairs] = torch.where(degenerate, 0, inside.sum(dim=2)).to(torch.int16)
        first = end
    return out
