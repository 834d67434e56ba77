"""The DELF path end to end: a SavedModel of DELF's signature, loaded through TF-Hub from a
local directory, indexing into Postgres and a query verified on Dask with the DELF preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import LANDMARKS
from delf_model import GRID_STEP, build_delf_savedmodel
from landmark import config as cfg
from landmark.session import Session
from landmark.settings import Settings

pytestmark = pytest.mark.integration


def test_index_and_query_with_a_local_delf_savedmodel(
    tmp_path: Path, database_url: str, dask_cluster_address: str
) -> None:
    model = build_delf_savedmodel(tmp_path / "delf")
    photos = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))[:3] + sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))
    # The query: the first photo, cropped by a whole number of the model's grid steps.
    with Image.open(photos[0]) as image:
        shift = 2 * GRID_STEP
        image.convert("RGB").crop((shift, shift, image.width, image.height)).save(tmp_path / "query.png")

    settings = cfg.resolve(
        Settings, {"database_url": database_url, "dask_scheduler": dask_cluster_address, "extractor": "delf"},
        environ={},
    )
    announced: list[str] = []
    with Session(settings, extractor_options={"model": str(model)}, announce=announced.append) as lm:
        report = lm.index([str(p) for p in photos])
        assert report.stored == len(photos) and not report.failed
        result = lm.query(str(tmp_path / "query.png"), add=False, out=str(tmp_path / "out"))
        info = lm.info()
    assert info["extractor"] == "delf" and info["extractor_config"]["model"] == str(model)
    assert result.extractor["name"] == "delf"
    assert result.matching["rule"] == "distance" and result.matching["max_distance"] == 0.8
    assert result.matches[0].uri == photos[0].as_uri()
    runner_up = result.matches[1].inliers if len(result.matches) > 1 else 0
    assert result.matches[0].inliers > 50 and result.matches[0].inliers > 3 * runner_up
    assert (tmp_path / "out.json").is_file()
    # Reopening the store with `auto` and no options picks the store's DELF model.
    with Session(cfg.resolve(Settings, {"database_url": database_url}, environ={}), announce=announced.append) as lm:
        assert lm.extractor.name == "delf"
    assert announced[-1] == "extractor: delf (the store's)"
