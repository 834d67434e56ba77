"""Retrieval quality: average precision and precision at 1 of a ranking (pure functions), and
:func:`evaluate`, which indexes a ``<group>/<image>`` dataset and scores leave-one-out retrieval.

Nothing heavy is imported here: the session (store, extractor, Dask) is the caller's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import config as cfg
from .retrieval.build import state, train
from .errors import SourceError
from .sources import is_image_name, walk

if TYPE_CHECKING:
    from .session import Session


def average_precision(ranked: Sequence[str], relevant: Collection[str]) -> float:
    """Mean over the relevant items of the precision at each one's rank.

    A relevant item missing from ``ranked`` (dropped, or never retrieved) contributes 0, so a
    ranking that finds nothing relevant scores 0. With no relevant items at all, AP is 1.
    """
    relevant = set(relevant)
    if not relevant:
        return 1.0
    hits = 0
    total = 0.0
    for position, item in enumerate(ranked, start=1):
        if item in relevant:
            hits += 1
            total += hits / position
    return total / len(relevant)


def precision_at_1(ranked: Sequence[str], relevant: Collection[str]) -> float:
    return 1.0 if ranked and ranked[0] in set(relevant) else 0.0


# -- a whole dataset: leave-one-out retrieval --------------------------------------------------
#
# A dataset is a folder of group folders, ``<group>/<image>`` (images may also sit deeper inside
# a group folder). Groups whose name starts with ``_`` are distractors: indexed, never queried,
# never relevant. Every other image is queried against all the others; its relevant set is the
# rest of its group.

DISTRACTOR_PREFIX = "_"
QUERIES_DIR = "queries"
SUMMARY_FILE = "summary.json"


def is_distractor(group: str) -> bool:
    return group.startswith(DISTRACTOR_PREFIX)


def _images(folder: Path) -> list[Path]:
    """The image files under ``folder``, as indexing the folder finds them (links followed)."""
    return [item for item in walk(folder) if isinstance(item, Path)]


def dataset_groups(root: Path) -> dict[str, list[Path]]:
    """``{group: [image paths, sorted]}`` of the dataset folder ``root``, groups sorted by name.

    Paths are absolute, unresolved (as :func:`landmark.sources.expand` names them; a group
    folder may be a link); hidden files and folders are skipped, and so are group folders
    without images. Raises
    :class:`~landmark.errors.SourceError` when ``root`` is not a folder, holds no group folder,
    holds an image outside the group folders, or has no group to query (a non-distractor group
    with at least 2 images).
    """
    root = Path(os.path.abspath(os.path.expanduser(root)))
    if not root.exists():
        raise SourceError(f"{root}: no such directory")
    if not root.is_dir():
        raise SourceError(f"{root}: not a directory (expected a folder of <group>/<image> files)")
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    loose = [p.name for p in entries if p.is_file() and is_image_name(p.name)]
    if loose:
        raise SourceError(
            f"{root}: image {loose[0]!r} is not in a group folder (expected <group>/<image>)"
        )
    folders = [p for p in entries if p.is_dir()]
    if not folders:
        raise SourceError(f"{root}: no group folders (expected <group>/<image>)")
    groups: dict[str, list[Path]] = {}
    for folder in folders:
        images = _images(folder)
        if images:
            groups[folder.name] = images
    if not any(len(images) >= 2 for group, images in groups.items() if not is_distractor(group)):
        raise SourceError(
            f"{root}: nothing to evaluate: no group (other than _distractor groups) has at least 2 images"
        )
    return groups


def with_distractors(groups: dict[str, list[Path]], folders: Sequence[Path | str]) -> dict[str, list[Path]]:
    """``groups`` plus one distractor group per folder of ``folders`` (``_<folder name>``, every
    image under it), for a collection larger than the dataset. Raises
    :class:`~landmark.errors.SourceError` for a folder that does not exist or holds no image."""
    groups = dict(groups)
    for folder in folders:
        folder = Path(os.path.abspath(os.path.expanduser(folder)))
        if not folder.is_dir():
            raise SourceError(f"{folder}: no such directory (--distractors takes a folder of images)")
        images = _images(folder)
        if not images:
            raise SourceError(f"{folder}: no images to add as distractors")
        name = DISTRACTOR_PREFIX + folder.name
        while name in groups:
            name += "_"
        groups[name] = images
    return groups


@dataclass
class QueryScore:
    """One leave-one-out query and how it scored."""

    group: str
    uri: str
    average_precision: float
    precision_at_1: float
    seconds: float
    relevant: int
    """how many other images of its group were stored"""
    file: str | None = None
    exhaustive: ShortlistCheck | None = None
    """the same query verifying every image, when this one verified the index's shortlist"""


