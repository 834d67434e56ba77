"""Ranking candidates and writing the two results files."""

from __future__ import annotations

import json
from pathlib import Path

from landmark.results import QueryResult, output_paths, write
from landmark.search import Candidate, rank


def test_rank_orders_by_inliers_then_putatives_then_uri() -> None:
    candidates = [
        Candidate("s3://b/c.jpg", 30, 50), Candidate("s3://b/a.jpg", 30, 50), Candidate("s3://b/d.jpg", 30, 70),
        Candidate("s3://b/e.jpg", 90, 95), Candidate("s3://b/low.jpg", 4, 40), Candidate("s3://b/zero.jpg", 0, 0),
    ]
    ranked = rank(candidates, min_inliers=5, top_k=10)
    assert [c.uri for c in ranked] == ["s3://b/e.jpg", "s3://b/d.jpg", "s3://b/a.jpg", "s3://b/c.jpg"]
    assert [c.uri for c in rank(candidates, min_inliers=0, top_k=2)] == ["s3://b/e.jpg", "s3://b/d.jpg"]
    # An image with no inliers never counts as a match, whatever the minimum.
    assert "s3://b/zero.jpg" not in [c.uri for c in rank(candidates, min_inliers=0, top_k=10)]


def make_result() -> QueryResult:
    return QueryResult(
        query="file:///q.jpg", store="embedded", extractor={"name": "rootsift", "config": {}},
        matching={"rule": "ratio"}, top_k=5,
        matches=[Candidate("file:///a b.jpg", 40, 60), Candidate("s3://b/k.jpg", 12, 30)],
        counts={"compared": 2}, timings_s={"match": 0.123456}, added_to_store=False,
    )


def test_output_paths_accept_a_stem_or_either_file(tmp_path: Path) -> None:
    stem = str(tmp_path / "r")
    assert output_paths(stem) == (stem + ".txt", stem + ".json")
    assert output_paths(stem + ".json") == (stem + ".txt", stem + ".json")
    assert output_paths("s3://bucket/out/q1.txt") == ("s3://bucket/out/q1.txt", "s3://bucket/out/q1.json")


def test_write_puts_the_ranking_in_both_files(tmp_path: Path) -> None:
    files = write(make_result(), str(tmp_path / "nested" / "q"))
    assert Path(files["txt"]).read_text() == "1\t40\tfile:///a b.jpg\n2\t12\ts3://b/k.jpg\n"
    document = json.loads(Path(files["json"]).read_text())
    assert document["query"] == "file:///q.jpg"
    assert document["matches"][1] == {"rank": 2, "uri": "s3://b/k.jpg", "inliers": 12, "putative_matches": 30}
    assert document["timings_s"] == {"match": 0.1235}
    assert not list((tmp_path / "nested").glob("*.tmp"))
