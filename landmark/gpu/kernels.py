"""The two hot loops of the device path as Triton kernels.

- :func:`nearest_triton`: one program per stored image. It walks its rows in tiles of
  ``BLOCK_ROWS`` and the query in tiles of ``BLOCK_QUERY``, takes each tile's similarities from
  the tensor cores (float16 operands, float32 accumulation) and folds them at once, element by
  element, into a running best, second best and best tile per (row, position in a tile); the
  reductions across a tile's positions (they cross threads) come once per row tile, not once
  per tile. For the mutual rule each tile is also reduced over its rows into each query
  column's best within the image. The ``[rows x Nq]`` similarities never reach device memory:
  what is read is the descriptors, once, and what is written is 12 bytes a row.
  The query is split into a float16 head and a float16 remainder (``q = hi + lo``) and both are
  multiplied (``SPLIT``): the products then carry float32's precision, as the CPU path's do, at
  twice the (cheap) tensor-core work. int8 rows are widened to float16 (exact) and scaled.
- :func:`counts_triton`: one program per pair and block of ``BLOCK_TRIALS`` hypotheses: it
  gathers each hypothesis' 3 correspondences, fits the affine map in float64 (the CPU loop's
  formulas, written again here as :func:`landmark.gpu.ransac.fit` writes them for PyTorch: a
  kernel cannot call it) and counts the points within the threshold, ``BLOCK_POINTS`` at a time.

Both give what their PyTorch twins in :mod:`.nearest` and :mod:`.ransac` give;
``benchmarks/gpu.py`` and the ``gpu`` tests check it on the GPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from .nearest import Nearest

if TYPE_CHECKING:
    from .held import HeldBatch


@triton.jit
def _nearest_kernel(
    stored, scales, offsets, query_hi, query_lo,
    best_out, second_out, index_out, columns_out,
    row0, nq, dim,
    BLOCK_ROWS: tl.constexpr, BLOCK_QUERY: tl.constexpr, BLOCK_DIM: tl.constexpr,
    SCALED: tl.constexpr, SPLIT: tl.constexpr, SECOND: tl.constexpr, COLUMNS: tl.constexpr,
):
    image = tl.program_id(0)
    lo = tl.load(offsets + image)
    hi = tl.load(offsets + image + 1)
    d = tl.arange(0, BLOCK_DIM)
    dmask = d < dim
    j = tl.arange(0, BLOCK_QUERY)
    for first in range(lo, hi, BLOCK_ROWS):
        rows = first + tl.arange(0, BLOCK_ROWS)
        rmask = rows < hi
        a = tl.load(stored + rows[:, None] * dim + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0)
        a = a.to(tl.float16)
        if SCALED:
            scale = tl.load(scales + rows, mask=rmask, other=0.0)
        # Running best, second best and the best's query tile, per (row, position in a tile):
        # elementwise across query tiles, reduced across positions once per row tile.
        top = tl.full([BLOCK_ROWS, BLOCK_QUERY], float("-inf"), tl.float32)
        runner = tl.full([BLOCK_ROWS, BLOCK_QUERY], float("-inf"), tl.float32)
        tile = tl.zeros([BLOCK_ROWS, BLOCK_QUERY], tl.int32)
        for c0 in range(0, nq, BLOCK_QUERY):
            cols = c0 + j
            cmask = cols < nq
            qmask = dmask[:, None] & cmask[None, :]
            s = tl.dot(a, tl.load(query_hi + cols[None, :] * dim + d[:, None], mask=qmask, other=0.0))
            if SPLIT:
                s = tl.dot(a, tl.load(query_lo + cols[None, :] * dim + d[:, None], mask=qmask, other=0.0), s)
            if SCALED:
                s = s * scale[:, None]
            s = tl.where(cmask[None, :], s, float("-inf"))
            if COLUMNS:
                column_best = tl.max(tl.where(rmask[:, None], s, float("-inf")), axis=0)
                where = columns_out + image.to(tl.int64) * nq + cols
                old = tl.load(where, mask=cmask, other=float("-inf"))
                tl.store(where, tl.maximum(old, column_best), mask=cmask)
                tl.debug_barrier()  # the next row tile reads what this one wrote
            better = s > top  # strictly: an earlier tile keeps a tie
            if SECOND:
                runner = tl.where(better, top, tl.maximum(runner, s))
            tile = tl.where(better, c0, tile)
            top = tl.where(better, s, top)
        best = tl.max(top, axis=1)
        column = tile + j[None, :]
        index = tl.min(tl.where(top == best[:, None], column, 2147483647), axis=1)  # the first of equals
        out = rows - row0
        tl.store(best_out + out, best, mask=rmask)
        tl.store(index_out + out, index, mask=rmask)
        if SECOND:
            # The second best is the runner-up where the best is, or the best anywhere else.
            second = tl.max(tl.where(column == index[:, None], runner, top), axis=1)
            tl.store(second_out + out, second, mask=rmask)


def split_query(query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``[Nq x D]`` -> float16 ``hi`` and ``lo`` with ``hi + lo`` = the query to ~2^-22."""
    hi = query.half()
    return hi.contiguous(), (query - hi.float()).half().contiguous()


