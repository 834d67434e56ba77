"""Geometry and SVG of one match: the two pictures side by side, the inlier correspondences as
lines between them, and the query's frame outlined where the fitted transformation puts it on
the stored picture. Pure functions: arrays in, arrays or strings out.

Drawing units: SVG user units of one match's drawing, x to the right and y down. Each picture is
drawn at its thumbnail's size at an offset (:class:`Placement`); a feature's location, in pixels
of the decoded image it was extracted from, lands at ``offset + location * drawn size / decoded
size`` on each axis (a thumbnail keeps its decoded image's aspect, up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

import numpy as np

GAP = 16
"""Units between the two pictures, so that lines between them can be seen to cross over."""

MAX_LINES = 100
"""Correspondences drawn per match at most (evenly spread over them): more hide the pictures."""

COLOURS = 6
"""Line colours, cycled (CSS classes ``c0`` ... ``c5``): neighbouring lines can be told apart."""


@dataclass(frozen=True)
class Placement:
    """Where one picture lies in a drawing: top-left corner and drawn size in drawing units, and
    the ``(width, height)`` of the decoded image its feature locations are in."""

    x: float
    y: float
    width: int
    height: int
    decoded: tuple[int, int]

    def place(self, points: np.ndarray) -> np.ndarray:
        """``[N x 2]`` decoded pixels -> ``[N x 2]`` drawing units."""
        scale = np.array([self.width / self.decoded[0], self.height / self.decoded[1]])
        return np.asarray(points, dtype=np.float64).reshape(-1, 2) * scale + (self.x, self.y)


def side_by_side(
    query_drawn: tuple[int, int], query_decoded: tuple[int, int],
    stored_drawn: tuple[int, int], stored_decoded: tuple[int, int],
) -> tuple[Placement, Placement, tuple[int, int]]:
    """The query on the left and the stored picture :data:`GAP` to its right, both centred
    vertically; returns both placements and the drawing's ``(width, height)``."""
    height = max(query_drawn[1], stored_drawn[1])
    query = Placement(0, (height - query_drawn[1]) / 2, *query_drawn, query_decoded)
    stored = Placement(query_drawn[0] + GAP, (height - stored_drawn[1]) / 2, *stored_drawn, stored_decoded)
    return query, stored, (query_drawn[0] + GAP + stored_drawn[0], height)


def frame(size: tuple[int, int]) -> np.ndarray:
    """float64 ``[4 x 2]``: the corners of a ``(width, height)`` image, clockwise from top left."""
    width, height = size
    return np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]])


def project(matrix: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    """``[N x 2]`` points mapped by the ``[3 x 3]`` homogeneous ``matrix``; ``None`` when one of
    them goes to infinity or behind the camera (a homography's third coordinate not positive)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    mapped = np.column_stack([points, np.ones(len(points))]) @ np.asarray(matrix, dtype=np.float64).T
    if not np.all(np.isfinite(mapped)) or np.any(mapped[:, 2] <= 1e-12):
        return None
    return mapped[:, :2] / mapped[:, 2:]


def spread(count: int, limit: int = MAX_LINES) -> np.ndarray:
    """int64 indices of at most ``limit`` of ``count`` items, evenly spread, in order."""
    if count <= limit:
        return np.arange(count)
    return np.unique(np.round(np.linspace(0, count - 1, limit)).astype(np.int64))


def lines_paths(starts: np.ndarray, ends: np.ndarray) -> str:
    """SVG ``<path>`` elements drawing a segment from each row of ``starts`` ``[N x 2]`` to the
    same row of ``ends`` (drawing units): one path per colour class, segment ``i`` in ``c{i % COLOURS}``."""
    starts = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
    ends = np.asarray(ends, dtype=np.float64).reshape(-1, 2)
    paths = []
    for colour in range(min(COLOURS, len(starts))):
        segments = "".join(
            f"M{a[0]:.1f} {a[1]:.1f}L{b[0]:.1f} {b[1]:.1f}"
            for a, b in zip(starts[colour::COLOURS], ends[colour::COLOURS])
        )
        paths.append(f'<path class="c{colour}" d="{segments}"/>')
    return "".join(paths)


def polygon(points: np.ndarray, css_class: str) -> str:
    """An SVG ``<polygon>`` through ``[N x 2]`` points (drawing units)."""
    coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2))
    return f'<polygon class="{css_class}" points="{coordinates}"/>'


def pair_svg(
    query: Placement, query_href: str, stored: Placement, stored_href: str | None, size: tuple[int, int],
    correspondences: np.ndarray | None, matrix: np.ndarray | None, label: str,
) -> str:
    """One match's drawing as an inline ``<svg>`` element.

    ``query_href`` names the query's ``<symbol>`` (``#id``; the page defines it once, so its
    picture is embedded once however many matches show it); ``stored_href`` is the stored
    picture's URL (a ``data:`` URI), ``None`` for a grey box. ``correspondences`` float
    ``[I x 4]`` (query ``x, y``, stored ``x, y`` in decoded pixels) become lines, at most
    :data:`MAX_LINES`; ``matrix`` ``[3 x 3]`` (query to stored) outlines the query's frame on the
    stored picture, clipped to it. ``label`` is the drawing's accessible name.
    """
    width, height = size
    parts = [
        f'<svg class="pair" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}">',
        f'<use href="{escape(query_href)}" x="{query.x:.1f}" y="{query.y:.1f}" width="{query.width}" '
        f'height="{query.height}"/>',
        # The stored picture in a nested viewport, which clips the outline to it.
        f'<svg class="stored" x="{stored.x:.1f}" y="{stored.y:.1f}" width="{stored.width}" height="{stored.height}">',
    ]
    if stored_href is None:
        parts.append('<rect class="missing" width="100%" height="100%"/>')
    else:
        parts.append(f'<image href="{escape(stored_href)}" width="{stored.width}" height="{stored.height}"/>')
    outline = project(matrix, frame(query.decoded)) if matrix is not None else None
    if outline is not None:
        local = Placement(0, 0, stored.width, stored.height, stored.decoded)
        parts.append(polygon(local.place(outline), "outline"))
    parts.append("</svg>")
    if correspondences is not None and len(correspondences):
        drawn = np.asarray(correspondences, dtype=np.float64).reshape(-1, 4)[spread(len(correspondences))]
        parts.append(f'<g class="lines">{lines_paths(query.place(drawn[:, :2]), stored.place(drawn[:, 2:]))}</g>')
    parts.append("</svg>")
    return "".join(parts)

