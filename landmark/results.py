"""The results files of a query, written to a local path or an ``s3://`` URI.

``PATH.txt``: one line per match, best first, tab-separated ``rank  inliers  uri``.
``PATH.json``: the query, extractor, matching settings, the ranked matches (with their evidence,
:mod:`landmark.evidence`), counts and per-stage timings (seconds). ``PATH.html``, when a page was
made (:mod:`landmark.page`): the results page. ``PATH`` may name any of them or their stem.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import s3
from .errors import ResultsError
from .search import Candidate

if TYPE_CHECKING:
    from .evidence import Evidence


@dataclass
class QueryResult:
    """Everything a query produced; :meth:`to_json` is the JSON file's content."""

    query: str
    store: str
    extractor: dict[str, Any]
    matching: dict[str, Any]
    top_k: int
    matches: list[Candidate]
    counts: dict[str, int]
    timings_s: dict[str, float]
    added_to_store: bool
    files: dict[str, str] = field(default_factory=dict)
    evidence: dict[str, Evidence] = field(default_factory=dict)
    """By URI, for the matches verified again (:func:`landmark.evidence.attach`)."""
    evidence_level: str = "none"
    """What the JSON carries of it: ``none``, ``transform`` or ``inliers``."""
    page: str | None = None
    """The results page's HTML, written as ``PATH.html``."""
    search: dict[str, Any] = field(default_factory=dict)
    """how the stored images to verify were chosen (:mod:`landmark.retrieval.plan`)"""

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "store": self.store,
            "extractor": self.extractor,
            "matching": self.matching,
            "top_k": self.top_k,
            "search": self.search,
            "matches": [
                {"rank": rank, "uri": m.uri, "inliers": m.inliers, "putative_matches": m.putative_matches,
                 **({} if m.score is None else {"index_score": round(m.score, 4)}),
                 **self._evidence_json(m.uri)}
                for rank, m in enumerate(self.matches, start=1)
            ],
            "counts": self.counts,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "added_to_store": self.added_to_store,
        }

    def _evidence_json(self, uri: str) -> dict[str, Any]:
        if self.evidence_level == "none":
            return {}
        found = self.evidence.get(uri)
        if found is None:  # gone from the store since it was ranked
            return {"transform": None}
        return found.to_json(correspondences=self.evidence_level == "inliers")

    def to_text(self) -> str:
        return "".join(f"{rank}\t{m.inliers}\t{m.uri}\n" for rank, m in enumerate(self.matches, start=1))


def output_paths(out: str) -> tuple[str, str]:
    """``(txt, json)`` destinations for ``out`` (a stem, or either file's name)."""
    stem = out[: -len(Path(out).suffix)] if Path(out).suffix.lower() in (".txt", ".json", ".html") else out
    if not s3.is_s3(stem):
        stem = os.path.abspath(os.path.expanduser(stem))
    return stem + ".txt", stem + ".json"


def write(result: QueryResult, out: str) -> dict[str, str]:
    """Write the files; returns ``{"txt": ..., "json": ...}`` (and ``"html"``) where they went."""
    txt_path, json_path = output_paths(out)
    text = result.to_text().encode()
    document = (json.dumps(result.to_json(), indent=2) + "\n").encode()
    put(txt_path, text, "text/plain")
    put(json_path, document, "application/json")
    result.files = {"txt": txt_path, "json": json_path}
    if result.page is not None:
        result.files["html"] = json_path[: -len(".json")] + ".html"
        put(result.files["html"], result.page.encode(), "text/html; charset=utf-8")
    return result.files


def put(destination: str, data: bytes, content_type: str) -> None:
    """Write ``data`` to a local path or an ``s3://`` URI; readers never see half a file, and a
    write that fails leaves nothing behind (:class:`ResultsError` names the destination)."""
    if s3.is_s3(destination):
        s3.write(destination, data, content_type=content_type)
        return
    path = Path(os.path.abspath(os.path.expanduser(destination)))
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise ResultsError(f"{destination}: cannot write ({error.strerror or error})") from None


def remove(destination: str) -> None:
    """Delete what :func:`put` wrote at ``destination`` (and its folder, once empty); a missing
    file is no error."""
    if s3.is_s3(destination):
        s3.delete(destination)
        return
    path = Path(os.path.abspath(os.path.expanduser(destination)))
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        path.parent.rmdir()