@dataclass(frozen=True)
class ShortlistCheck:
    """An index query against the same query verifying every stored image."""

    average_precision: float
    precision_at_1: float
    verified: int
    """images exhaustive verification ranks (at least ``min_inliers``)"""
    kept: int
    """of those, images the shortlist kept"""
    verified_relevant: int
    """of the verified, images of the query's own group"""
    kept_relevant: int


@dataclass
class EvalReport:
    """What :func:`evaluate` measured; :meth:`to_json` is ``summary.json``."""

    dataset: str
    distractor_folders: list[str]
    groups: int
    """groups that are queried (not distractors)"""
    distractor_groups: int
    images: int
    """image files found, distractors included"""
    distractors: int
    """distractor images"""
    indexed: int
    """images in the store after indexing (stored or unchanged)"""
    reused: int
    """of those, images the store already held unchanged (not extracted again)"""
    index_seconds: float
    index_failures: list[tuple[str, str]]
    extractor: dict[str, Any]
    matching: dict[str, Any]
    queries: list[QueryScore] = field(default_factory=list)
    query_failures: list[tuple[str, str]] = field(default_factory=list)
    not_queried: list[str] = field(default_factory=list)
    """non-distractor images left without another stored image of their group"""
    out_dir: str | None = None

    @property
    def mean_average_precision(self) -> float:
        return _mean([q.average_precision for q in self.queries])

    @property
    def precision_at_1(self) -> float:
        return _mean([q.precision_at_1 for q in self.queries])

    @property
    def per_group_map(self) -> dict[str, float]:
        by_group: dict[str, list[float]] = {}
        for q in self.queries:
            by_group.setdefault(q.group, []).append(q.average_precision)
        return {group: _mean(aps) for group, aps in sorted(by_group.items())}

    @property
    def shortlist(self) -> dict[str, Any] | None:
        """Recall of the index's shortlists against exhaustive verification, and both modes' scores."""
        checks = [q.exhaustive for q in self.queries if q.exhaustive is not None]
        if not checks:
            return None
        verified, verified_relevant = sum(c.verified for c in checks), sum(c.verified_relevant for c in checks)
        return {
            "queries": len(checks),
            "recall": sum(c.kept for c in checks) / verified if verified else 1.0,
            "recall_same_place": sum(c.kept_relevant for c in checks) / verified_relevant if verified_relevant else 1.0,
            "index": {"mean_average_precision": _mean([q.average_precision for q in self.queries if q.exhaustive]),
                      "precision_at_1": _mean([q.precision_at_1 for q in self.queries if q.exhaustive])},
            "exhaustive": {"mean_average_precision": _mean([c.average_precision for c in checks]),
                           "precision_at_1": _mean([c.precision_at_1 for c in checks])},
        }

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.index_seconds if self.index_seconds > 0 else 0.0

    @property
    def query_seconds(self) -> dict[str, float]:
        seconds = [q.seconds for q in self.queries]
        return {
            "mean": _mean(seconds),
            "median": statistics.median(seconds) if seconds else 0.0,
            "total": sum(seconds),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "distractor_folders": self.distractor_folders,
            "counts": {
                "groups": self.groups,
                "distractor_groups": self.distractor_groups,
                "images": self.images,
                "distractors": self.distractors,
                "indexed": self.indexed,
                "reused": self.reused,
                "index_failures": len(self.index_failures),
                "queries": len(self.queries),
                "query_failures": len(self.query_failures),
                "not_queried": len(self.not_queried),
            },
            "mean_average_precision": self.mean_average_precision,
            "precision_at_1": self.precision_at_1,
            "per_group_map": self.per_group_map,
            "shortlist": self.shortlist,
            "index_seconds": round(self.index_seconds, 4),
            "images_per_second": round(self.images_per_second, 4),
            "query_seconds": {k: round(v, 4) for k, v in self.query_seconds.items()},
            "index_failures": [{"uri": uri, "reason": reason} for uri, reason in self.index_failures],
            "query_failures": [{"uri": uri, "reason": reason} for uri, reason in self.query_failures],
            "not_queried": self.not_queried,
            "extractor": self.extractor,
            "matching": self.matching,
            "queries": [
                {
                    "group": q.group, "query": q.uri, "relevant": q.relevant,
                    "average_precision": q.average_precision, "precision_at_1": q.precision_at_1,
                    "seconds": round(q.seconds, 4), "file": q.file,
                }
                for q in self.queries
            ],
        }

    def summary_lines(self) -> list[str]:
        options = ", ".join(f"{k}={v}" for k, v in sorted(self.extractor.get("config", {}).items()))
        seconds = self.query_seconds
        extra = f" + {', '.join(self.distractor_folders)}" if self.distractor_folders else ""
        lines = [
            f"dataset:   {self.dataset}{extra} ({self.groups} groups + {self.distractor_groups} distractor groups; "
            f"{self.images} images, {self.distractors} distractors)",
            f"extractor: {self.extractor.get('name')} ({options})",
            f"indexed:   {self.indexed} images in {self.index_seconds:.1f} s ({self.images_per_second:.1f} images/s); "
            f"{len(self.index_failures)} failed" + (f"; {self.reused} already in the store" if self.reused else ""),
            f"queries:   {len(self.queries)} in {seconds['total']:.1f} s; "
            f"mean {seconds['mean']:.3f} s, median {seconds['median']:.3f} s per query",
        ]
        if self.query_failures:
            lines.append(f"           {len(self.query_failures)} queries failed")
        if self.not_queried:
            lines.append(f"           {len(self.not_queried)} images not queried (no other stored image in their group)")
        lines += [
            f"mAP:       {self.mean_average_precision:.3f}",
            f"P@1:       {self.precision_at_1:.3f}",
            "per group: " + ", ".join(f"{group} {value:.3f}" for group, value in self.per_group_map.items()),
        ]
        shortlist = self.shortlist
        if shortlist is not None:
            lines += [
                f"shortlist: recall {shortlist['recall']:.3f} of the images exhaustive verification ranks, "
                f"{shortlist['recall_same_place']:.3f} of those of the same place ({shortlist['queries']} queries)",
                f"           exhaustive: mAP {shortlist['exhaustive']['mean_average_precision']:.3f}, "
                f"P@1 {shortlist['exhaustive']['precision_at_1']:.3f}; index: mAP "
                f"{shortlist['index']['mean_average_precision']:.3f}, P@1 {shortlist['index']['precision_at_1']:.3f}",
            ]
        return lines


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def query_file_names(queries: Sequence[tuple[str, Path]]) -> dict[Path, str]:
    """``<group>__<image stem>.json`` per ``(group, path)``; the full name where stems collide."""
    stems: dict[str, int] = {}
    for group, path in queries:
        key = f"{group}__{path.stem}"
        stems[key] = stems.get(key, 0) + 1
    names = {}
    for group, path in queries:
        key = f"{group}__{path.stem}"
        base = key if stems[key] == 1 else f"{group}__{path.name}"
        names[path] = base.replace(os.sep, "_") + ".json"
    return names


