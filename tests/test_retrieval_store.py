"""The retrieval index with a real store and Dask: built, kept up to date, used by queries, and
never hiding an image it does not cover."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark.indexing import index_uris
from landmark.retrieval import build, table
from landmark.session import Session
from landmark.settings import Settings

pytestmark = pytest.mark.integration

SACRE = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))
BERLIN = sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))
OTHERS = sorted((LANDMARKS / "lightglue_building").glob("*.jpg"))


def session(database_url: str, scheduler: str) -> Session:
    settings = cfg.resolve(Settings, {"database_url": database_url, "dask_scheduler": scheduler,
                                      "extractor": "rootsift", "partition_size": 4}, environ={})
    return Session(settings, extractor_options={"max_features": "300"}, match_options={"shortlist": 3})


def ranked(result: object) -> list[tuple[str, int]]:
    return [(m.uri, m.inliers) for m in result.matches]  # type: ignore[attr-defined]


def test_an_index_shortlists_what_exhaustive_search_finds(database_url: str, dask_cluster_address: str) -> None:
    photos = SACRE[:5] + BERLIN[:3] + OTHERS[:3]
    with session(database_url, dask_cluster_address) as lm:
        lm.index([str(p) for p in photos])
        stored = lm.store.count()
        assert build.state(lm.store).codebook_id is None  # a small store: no index of its own yet
        before = lm.query(str(SACRE[0]), add=False)
        assert before.search["mode"] == "exhaustive" and "no retrieval index" in before.search["reason"]

        state = build.train(lm.store, words=4)
        assert (state.coverage.images, state.coverage.indexed) == (stored, stored)
        index = lm.matching({"search": "index"})
        shortlisted = lm.query(str(SACRE[0]), add=False, match_config=index)
        exhaustive = lm.query(str(SACRE[0]), add=False, match_config=dataclasses.replace(index, search="exhaustive"))
        assert shortlisted.search["mode"] == "index" and shortlisted.search["shortlisted"] == 3
        assert shortlisted.counts["compared"] == 3
        # The shortlist holds the best matches, verified exactly as exhaustive search verifies them.
        assert ranked(shortlisted)[:3] == ranked(exhaustive)[:3]
        assert {Path(uri).parent.name for uri, _ in ranked(shortlisted)} == {"sacre_coeur"}
        assert all(m.score is not None for m in shortlisted.matches)
        auto = lm.query(str(SACRE[0]), add=False)  # about 10 images: under 4 x the shortlist
        assert auto.search["mode"] == "exhaustive" and "costs about as little" in auto.search["reason"]


def test_images_the_index_does_not_cover_are_verified_and_vectors_follow_writes(
    database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    with session(database_url, dask_cluster_address) as lm:
        lm.index([str(p) for p in BERLIN[:3] + OTHERS[:3]])
        build.train(lm.store, words=4)
        # Indexed with the index in place: vectors are written with the rows.
        lm.index([str(p) for p in SACRE[1:3]])
        assert build.state(lm.store).coverage.missing == 0
        # Written without their vectors (as after a crash between the two writes): not hidden.
        index_uris_without_vectors(lm, [p.as_uri() for p in SACRE[3:5]])
        assert build.state(lm.store).coverage.missing == 2
        result = lm.query(str(SACRE[0]), add=False, match_config=lm.matching({"search": "index", "shortlist": 1}))
        assert result.search["unindexed"] == 2 and result.counts["compared"] == 3
        assert {SACRE[3].as_uri(), SACRE[4].as_uri()} <= {uri for uri, _ in ranked(result)}

        # An image written anew: its old vector is no longer current.
        changed = tmp_path / "changed.jpg"
        changed.write_bytes(SACRE[1].read_bytes())
        lm.index([str(changed)])
        index_uris_without_vectors(lm, [changed.as_uri()], content=SACRE[2].read_bytes())
        assert build.state(lm.store).coverage.missing == 3

        first = build.state(lm.store).codebook_id
        state = build.train(lm.store, words=4)
        assert state.codebook_id != first and state.coverage.missing == 0
        with table.transaction(lm.store) as cur:
            cur.execute("SELECT id FROM retrieval_codebooks")
            assert [r[0] for r in cur.fetchall()] == [state.codebook_id]  # the old one is gone


def index_uris_without_vectors(lm: Session, uris: list[str], content: bytes | None = None) -> None:
    """Store ``uris`` as indexing does, less the retrieval vectors."""
    from unittest import mock

    if content is not None:
        Path(uris[0].removeprefix("file://")).write_bytes(content)
    with mock.patch("landmark.retrieval.build.add", return_value=0):
        index_uris(lm.store, lm.extractor, uris)
