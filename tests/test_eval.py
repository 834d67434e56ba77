"""``landmark eval``: the dataset layout, leave-one-out scoring through a Session, and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LANDMARKS
from landmark import config as cfg
from landmark.errors import SourceError
from landmark.evaluation import dataset_groups, evaluate
from landmark.settings import Settings

QUERY_KEYS = {"query", "extractor", "matching", "matches", "counts", "timings_s",
              "group", "relevant", "average_precision", "precision_at_1"}
SUMMARY_KEYS = {"dataset", "counts", "mean_average_precision", "precision_at_1", "per_group_map",
                "index_seconds", "images_per_second", "query_seconds", "index_failures", "extractor",
                "matching", "queries"}


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the layout --------------------------------------------------------------------------------


def test_dataset_groups_lists_the_images_of_each_group(tmp_path: Path) -> None:
    for name in ("b.jpg", "a.PNG", "notes.txt", ".hidden.jpg", "deeper/c.jpg"):
        touch(tmp_path / "tower" / name)
    touch(tmp_path / "_noise" / "n.jpg")
    (tmp_path / "empty").mkdir()
    touch(tmp_path / "groups.json")  # files other than images may sit in the root
    groups = dataset_groups(tmp_path)
    assert groups == {
        "_noise": [tmp_path / "_noise" / "n.jpg"],
        "tower": [tmp_path / "tower" / "a.PNG", tmp_path / "tower" / "b.jpg", tmp_path / "tower" / "deeper" / "c.jpg"],
    }


def test_dataset_groups_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceError) as error:
        dataset_groups(missing)
    assert str(error.value) == f"{missing}: no such directory"

    a_file = touch(tmp_path / "file.jpg")
    with pytest.raises(SourceError) as error:
        dataset_groups(a_file)
    assert str(error.value) == f"{a_file}: not a directory (expected a folder of <group>/<image> files)"

    flat = tmp_path / "flat"
    touch(flat / "readme.txt")
    with pytest.raises(SourceError) as error:
        dataset_groups(flat)
    assert str(error.value) == f"{flat}: no group folders (expected <group>/<image>)"

    touch(flat / "tower" / "1.jpg")
    touch(flat / "tower" / "2.jpg")
    touch(flat / "stray.jpg")
    with pytest.raises(SourceError) as error:
        dataset_groups(flat)
    assert str(error.value) == f"{flat}: image 'stray.jpg' is not in a group folder (expected <group>/<image>)"

    thin = tmp_path / "thin"
    for name in ("tower/1.jpg", "bridge/1.jpg", "_noise/1.jpg", "_noise/2.jpg"):
        touch(thin / name)
    with pytest.raises(SourceError) as error:
        dataset_groups(thin)
    assert str(error.value) == (
        f"{thin}: nothing to evaluate: no group (other than _distractor groups) has at least 2 images"
    )


def test_dataset_groups_follow_linked_folders(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere / "tower" / "1.jpg")
    touch(elsewhere / "tower" / "2.jpg")
    touch(elsewhere / "more" / "3.jpg")
    root = tmp_path / "dataset"
    root.mkdir()
    (root / "tower").symlink_to(elsewhere / "tower")
    (elsewhere / "tower" / "more").symlink_to(elsewhere / "more")
    (elsewhere / "tower" / "loop").symlink_to(elsewhere / "tower")
    assert dataset_groups(root) == {
        "tower": [root / "tower" / "1.jpg", root / "tower" / "2.jpg", root / "tower" / "more" / "3.jpg"],
    }


# -- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 + 2 photos of two landmarks and 4 distractor street scenes."""
    root = tmp_path_factory.mktemp("dataset")
    picks = {
        "berliner_dom": sorted((LANDMARKS / "berliner_dom").glob("*.jpg"))[:3],
        "lightglue_building": sorted((LANDMARKS / "lightglue_building").glob("*.jpg"))[:2],
        "_distractors": sorted((LANDMARKS / "_distractors_lund_street").glob("*.jpg"))[:4],
    }
    for group, paths in picks.items():
        (root / group).mkdir()
        for path in paths:
            shutil.copy(path, root / group / path.name)
    assert [len(p) for p in picks.values()] == [3, 2, 4]
    return root


@pytest.mark.integration
def test_evaluate_scores_leave_one_out(
    database_url: str, dask_cluster_address: str, small_dataset: Path, tmp_path: Path
) -> None:
    from landmark.session import Session

    settings = cfg.resolve(Settings, {"database_url": database_url, "dask_scheduler": dask_cluster_address,
                                      "extractor": "rootsift"}, environ={})
    phases: list[tuple[str, int]] = []
    done: list[int] = []

    def progress(phase: str, total: int):  # noqa: ANN202
        phases.append((phase, total))
        return done.append

    out = tmp_path / "out"
    with Session(settings) as session:
        report = evaluate(session, small_dataset, out_dir=out, progress=progress)

    assert phases == [("index", 9), ("query", 5)] and sum(done) == 9 + 5
    assert (report.images, report.distractors, report.indexed, report.groups) == (9, 4, 9, 2)
    assert not report.index_failures and not report.query_failures
    assert len(report.queries) == 5
    assert 0.0 <= report.mean_average_precision <= 1.0 and 0.0 <= report.precision_at_1 <= 1.0
    assert all(q.precision_at_1 == 1.0 for q in report.queries), [(q.uri, q.precision_at_1) for q in report.queries]
    assert {q.group for q in report.queries} == {"berliner_dom", "lightglue_building"}
    assert report.extractor["name"] == "rootsift" and report.matching["rule"] == "mutual"
    assert any(line.startswith("mAP:       ") for line in report.summary_lines())

    files = sorted((out / "queries").iterdir())
    assert len(files) == 5
    for path in files:
        document = json.loads(path.read_text())
        assert QUERY_KEYS <= set(document), path
        group, _, stem = path.stem.partition("__")
        assert document["group"] == group
        assert document["query"] == (small_dataset / group / f"{stem}.jpg").as_uri()
        assert document["query"] not in document["relevant"]
        assert len(document["relevant"]) == {"berliner_dom": 2, "lightglue_building": 1}[group]
        assert document["precision_at_1"] == 1.0 and 0.0 <= document["average_precision"] <= 1.0
        assert document["added_to_store"] is False
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["counts"] == {
        "groups": 2, "distractor_groups": 1, "images": 9, "distractors": 4, "indexed": 9, "reused": 0,
        "index_failures": 0,
        "queries": 5, "query_failures": 0, "not_queried": 0,
    }
    assert summary["mean_average_precision"] == report.mean_average_precision
    assert set(summary["per_group_map"]) == {"berliner_dom", "lightglue_building"}
    assert set(summary["query_seconds"]) == {"mean", "median", "total"}
    assert summary["extractor"]["config"]["max_features"] == 1000