def evaluate(
    session: Session,
    root: Path | str,
    *,
    distractors: Sequence[Path | str] = (),
    out_dir: Path | str | None = None,
    progress: Callable[[str, int], Callable[[int], None]] | None = None,
) -> EvalReport:
    """Index the dataset ``root`` (and the ``distractors`` folders, see :func:`with_distractors`)
    through ``session`` and score leave-one-out retrieval.

    The session's store should hold nothing but these images (a store an earlier evaluation of
    the same images kept is fine: unchanged images are not extracted again); anything else takes
    part in the rankings as an irrelevant image. Images that fail to index are reported and take no part (neither as
    queries nor as relevant images). With ``out_dir``, writes ``queries/<group>__<stem>.json``
    per query and ``summary.json``. ``progress(phase, total)`` is called when each phase starts
    (``"index"``: images, ``"query"``: queries) and returns a callable taking how many items
    were just done.
    """
    from .errors import ImageError

    root = Path(os.path.abspath(os.path.expanduser(root)))
    folders = [Path(os.path.abspath(os.path.expanduser(folder))) for folder in distractors]
    groups = with_distractors(dataset_groups(root), folders)
    group_of = {path.as_uri(): group for group, paths in groups.items() for path in paths}
    _ = session.extractor  # open the store and load the model before the clock starts

    update: Callable[[int], None] | None = None

    def on_total(total: int) -> None:
        nonlocal update
        update = progress("index", total) if progress else None

    def indexed_some(n: int) -> None:
        if update is not None:
            update(n)

    start = time.perf_counter()
    report = session.index([str(root), *map(str, folders)], progress=indexed_some, on_total=on_total)
    index_seconds = time.perf_counter() - start

    # Only what the store holds takes part: an image indexing failed on, or never saw, does not.
    failed = {uri for uri, _ in report.failed}
    present = session.store.content_hashes(list(group_of))
    stored = {uri: group for uri, group in group_of.items() if uri in present and uri not in failed}
    if not stored:
        raise SourceError(
            f"{root}: nothing to evaluate: none of its {len(group_of)} images was indexed "
            f"({len(report.failed)} failed)"
        )
    members: dict[str, set[str]] = {}
    for uri, group in stored.items():
        members.setdefault(group, set()).add(uri)
    extractor = session.extractor
    evaluation = EvalReport(
        dataset=str(root),
        distractor_folders=[str(folder) for folder in folders],
        groups=sum(not is_distractor(g) for g in groups),
        distractor_groups=sum(is_distractor(g) for g in groups),
        images=len(group_of),
        distractors=sum(is_distractor(g) for g in group_of.values()),
        indexed=report.stored + report.unchanged,
        reused=report.unchanged,
        index_seconds=index_seconds,
        index_failures=list(report.failed),
        extractor={"name": extractor.name, "config": cfg.as_dict(extractor.config)},
        matching=cfg.as_dict(session.match_config),
        out_dir=str(out_dir) if out_dir is not None else None,
    )

    queries: list[tuple[str, Path]] = []
    for group, paths in groups.items():
        if is_distractor(group):
            continue
        for path in paths:
            uri = path.as_uri()
            if uri not in stored:
                continue
            if len(members[group]) < 2:
                evaluation.not_queried.append(uri)
            else:
                queries.append((group, path))
    if not queries:
        raise SourceError(
            f"{root}: nothing to evaluate: {len(report.failed)} images failed to index and no group "
            "(other than _distractor groups) has 2 stored images"
        )
    names = query_file_names(queries)
    queries_dir = Path(out_dir) / QUERIES_DIR if out_dir is not None else None
    if queries_dir is not None:
        queries_dir.mkdir(parents=True, exist_ok=True)

    top_k = max(1, session.store.count())
    config = session.match_config
    if config.search != "exhaustive" and state(session.store).codebook_id is None:
        train(session.store)  # an evaluation measures the index too, however small the store
    exhaustive = dataclasses.replace(config, search="exhaustive")
    _ = session.client  # start (or reach) the Dask cluster before the first query is timed
    step = progress("query", len(queries)) if progress else None
    for group, path in queries:
        uri = path.as_uri()
        relevant = members[group] - {uri}
        clock = time.perf_counter()
        try:
            result = session.query(uri, top_k=top_k, add=False, evidence="none")
        except (ImageError, SourceError) as error:
            evaluation.query_failures.append((uri, getattr(error, "reason", str(error))))
            if step is not None:
                step(1)
            continue
        seconds = time.perf_counter() - clock
        ranked = [m.uri for m in result.matches]
        score = QueryScore(
            group=group, uri=uri, average_precision=average_precision(ranked, relevant),
            precision_at_1=precision_at_1(ranked, relevant), seconds=seconds, relevant=len(relevant),
        )
        if result.search.get("mode") == "index":
            score.exhaustive = check_shortlist(
                ranked, [m.uri for m in session.query(uri, top_k=top_k, add=False, match_config=exhaustive).matches],
                relevant,
            )
        if queries_dir is not None:
            document = {
                **result.to_json(),
                "group": group,
                "relevant": sorted(relevant),
                "average_precision": score.average_precision,
                "precision_at_1": score.precision_at_1,
            }
            target = queries_dir / names[path]
            _write_json(target, document)
            score.file = str(target)
        evaluation.queries.append(score)
        if step is not None:
            step(1)

    if out_dir is not None:
        _write_json(Path(out_dir) / SUMMARY_FILE, evaluation.to_json())
    return evaluation


def check_shortlist(ranked: Sequence[str], exhaustive: Sequence[str], relevant: Collection[str]) -> ShortlistCheck:
    """How the ranking of a shortlist, ``ranked``, compares with the ranking of exhaustive
    verification, ``exhaustive`` (both: URIs with at least ``min_inliers``, best first)."""
    kept = set(ranked)
    relevant = set(relevant)
    verified_relevant = [u for u in exhaustive if u in relevant]
    return ShortlistCheck(
        average_precision=average_precision(exhaustive, relevant), precision_at_1=precision_at_1(exhaustive, relevant),
        verified=len(exhaustive), kept=sum(u in kept for u in exhaustive),
        verified_relevant=len(verified_relevant), kept_relevant=sum(u in kept for u in verified_relevant),
    )


def _write_json(path: Path, document: dict[str, Any]) -> None:
    from .results import put

    put(str(path), (json.dumps(document, indent=2) + "\n").encode(), "application/json")
