"""A job's parameters, checked when it is submitted so that a bad request fails before it is queued."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import config as cfg
from ..errors import ConfigError
from ..matching import MatchConfig


def index_parameters(sources: Sequence[str]) -> dict[str, Any]:
    if isinstance(sources, str) or not sources or not all(isinstance(s, str) and s.strip() for s in sources):
        raise ConfigError("sources: give at least one source (a path or URI), as a list of strings")
    return {"sources": list(sources)}


def query_parameters(
    image: str, *, top_k: int, add: bool, matching: dict[str, Any] | None = None, evidence: bool = False
) -> dict[str, Any]:
    """``evidence``: the JSON gives each match's inlier correspondences too."""
    if not isinstance(image, str) or not image.strip():
        raise ConfigError("image: give the query image's path or URI")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ConfigError(f"top_k: must be a whole number of at least 1, got {top_k!r}")
    overrides = {k: v for k, v in (matching or {}).items() if v is not None}
    cfg.resolve(MatchConfig, overrides, environ={})  # unknown options and bad values fail here
    return {"image": image, "top_k": top_k, "add": bool(add), "evidence": bool(evidence), "matching": overrides}