@pytest.mark.integration
def test_the_eval_command_uses_a_temporary_store_and_removes_it(small_dataset: Path, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDMARK_")}
    env.update(TMPDIR=str(temp), LANDMARK_DASK_WORKERS="2")
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "landmark.cli", "eval", str(small_dataset), "--extractor", "rootsift", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^mAP:       [01]\.\d{3}$", done.stdout, re.M), done.stdout
    assert re.search(r"^P@1:       1\.000$", done.stdout, re.M), done.stdout
    assert f"wrote {out / 'summary.json'} and 5 query files in {out / 'queries'}" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["queries"] == 5 and summary["dataset"] == str(small_dataset)
    assert len(list((out / "queries").glob("*.json"))) == 5

    assert "kept" not in done.stdout
    removed = re.search(r"^store: temporary, removed \((.+)\)$", done.stdout, re.M)
    assert removed, done.stdout
    store = Path(removed.group(1))
    assert store.parent == temp and store.name.startswith("landmark-eval-")
    assert not store.exists()
    assert not list(temp.glob("landmark-eval-*"))


@pytest.mark.integration
def test_the_eval_command_refuses_a_store_that_holds_other_images(
    database_url: str, small_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from landmark.cli import main
    from landmark.session import Session

    settings = cfg.resolve(Settings, {"database_url": database_url, "extractor": "rootsift"}, environ={})
    with Session(settings) as session:
        session.index([str(next((LANDMARKS / "sacre_coeur").iterdir()))])
    assert main(["eval", str(small_dataset), "--database-url", database_url]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"landmark eval: error: the store {database_url} holds 1 image that are not part of the evaluation; it "
        "needs a store with none (leave out --database-url, LANDMARK_DATABASE_URL and --home to use a "
        "temporary store)"
    )


@pytest.mark.integration
def test_the_eval_command_adds_distractor_folders_and_reuses_a_store_of_the_same_images(
    database_url: str, small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from landmark.cli import main

    extra = tmp_path / "more_streets"
    extra.mkdir()
    for path in sorted((LANDMARKS / "_distractors_lund_street").glob("*.jpg"))[4:7]:
        shutil.copy(path, extra / path.name)
    args = ["eval", str(small_dataset), "--distractors", str(extra), "--database-url", database_url,
            "--extractor", "rootsift", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert f"dataset:   {small_dataset} + {extra} (2 groups + 2 distractor groups; 12 images, 7 distractors)" in first
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["distractor_folders"] == [str(extra)]
    assert (summary["counts"]["indexed"], summary["counts"]["reused"]) == (12, 0)
    # The same evaluation again on the kept store: nothing is extracted anew, the scores are the same.
    assert main(args) == 0
    assert "; 12 already in the store" in capsys.readouterr().out
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert again["mean_average_precision"] == summary["mean_average_precision"]
    assert (again["counts"]["indexed"], again["counts"]["reused"]) == (12, 12)


@pytest.mark.integration
def test_evaluate_follows_group_folders_that_are_links(
    database_url: str, dask_cluster_address: str, small_dataset: Path, tmp_path: Path
) -> None:
    from landmark.session import Session

    linked = tmp_path / "linked"
    linked.mkdir()
    for group in small_dataset.iterdir():
        (linked / group.name).symlink_to(group)
    settings = cfg.resolve(Settings, {"database_url": database_url, "dask_scheduler": dask_cluster_address,
                                      "extractor": "rootsift"}, environ={})
    with Session(settings) as session:
        report = evaluate(session, linked)
        stored = sorted(session.store.content_hashes([p.as_uri() for p in linked.glob("*/*.jpg")]))
    assert (report.images, report.indexed, len(report.queries)) == (9, 9, 5)
    assert stored == sorted(p.as_uri() for p in linked.glob("*/*.jpg")) and len(stored) == 9
    assert all(q.precision_at_1 == 1.0 for q in report.queries)


@pytest.mark.integration
def test_an_evaluation_that_indexed_nothing_is_refused(
    database_url: str, small_dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As when indexing did not see the images (linked groups used to be skipped): no mAP of 0, an error."""
    from landmark.cli import main
    from landmark.indexing import IndexReport
    from landmark.session import Session

    monkeypatch.setattr(Session, "index", lambda self, sources, **_: IndexReport())
    assert main(["eval", str(small_dataset), "--database-url", database_url, "--extractor", "rootsift"]) == 2
    captured = capsys.readouterr()
    assert "mAP" not in captured.out
    assert captured.err.strip().endswith(
        f"landmark eval: error: {small_dataset}: nothing to evaluate: none of its 9 images was indexed (0 failed)"
    )