NEAREST_BLOCKS = {"rows": 128, "query": 32, "warps": 4}
"""Tile sizes and warps of :func:`_nearest_kernel`: the fastest of 12 on an H100 for 40-D and
128-D, with and without the second best and the columns."""
COUNTS_BLOCKS = {"trials": 128, "points": 8, "warps": 4}
"""The same for :func:`_counts_kernel`: on an H100, 4.8x faster than 64 x 32 (wider point tiles spill)."""


def nearest_triton(held: HeldBatch, first: int, end: int, query: tuple[torch.Tensor, torch.Tensor],
                   second_needed: bool, columns_needed: bool, *, split: bool = True,
                   blocks: dict[str, int] | None = None) -> Nearest:
    """:class:`~landmark.gpu.nearest.Nearest` of images ``first:end`` of ``held`` against the
    :func:`split_query` halves of the query, from :func:`_nearest_kernel` (``split``: both
    halves; ``blocks``: :data:`NEAREST_BLOCKS` by default)."""
    blocks = blocks or NEAREST_BLOCKS
    hi_query, lo_query = query
    lo, hi = int(held.offsets[first]), int(held.offsets[end])
    rows, nq, dim = hi - lo, hi_query.shape[0], held.descriptor_dim
    device = held.device
    best = torch.empty(rows, dtype=torch.float32, device=device)
    index = torch.empty(rows, dtype=torch.int32, device=device)
    second = torch.empty(rows, dtype=torch.float32, device=device) if second_needed else best
    columns = torch.full((end - first, nq), float("-inf"), device=device) if columns_needed else best
    scaled = held.scales is not None
    _nearest_kernel[(end - first,)](
        held.descriptors, held.scales if scaled else best, held.device_offsets[first:end + 1], hi_query, lo_query,
        best, second, index, columns,
        lo, nq, dim,
        BLOCK_ROWS=blocks["rows"], BLOCK_QUERY=blocks["query"], BLOCK_DIM=max(16, triton.next_power_of_2(dim)),
        SCALED=scaled, SPLIT=split, SECOND=second_needed, COLUMNS=columns_needed,
        num_warps=blocks["warps"], num_stages=2,
    )
    return Nearest(best, index.long(), second if second_needed else None, columns if columns_needed else None)


