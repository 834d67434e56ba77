"""Which stored images a query verifies: all of them, or the retrieval index's shortlist.

``search = exhaustive`` verifies every image. ``index`` verifies the shortlist (and every image
the index does not cover yet); without an index it falls back to exhaustive and says why.
``auto`` (the default) uses the index once the store has one and holds at least
:data:`PAYS_FROM` times the shortlist: below that the verification saved is small.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import table

if TYPE_CHECKING:
    from ..matching import MatchConfig
    from ..store import Store

PAYS_FROM = 4


@dataclass
class SearchPlan:
    mode: str
    """``index`` or ``exhaustive``"""
    reason: str
    codebook: table.Codebook | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"mode": self.mode, "reason": self.reason, **self.counts}
        if self.codebook is not None:
            document["codebook"] = {"id": self.codebook.id, "words": len(self.codebook.centroids),
                                    "trained_on_images": self.codebook.images}
        return document


def search_plan(store: Store, config: MatchConfig, stored: int) -> SearchPlan:
    if config.search == "exhaustive":
        return SearchPlan("exhaustive", "asked for (search = exhaustive)")
    with table.transaction(store) as cur:
        codebook = table.current_codebook(cur)
    if codebook is None:
        return SearchPlan("exhaustive", "the store has no retrieval index yet (`landmark reindex` builds one)")
    if config.search == "auto" and stored < PAYS_FROM * config.shortlist:
        return SearchPlan("exhaustive", f"{stored} stored images: under {PAYS_FROM} x the shortlist of "
                          f"{config.shortlist}, verifying all costs about as little")
    return SearchPlan("index", f"shortlist of {config.shortlist} from the retrieval index", codebook,
                      {"shortlist": config.shortlist})
