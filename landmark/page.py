"""A query's results page: one self-contained HTML file (inline CSS, pictures as ``data:`` URIs,
drawings as inline SVG, no script), so it can be mailed, kept, or opened with no server.

The query's picture comes first, then the matches, best first: each drawn beside the query with
its inlier correspondences as lines and the query's frame outlined on it (:mod:`landmark.drawing`),
with its rank, inliers, putative matches and URI. A match with fewer than :data:`WEAK_FACTOR`
times ``min_inliers`` inliers is dimmed and labelled weak: that is as far as chance matches of
unrelated photos reach. Pictures are the stored thumbnails (:mod:`landmark.thumbnails`); the
query's is embedded once and shown in every drawing by reference. Every URI is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from html import escape
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from . import drawing, thumbnails

if TYPE_CHECKING:
    from .results import QueryResult

WEAK_FACTOR = 2
"""A match with fewer than this many times ``min_inliers`` inliers is shown as weak (the
default 5 makes it under 10, where the street scenes of the shared landmarks stop)."""

QUERY_SYMBOL = "query-picture"

CSS = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; padding: 24px; background: #f4f4f1; color: #222; }
header { display: flex; gap: 24px; align-items: flex-start; margin-bottom: 24px; }
header svg { flex: none; border-radius: 4px; }
h1 { font-size: 20px; margin: 0 0 6px; }
.uri { font-family: ui-monospace, monospace; font-size: 13px; overflow-wrap: anywhere; margin: 4px 0; }
.legend span { padding: 0 6px; border-radius: 3px; }
.legend .strong { border-left: 4px solid #1f9d55; }
.legend .weak { border-left: 4px dashed #999; }
ol.matches { list-style: none; padding: 0; margin: 0; display: grid; gap: 16px;
             grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); }
li.match { background: #fff; padding: 12px; border-radius: 6px; box-shadow: 0 1px 3px #0002;
           border-left: 5px solid #1f9d55; }
li.match.weak { border-left: 5px dashed #999; background: #fafafa; color: #666; }
li.match.weak svg.pair { opacity: 0.6; }
svg.pair { width: 100%; height: auto; display: block; }
.caption { margin: 8px 0 0; }
.rank { display: inline-block; min-width: 24px; padding: 0 6px; margin-right: 6px; border-radius: 12px;
        background: #222; color: #fff; text-align: center; font-weight: 600; }
.weak .rank { background: #999; }
.tag { margin-left: 8px; padding: 0 6px; border-radius: 3px; background: #e4e4e4; font-size: 12px; }
.none { font-size: 17px; }
.lines path { fill: none; stroke-width: 1; stroke-opacity: 0.85; }
.c0 { stroke: #ff3b30; } .c1 { stroke: #34c759; } .c2 { stroke: #0a84ff; }
.c3 { stroke: #ffcc00; } .c4 { stroke: #bf5af2; } .c5 { stroke: #00e0e0; }
.outline { fill: #ffd60a22; stroke: #ffd60a; stroke-width: 2.5; stroke-linejoin: round; }
.missing { fill: #ddd; }
footer { margin-top: 24px; color: #666; font-size: 13px; }
"""


def render(result: QueryResult, query_picture: bytes, pictures: Mapping[str, bytes]) -> str:
    """The page of ``result``, its matches verified again (``result.evidence``); ``query_picture``
    is the query's thumbnail and ``pictures`` the stored ones by URI (a match without one is
    drawn as a grey box)."""
    query_size = thumbnails.size(query_picture)
    min_inliers = int(result.matching.get("min_inliers", 0))
    model = result.matching.get("verification", "affine")
    name = PurePosixPath(result.query.rstrip("/")).name or result.query
    items = "\n".join(
        _match(rank, match.uri, match.inliers, match.putative_matches, result, query_size, pictures, min_inliers)
        for rank, match in enumerate(result.matches, start=1)
    )
    compared = result.counts.get("compared", 0)
    summary = (
        f"{len(result.matches)} of {compared} stored images shown, best first: those with at least "
        f"{min_inliers} inliers ({escape(str(result.extractor.get('name', '')))} features, {escape(model)} "
        f"verification), at most {result.top_k}."
    )
    listing = f'<ol class="matches">\n{items}\n</ol>' if items else (
        f'<p class="none">No stored image has {min_inliers} or more inliers with this photo.</p>'
    )
    width, height = query_size
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>landmark: {escape(name)}</title><style>{CSS}</style></head>
<body>
<svg width="0" height="0" style="position:absolute" aria-hidden="true">\
<symbol id="{QUERY_SYMBOL}" viewBox="0 0 {width} {height}">\
<image href="{data_uri(query_picture)}" width="{width}" height="{height}"/></symbol></svg>
<header>
<svg class="query" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" \
aria-label="the query photo"><use href="#{QUERY_SYMBOL}" width="{width}" height="{height}"/></svg>
<div>
<h1>Query</h1>
<p class="uri" id="query-uri">{escape(result.query)}</p>
<p>{summary}</p>
<p class="legend"><span class="strong">strong</span> {WEAK_FACTOR * min_inliers} inliers or more &nbsp; \
<span class="weak">weak</span> fewer, as far as chance matches of unrelated photos reach</p>
</div>
</header>
{listing}
<footer>Lines join inlier correspondences (at most {drawing.MAX_LINES} a match); the yellow outline is the \
query's frame where the fitted {escape(model)} transformation puts it on the stored photo.</footer>
</body></html>
"""


def _match(
    rank: int, uri: str, inliers: int, putative: int, result: QueryResult, query_size: tuple[int, int],
    pictures: Mapping[str, bytes], min_inliers: int,
) -> str:
    picture = pictures.get(uri)
    stored_size = thumbnails.size(picture) if picture is not None else query_size
    found = result.evidence.get(uri)
    query_decoded = found.query_size if found else query_size
    stored_decoded = found.stored_size if found else stored_size
    query, stored, size = drawing.side_by_side(query_size, query_decoded, stored_size, stored_decoded)
    svg = drawing.pair_svg(
        query, f"#{QUERY_SYMBOL}", stored, data_uri(picture) if picture is not None else None, size,
        found.correspondences if found else None, found.matrix if found else None,
        f"rank {rank}: the query beside {uri}",
    )
    weak = inliers < WEAK_FACTOR * min_inliers
    notes = ['<span class="tag">weak</span>'] if weak else []
    if found is None:
        notes.append('<span class="tag">no evidence: the image left the store</span>')
    elif picture is None:
        notes.append('<span class="tag">no picture stored</span>')
    return (
        f'<li class="match {"weak" if weak else "strong"}" id="rank-{rank}">{svg}'
        f'<p class="caption"><span class="rank">{rank}</span><b class="inliers">{inliers} inliers</b> of '
        f'{putative} putative matches{"".join(notes)}</p>'
        f'<p class="uri">{escape(uri)}</p></li>'
    )


def data_uri(jpeg: bytes) -> str:
    """A JPEG as a ``data:`` URI."""
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
