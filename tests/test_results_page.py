"""Evidence and the results page end to end: the CLI and a query job on real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import LANDMARKS

pytestmark = pytest.mark.integration

SACRE = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))
OTHERS = sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))[:2] + sorted(LANDMARKS.glob("_distractors*/*.jpg"))[:2]


def landmark(*args: str, database_url: str, scheduler: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    env.update(LANDMARK_DATABASE_URL=database_url, LANDMARK_DASK_SCHEDULER=scheduler,
               LANDMARK_RESULTS=str(cwd / "results"))
    done = subprocess.run([sys.executable, "-m", "landmark.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def test_query_evidence_and_page_from_the_cli_and_a_job(database_url: str, dask_cluster_address: str,
                                                        tmp_path: Path) -> None:
    run = {"database_url": database_url, "scheduler": dask_cluster_address, "cwd": tmp_path}
    landmark("index", *map(str, SACRE[1:7] + OTHERS), "--extractor", "aliked", **run)
    shown = landmark("query", str(SACRE[0]), "--no-add", "--html", "--evidence", "--out", "q", **run)
    assert f"wrote {tmp_path / 'q.txt'}, {tmp_path / 'q.json'}, {tmp_path / 'q.html'}" in shown.stdout

    document = json.loads((tmp_path / "q.json").read_text())
    matches = document["matches"]
    assert [Path(m["uri"]).parent.name for m in matches[:6]] == ["sacre_coeur"] * 6
    threshold = document["matching"]["ransac_threshold"]
    for match in matches:
        # Verified again on the client: the same matching and RANSAC with the same seed count the same.
        rows = np.array(match["correspondences"])
        assert len(rows) == match["inliers"], match["uri"]
        transform = match["transform"]
        assert transform["model"] == "affine" and transform["query_size"] == matches[0]["transform"]["query_size"]
        assert max(transform["query_size"]) == 1024  # pixels of the decoded image, at max_image_side
        mapped = np.column_stack([rows[:, :2], np.ones(len(rows))]) @ np.array(transform["matrix"]).T
        assert (np.linalg.norm(mapped[:, :2] - rows[:, 2:], axis=1) < threshold).all()
    assert document["timings_s"]["evidence"] > 0

    page = (tmp_path / "q.html").read_text()
    assert page.count('<li class="match ') == len(matches)
    assert '<li class="match strong" id="rank-1">' in page and matches[0]["uri"] in page
    assert "<script" not in page and page.count("data:image/jpeg;base64,") == len(matches) + 1

    # A query job writes its page too, and `landmark result` fetches it.
    job = landmark("submit", "query", str(SACRE[0]), "--no-add", **run).stdout.split()[0]
    landmark("result", job, "--format", "html", "--out", "job.html", **run)
    job_page = (tmp_path / "job.html").read_text()
    assert job_page.count('<li class="match ') == len(matches) and matches[0]["uri"] in job_page
    job_json = json.loads(landmark("result", job, "--format", "json", **run).stdout)
    assert "correspondences" not in job_json["matches"][0]  # only on request
    assert job_json["matches"][0]["transform"] == matches[0]["transform"]
