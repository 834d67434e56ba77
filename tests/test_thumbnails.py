"""Thumbnails: made from the decoded image, written with the features, filled in for older stores."""

from __future__ import annotations

import numpy as np
import psycopg2
import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark import thumbnails
from landmark.session import Session
from landmark.settings import Settings

PHOTOS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))[:3]


def test_a_thumbnail_keeps_the_aspect_and_is_never_enlarged() -> None:
    wide = thumbnails.encode(np.zeros((600, 1024, 3), np.uint8))
    assert wide[:3] == b"\xff\xd8\xff" and thumbnails.size(wide) == (256, 150)
    assert thumbnails.size(thumbnails.encode(np.zeros((100, 40, 3), np.uint8))) == (40, 100)


def execute(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


@pytest.mark.integration
def test_indexing_stores_a_thumbnail_per_image_and_fills_in_missing_ones(database_url: str) -> None:
    settings = cfg.resolve(Settings, {"database_url": database_url, "extractor": "rootsift"}, environ={})
    uris = [p.as_uri() for p in PHOTOS]
    with Session(settings) as lm:
        assert lm.index([str(p) for p in PHOTOS]).stored == 3
        stored = thumbnails.Thumbnails(lm.store).read(uris)
        assert execute(database_url, "SELECT version FROM landmark_thumbnails_schema") == [(1,)]  # its own list
        assert sorted(stored) == sorted(uris)
        sizes = dict(execute(database_url, "SELECT uri, array[width, height] FROM landmarks"))
        for uri, jpeg in stored.items():
            width, height = thumbnails.size(jpeg)
            decoded = sizes[uri]
            assert max(width, height) == thumbnails.SIDE  # the photos are larger than a thumbnail
            assert abs(width / height - decoded[0] / decoded[1]) < 0.01  # the features' image, shrunk

        # A store from before thumbnails: indexing again makes them, and changes no row.
        execute(database_url, "DELETE FROM thumbnails")
        revisions = execute(database_url, "SELECT uri, revision FROM landmarks ORDER BY uri")
        report = lm.index([str(p) for p in PHOTOS])
        assert (report.stored, report.unchanged) == (0, 3)
        assert sorted(thumbnails.Thumbnails(lm.store).read(uris)) == sorted(uris)
        assert execute(database_url, "SELECT uri, revision FROM landmarks ORDER BY uri") == revisions
        assert thumbnails.Thumbnails(lm.store).missing(uris + ["file:///elsewhere.jpg"]) == {"file:///elsewhere.jpg"}

    # A thumbnail goes with its image.
    execute(database_url, f"DELETE FROM landmarks WHERE uri = '{uris[0]}'")
    assert sorted(row[0] for row in execute(database_url, "SELECT uri FROM thumbnails")) == sorted(uris[1:])
