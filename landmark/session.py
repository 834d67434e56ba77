"""The library's front door: one object that holds the settings and opens what they name.

    with Session() as lm:
        lm.index(["photos/"])
        result = lm.query("photos/eiffel.jpg", top_k=10, out="results/eiffel")

A session opens the store, the extractor and the Dask client when first needed and keeps
them until :meth:`close`, so a long-lived process (a worker) pays for each once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import config as cfg
from . import evidence as proof
from . import thumbnails
from .clusters import dask_client
from .contract import Features
from .embedded import embedded_url
from .extractors import registry
from .extractors.base import Extractor
from .indexing import IndexReport, decode_and_extract, gather, index_uris, sha256
from .matching import PRESETS, MatchConfig
from .page import render
from .results import QueryResult, write
from .retrieval.build import train_if_due
from .retrieval.plan import search_plan
from .retrieval.vlad import vlad
from .search import PartitionCache, rank, search, search_shortlist
from .settings import Settings
from .sources import normalise, read_bytes
from .store import ExtractorSpec, Row, Store

if TYPE_CHECKING:
    from .policy import SourcePolicy

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 20


class Session:
    """Settings plus the store, extractor and Dask client they lead to."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        extractor_options: Mapping[str, Any] | None = None,
        match_options: Mapping[str, Any] | None = None,
        announce: Callable[[str], None] = log.info,
    ) -> None:
        self.settings = settings or cfg.resolve(Settings)
        self.extractor_options = dict(extractor_options or {})
        self.match_options = dict(match_options or {})
        self.announce = announce
        self._store: Store | None = None
        self._extractor: Extractor | None = None
        self._client_cm: Any = None
        self._client: Any = None
        self._cache: PartitionCache | None = None

    # -- parts, opened on first use ------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    @property
    def extractor(self) -> Extractor:
        """The store's extractor; an unbound store is bound to the one the settings ask for."""
        if self._extractor is None:
            self._extractor = self._open_extractor()
        return self._extractor

    def _open_extractor(self) -> Extractor:
        name = self.settings.extractor
        bound = self.store.extractor_spec()
        if bound is None:
            extractor = registry.create(name, self.extractor_options, announce=self.announce)
            self.store.bind(spec_of(extractor))
            return extractor
        if name not in (registry.AUTO, bound.name):
            raise self.store.mismatch(bound, repr(name))
        # Options given now must agree with the store's; the rest come from the store.
        config_cls = registry.config_class(bound.name)
        given = {k: v for k, v in self.extractor_options.items() if k in cfg.field_names(config_cls)}
        asked = cfg.as_dict(cfg.resolve(config_cls, {**bound.config, **given}, environ={}))
        if asked != bound.config:
            raise self.store.mismatch(bound, ExtractorSpec(bound.name, asked).describe())
        extractor = registry.create(bound.name, bound.config, environ={})
        self.announce(f"extractor: {bound.name} (the store's)")
        return extractor

    @property
    def match_config(self) -> MatchConfig:
        return self.matching()

    def matching(self, overrides: Mapping[str, Any] | None = None) -> MatchConfig:
        """The extractor's matching preset, then the session's options, then ``overrides``."""
        options = {**self.match_options, **(overrides or {})}
        return cfg.resolve(MatchConfig, options, base=PRESETS[self.extractor.matching_preset])

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client_cm = dask_client(self.settings)
            self._client = self._client_cm.__enter__()
            workers = len(self._client.scheduler_info().get("workers", {}))
            self.announce(f"dask: connected to {self._client.scheduler.address} ({workers} workers)")
        return self._client

    @property
    def partition_cache(self) -> PartitionCache:
        if self._cache is None:
            self._cache = PartitionCache(self.client, self.store.url, self.settings.device, self.settings.gpu_descriptors)
        return self._cache

    def close(self) -> None:
        self._cache = None
        if self._client_cm is not None:
            self._client_cm.__exit__(None, None, None)
            self._client_cm = self._client = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ------------------------------------------------------------------------------

    def index(
        self, sources: Iterable[str], *, progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> IndexReport:
        """Index every image named by ``sources`` (see :mod:`landmark.sources`).

        A source, list line or directory entry that names no readable image (an empty S3
        prefix, an unreadable list, a bad line) is reported in the report's failures like a bad
        image; the rest are still indexed.
        """
        uris, unusable = gather(sources)
        if on_total is not None:
            on_total(len(uris))
        report = index_uris(self.store, self.extractor, list(uris), progress=progress,
                            max_pixels=self.settings.max_image_pixels) if uris else IndexReport()
        report.failed[:0] = unusable
        trained = train_if_due(self.store)
        if trained is not None:
            self.announce(trained.describe())
        return report

    def query(
        self,
        image: str,
        *,
        top_k: int = DEFAULT_TOP_K,
        out: str | None = None,
        add: bool = True,
        match_config: MatchConfig | None = None,
        progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        policy: SourcePolicy | None = None,
        evidence: str = "transform",
        page: bool = False,
    ) -> QueryResult:
        """Rank the stored images by verified inliers with ``image``; write files if ``out``.

        ``policy``: the sources ``image`` may come from (a job from the HTTP API); none: any.
        ``evidence``: what the JSON tells of each match's verification (:mod:`landmark.evidence`:
        ``transform``, ``inliers``, or ``none``, which saves verifying the matches again);
        ``page``: make the results page too (``result.page``, written as ``out``.html).
        """
        start = time.perf_counter()
        proof.check(evidence)
        match_config = match_config or self.match_config
        uri = normalise(image)
        data = read_bytes(uri, policy=policy)
        read_seconds = time.perf_counter() - start
        decoded, features = decode_and_extract(self.extractor, data, uri, max_pixels=self.settings.max_image_pixels)
        picture = thumbnails.encode(decoded)
        extract_seconds = time.perf_counter() - start - read_seconds
        result = self.query_features(
            uri, features, top_k=top_k, match_config=match_config, progress=progress, on_total=on_total
        )
        if evidence != "none" or page:
            proof.attach(result, self.store.fetch, features, match_config, evidence)
        if page:
            shown = thumbnails.Thumbnails(self.store).read(m.uri for m in result.matches)
            result.page = render(result, picture, shown)
        result.timings_s = {"read_query": read_seconds, "extract_query": extract_seconds, **result.timings_s}
        result.timings_s["total"] = time.perf_counter() - start
        # The files first: a query whose results cannot be written leaves the store as it was.
        result.added_to_store = add
        if out:
            write(result, out)
        if add:
            row = Row(uri, self.extractor.name, features, sha256(data), self.extractor.descriptor_encoding)
            self.store.upsert([row], also=thumbnails.Thumbnails(self.store).writer({uri: picture}))
        return result

    def query_features(
        self,
        uri: str,
        features: Features,
        *,
        top_k: int = DEFAULT_TOP_K,
        match_config: MatchConfig | None = None,
        progress: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> QueryResult:
        """Rank the stored images against already extracted ``features`` (of the image ``uri``,
        whose own row is left out). Features must come from the store's extractor."""
        timings: dict[str, float] = {}
        clock = start = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = now - clock
            clock = now

        match_config = match_config or self.match_config
        stored = self.store.count()
        client = self.client if stored else None
        lap("connect_dask")
        partitions = self.store.partitions(partition_size(stored, self.settings.partition_size, client))
        plan = search_plan(self.store, match_config, stored)
        if on_total is not None:
            on_total(len(partitions))
        lap("plan")
        if not partitions:
            candidates, loaded = [], 0
        elif plan.codebook is None:
            candidates, loaded = search(self.partition_cache, partitions, features, uri, match_config, progress)
        else:
            query_vector = vlad(features.descriptors, plan.codebook.centroids)
            candidates, loaded, shortlist_counts = search_shortlist(
                self.partition_cache, partitions, features, query_vector, plan.codebook.id, uri, match_config,
                progress,
            )
            plan.counts.update(shortlist_counts)
        lap("match")
        ranked = rank(candidates, min_inliers=match_config.min_inliers, top_k=top_k)
        lap("rank")
        timings["total"] = time.perf_counter() - start
        needed = max(3, match_config.min_inliers)
        spec = self.store.extractor_spec()
        return QueryResult(
            query=uri,
            store=self.store.location,
            extractor={"name": spec.name, "config": spec.config} if spec else {},
            matching=cfg.as_dict(match_config),
            top_k=top_k,
            matches=ranked,
            counts={
                "query_features": features.num_features,
                "partitions": len(partitions),
                "partitions_read": loaded,
                "compared": len(candidates),
                "verified": sum(c.putative_matches >= needed for c in candidates),
                "matched": sum(c.inliers >= match_config.min_inliers and c.inliers > 0 for c in candidates),
                "returned": len(ranked),
            },
            timings_s=timings,
            added_to_store=False,
            search=plan.to_json(),
        )

    def info(self) -> dict[str, Any]:
        from .retrieval.build import state

        return {**self.store.stats(), "index": state(self.store).describe()}


def partition_size(stored: int, largest: int, client: Any) -> int:
    """``largest`` images per task, unless that leaves a worker idle on a small store.

    Partitions are id blocks of this size; keeping the size fixed once the store is large keeps
    the blocks, and so the workers' cached copies, stable as it grows.
    """
    if client is None:
        return largest
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    return max(1, min(largest, -(-stored // workers)))


def open_store(settings: Settings) -> Store:
    """The store ``settings`` name: ``database_url``, else the embedded server under ``home``."""
    if settings.database_url:
        return Store(settings.database_url)
    home = settings.home_path
    return Store(embedded_url(home), location=f"embedded PostgreSQL in {home / 'pgdata'}")


def spec_of(extractor: Extractor) -> ExtractorSpec:
    return ExtractorSpec(extractor.name, cfg.as_dict(extractor.config))
