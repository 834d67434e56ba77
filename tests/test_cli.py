"""The command line as a user runs it: embedded Postgres, local Dask cluster, no settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LANDMARKS
from landmark.cli import build_parser

PHOTOS = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))[:5] + sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))


def run(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    env["LANDMARK_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "landmark.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_help_names_every_command_and_option() -> None:
    parser = build_parser()
    text = parser.format_help()
    assert all(command in text for command in ("index", "query", "info"))
    query_help = parser._subparsers._group_actions[0].choices["query"].format_help()
    for option in ("--top-k", "--out", "--no-add", "--min-inliers", "--database-url", "LANDMARK_DASK_SCHEDULER"):
        assert option in query_help


@pytest.mark.integration
def test_index_query_info_on_the_embedded_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in PHOTOS:
        (folder / f"{path.parent.name}-{path.name}").write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")

    indexed = run("index", str(folder), "--extractor", "rootsift", "-E", "max_features=600", home=home, cwd=tmp_path)
    assert indexed.returncode == 0, indexed.stderr
    assert f"stored {len(PHOTOS)}, skipped 0 unchanged, failed 1 (of {len(PHOTOS) + 1})" in indexed.stdout
    assert f"failed: {(folder / 'broken.jpg').as_uri()}: " in indexed.stderr

    query = folder / f"sacre_coeur-{PHOTOS[0].name}"
    queried = run("query", str(query), "--top-k", "3", "--no-add", home=home, cwd=tmp_path)
    assert queried.returncode == 0, queried.stderr
    lines = queried.stdout.splitlines()
    assert lines[0].startswith(f"query: {query.as_uri()} (")
    results = tmp_path / "results" / query.stem
    ranking = (results.parent / (results.name + ".txt")).read_text().splitlines()
    assert 1 <= len(ranking) <= 3
    assert all(line.split("\t")[2].startswith((folder / "sacre_coeur-").as_uri()) for line in ranking)
    document = json.loads((results.parent / (results.name + ".json")).read_text())
    assert document["extractor"]["config"]["max_features"] == 600
    assert [m["uri"] for m in document["matches"]] == [line.split("\t")[2] for line in ranking]

    info = run("info", "--json", home=home, cwd=tmp_path)
    stats = json.loads(info.stdout)
    assert (stats["images"], stats["extractor"]) == (len(PHOTOS), "rootsift")
    assert str(home) in stats["store"]


@pytest.mark.integration
def test_errors_exit_non_zero_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bad = run("index", str(PHOTOS[0]), "--extractor", "sift", home=home, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith("landmark index: error: unknown extractor 'sift'; valid names: auto, aliked, delf, rootsift")
    missing = run("query", str(tmp_path / "nope.jpg"), "--extractor", "rootsift", home=home, cwd=tmp_path)
    assert missing.returncode == 2
    assert f"landmark query: error: {(tmp_path / 'nope.jpg').as_uri()}: no such file" in missing.stderr
