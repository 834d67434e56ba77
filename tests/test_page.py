"""Unit tests of the results page: what it draws is what the JSON says, read back from the HTML."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ElementTree

import numpy as np

from landmark import drawing, thumbnails
from landmark.evidence import Evidence
from landmark.page import render
from landmark.results import QueryResult
from landmark.search import Candidate

QUERY_SIZE, STORED_SIZE = (800, 600), (1024, 700)
"""Decoded sizes (width, height): the thumbnails (256 x 192 and 256 x 175) scale x and y differently."""

AFFINE = np.array([[0.5, 0.05, 300.0], [-0.04, 0.6, 120.0], [0.0, 0.0, 1.0]])


def picture(size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return thumbnails.encode(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def evidence(count: int, seed: int) -> Evidence:
    rng = np.random.default_rng(seed)
    query = rng.uniform(0, 1, (count, 2)) * QUERY_SIZE
    stored = np.column_stack([query, np.ones(count)]) @ AFFINE.T
    return Evidence("affine", AFFINE, QUERY_SIZE, STORED_SIZE, np.column_stack([query, stored[:, :2]]))


def result_with(matches: list[Candidate], found: dict[str, Evidence]) -> QueryResult:
    result = QueryResult(
        query="file:///photos/q.jpg", store="s", extractor={"name": "aliked"},
        matching={"min_inliers": 5, "verification": "affine"}, top_k=20, matches=matches,
        counts={"compared": 40}, timings_s={}, added_to_store=False,
    )
    result.evidence, result.evidence_level = found, "inliers"
    return result


def drawings(page: str) -> dict[int, ElementTree.Element]:
    """Each match's ``<svg class="pair">``, parsed, by rank."""
    found = {}
    pattern = r'<li class="match \w+" id="rank-(\d+)">(<svg class="pair".*?</svg>)<p class="caption">'
    for rank, svg in re.findall(pattern, page):
        found[int(rank)] = ElementTree.fromstring(svg)
    return found


def drawn_lines(svg: ElementTree.Element) -> np.ndarray:
    """``[N x 4]`` segments of the drawing's lines, back in the order they were given."""
    by_colour = {}
    for path in svg.iter("path"):
        numbers = [float(v) for v in re.findall(r"-?\d+\.?\d*", path.get("d"))]
        by_colour[int(path.get("class")[1:])] = np.array(numbers).reshape(-1, 4)
    count = sum(len(segments) for segments in by_colour.values())
    lines = np.zeros((count, 4))
    for colour, segments in by_colour.items():
        lines[colour::drawing.COLOURS] = segments
    return lines


def box(element: ElementTree.Element) -> tuple[float, float, float, float]:
    return tuple(float(element.get(k, 0)) for k in ("x", "y", "width", "height"))


def test_drawn_correspondences_and_outline_are_the_json_evidence() -> None:
    uri = "file:///photos/a.jpg"
    result = result_with([Candidate(uri, 40, 55)], {uri: evidence(40, 0)})
    stored_picture = picture(STORED_SIZE, 1)
    page = render(result, picture(QUERY_SIZE, 2), {uri: stored_picture})
    match = result.to_json()["matches"][0]
    svg = drawings(page)[1]

    qx, qy, qw, qh = box(svg.find("use"))
    nested = svg.find("svg")
    sx, sy, sw, sh = box(nested)
    assert (qw, qh, sw, sh) == (256, 192, 256, 175)
    assert sx == qw + drawing.GAP  # the stored picture to the right of the query
    image = nested.find("image").get("href")
    assert base64.b64decode(image.removeprefix("data:image/jpeg;base64,")) == stored_picture

    rows = np.array(match["correspondences"])
    qsize, ssize = match["transform"]["query_size"], match["transform"]["stored_size"]
    expected = np.column_stack([
        qx + rows[:, 0] * qw / qsize[0], qy + rows[:, 1] * qh / qsize[1],
        sx + rows[:, 2] * sw / ssize[0], sy + rows[:, 3] * sh / ssize[1],
    ])
    np.testing.assert_allclose(drawn_lines(svg), expected, atol=0.06)  # drawn to 0.1 unit, JSON to 0.01 px

    corners = np.array([[0, 0], [qsize[0], 0], [qsize[0], qsize[1]], [0, qsize[1]]], float)
    on_stored = np.column_stack([corners, np.ones(4)]) @ np.array(match["transform"]["matrix"]).T
    outline = np.array([p.split(",") for p in nested.find("polygon").get("points").split()], float)
    np.testing.assert_allclose(outline, on_stored[:, :2] * (sw / ssize[0], sh / ssize[1]), atol=0.051)


def test_many_inliers_are_thinned_to_an_even_spread_of_them() -> None:
    uri = "s3://bucket/many.jpg"
    found = evidence(450, 3)
    page = render(result_with([Candidate(uri, 450, 600)], {uri: found}), picture(QUERY_SIZE, 4),
                  {uri: picture(STORED_SIZE, 5)})
    lines = drawn_lines(drawings(page)[1])
    assert len(lines) == drawing.MAX_LINES
    query_scale = np.array([256 / QUERY_SIZE[0], 192 / QUERY_SIZE[1]])  # the query at (0, 0), the taller one
    first = found.correspondences[drawing.spread(450)][:, :2] * query_scale
    np.testing.assert_allclose(lines[:, :2], first, atol=0.051)
    assert drawing.spread(450)[[0, -1]].tolist() == [0, 449]


def test_weak_matches_are_marked_and_uris_are_escaped() -> None:
    strange = 'file:///photos/<script>alert("x")</script>&.jpg'
    matches = [Candidate("file:///photos/a.jpg", 10, 30), Candidate(strange, 9, 30)]
    page = render(result_with(matches, {m.uri: evidence(m.inliers, i) for i, m in enumerate(matches)}),
                  picture(QUERY_SIZE, 6), {})
    assert '<li class="match strong" id="rank-1">' in page and '<li class="match weak" id="rank-2">' in page
    assert "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;.jpg" in page
    assert page.count('<rect class="missing"') == 2  # no thumbnails stored: grey boxes, lines still drawn
    assert "http://" not in page and "https://" not in page  # nothing to fetch: the page stands alone


def test_a_page_without_matches_says_so() -> None:
    page = render(result_with([], {}), picture(QUERY_SIZE, 7), {})
    assert "No stored image has 5 or more inliers with this photo." in page and not drawings(page)


def test_projection_refuses_points_behind_the_camera() -> None:
    flips = np.array([[1.0, 0, 0], [0, 1, 0], [-0.01, 0, 1]])
    assert drawing.project(flips, [[50, 0]]) is not None
    assert drawing.project(flips, [[200, 0]]) is None  # w = -1: the frame folds over, no outline
    np.testing.assert_allclose(drawing.project(AFFINE, [[0, 0]]), [[300, 120]])
