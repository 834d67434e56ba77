"""The two results files of a query, written to a local path or an ``s3://`` URI.

``PATH.txt``: one line per match, best first, tab-separated ``rank  inliers  uri``.
``PATH.json``: the query, extractor, matching settings, the ranked matches, counts and
per-stage timings (seconds). ``PATH`` may name either file or the stem of both.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import s3
from .search import Candidate


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

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "store": self.store,
            "extractor": self.extractor,
            "matching": self.matching,
            "top_k": self.top_k,
            "matches": [
                {"rank": rank, "uri": m.uri, "inliers": m.inliers, "putative_matches": m.putative_matches}
                for rank, m in enumerate(self.matches, start=1)
            ],
            "counts": self.counts,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "added_to_store": self.added_to_store,
        }

    def to_text(self) -> str:
        return "".join(f"{rank}\t{m.inliers}\t{m.uri}\n" for rank, m in enumerate(self.matches, start=1))


def output_paths(out: str) -> tuple[str, str]:
    """``(txt, json)`` destinations for ``out`` (a stem, or either file's name)."""
    stem = out[: -len(Path(out).suffix)] if Path(out).suffix.lower() in (".txt", ".json") else out
    if not s3.is_s3(stem):
        stem = os.path.abspath(os.path.expanduser(stem))
    return stem + ".txt", stem + ".json"


def write(result: QueryResult, out: str) -> dict[str, str]:
    """Write both files; returns ``{"txt": ..., "json": ...}`` where they went."""
    txt_path, json_path = output_paths(out)
    text = result.to_text().encode()
    document = (json.dumps(result.to_json(), indent=2) + "\n").encode()
    put(txt_path, text, "text/plain")
    put(json_path, document, "application/json")
    result.files = {"txt": txt_path, "json": json_path}
    return result.files


def put(destination: str, data: bytes, content_type: str) -> None:
    """Write ``data`` to a local path or an ``s3://`` URI; readers never see half a file."""
    if s3.is_s3(destination):
        s3.write(destination, data, content_type=content_type)
        return
    path = Path(os.path.abspath(os.path.expanduser(destination)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