@triton.jit
def _counts_kernel(
    points, starts, sizes, samples, counts, limit_ptr, trials,
    BLOCK_TRIALS: tl.constexpr, BLOCK_POINTS: tl.constexpr,
):
    pair = tl.program_id(0)
    start = tl.load(starts + pair)
    k = tl.load(sizes + pair)
    limit = tl.load(limit_ptr)
    t = tl.program_id(1) * BLOCK_TRIALS + tl.arange(0, BLOCK_TRIALS)
    tmask = t < trials
    sample = samples + (k.to(tl.int64) * trials + t) * 3
    base = points + start.to(tl.int64) * 4
    i = tl.load(sample, mask=tmask, other=0).to(tl.int64) * 4
    j = tl.load(sample + 1, mask=tmask, other=1).to(tl.int64) * 4
    m = tl.load(sample + 2, mask=tmask, other=2).to(tl.int64) * 4
    sx_i = tl.load(base + i).to(tl.float64)
    sy_i = tl.load(base + i + 1).to(tl.float64)
    dx_i = tl.load(base + i + 2).to(tl.float64)
    dy_i = tl.load(base + i + 3).to(tl.float64)
    d1x = tl.load(base + j).to(tl.float64) - sx_i
    d1y = tl.load(base + j + 1).to(tl.float64) - sy_i
    e1x = tl.load(base + j + 2).to(tl.float64) - dx_i
    e1y = tl.load(base + j + 3).to(tl.float64) - dy_i
    d2x = tl.load(base + m).to(tl.float64) - sx_i
    d2y = tl.load(base + m + 1).to(tl.float64) - sy_i
    e2x = tl.load(base + m + 2).to(tl.float64) - dx_i
    e2y = tl.load(base + m + 3).to(tl.float64) - dy_i
    det = d1x * d2y - d1y * d2x
    scale = tl.sqrt(d1x * d1x + d1y * d1y) * tl.sqrt(d2x * d2x + d2y * d2y)
    tiny = tl.full([BLOCK_TRIALS], 1e-9, tl.float64)
    degenerate = (tl.abs(det) <= tiny * scale) | ((e1x == 0) & (e1y == 0) & (e2x == 0) & (e2y == 0))
    inv = 1.0 / tl.where(degenerate, 1.0, det)
    m0x = (e1x * d2y - e2x * d1y) * inv
    m0y = (e1y * d2y - e2y * d1y) * inv
    m1x = (e2x * d1x - e1x * d2x) * inv
    m1y = (e2y * d1x - e1y * d2x) * inv
    tx = dx_i - m0x * sx_i - m1x * sy_i
    ty = dy_i - m0y * sx_i - m1y * sy_i
    count = tl.zeros([BLOCK_TRIALS], tl.int32)
    for p0 in range(0, k, BLOCK_POINTS):
        n = p0 + tl.arange(0, BLOCK_POINTS)
        nmask = n < k
        at = base + n.to(tl.int64) * 4
        sx = tl.load(at, mask=nmask, other=0.0).to(tl.float64)
        sy = tl.load(at + 1, mask=nmask, other=0.0).to(tl.float64)
        dx = tl.load(at + 2, mask=nmask, other=0.0).to(tl.float64)
        dy = tl.load(at + 3, mask=nmask, other=0.0).to(tl.float64)
        rx = m0x[:, None] * sx[None, :] + m1x[:, None] * sy[None, :] + tx[:, None] - dx[None, :]
        ry = m0y[:, None] * sx[None, :] + m1y[:, None] * sy[None, :] + ty[:, None] - dy[None, :]
        inside = ((rx * rx + ry * ry) < limit) & nmask[None, :]
        count += tl.sum(inside.to(tl.int32), axis=1)
    count = tl.where(degenerate, 0, count)
    tl.store(counts + pair.to(tl.int64) * trials + t, count.to(tl.int16), mask=tmask)


def counts_triton(points: torch.Tensor, starts: torch.Tensor, sizes: torch.Tensor, samples: torch.Tensor,
                  threshold: float, *, blocks: dict[str, int] | None = None) -> torch.Tensor:
    """What :func:`landmark.gpu.ransac.counts_torch` gives, from :func:`_counts_kernel`
    (``blocks``: :data:`COUNTS_BLOCKS` by default)."""
    blocks = blocks or COUNTS_BLOCKS
    pairs, trials = len(sizes), samples.shape[1]
    out = torch.empty((pairs, trials), dtype=torch.int16, device=points.device)
    if pairs == 0:
        return out
    limit = torch.tensor([float(threshold) ** 2], dtype=torch.float64, device=points.device)
    _counts_kernel[(pairs, triton.cdiv(trials, blocks["trials"]))](
        points, starts, sizes.int(), samples, out, limit, trials,
        BLOCK_TRIALS=blocks["trials"], BLOCK_POINTS=blocks["points"], num_warps=blocks["warps"],
    )
    return out
