"""Name -> (config class, extractor class). Modules are imported when first used, not at import."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .. import config as cfg
from ..errors import ConfigError, ModelLoadError, UnknownExtractorError
from .base import Extractor

log = logging.getLogger(__name__)

AUTO = "auto"

EXTRACTORS: dict[str, tuple[str, str, str]] = {
    # name: (module, config class, extractor class)
    "aliked": ("landmark.extractors.aliked", "AlikedConfig", "AlikedExtractor"),
    "delf": ("landmark.extractors.delf", "DelfConfig", "DelfExtractor"),
    "rootsift": ("landmark.extractors.rootsift", "RootSiftConfig", "RootSiftExtractor"),
}


def extractor_names(*, with_auto: bool = True) -> list[str]:
    return ([AUTO] if with_auto else []) + sorted(EXTRACTORS)


def _entry(name: str) -> tuple[type, type]:
    if name not in EXTRACTORS:
        raise UnknownExtractorError(name, extractor_names())
    module_name, config_name, extractor_name = EXTRACTORS[name]
    # A plugin that fails to import is an error here, never a silently missing name.
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, extractor_name)


def config_class(name: str) -> type:
    return _entry(name)[0]


def make_config(name: str, options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Any:
    """The typed config of extractor ``name``: ``options`` > environment > defaults."""
    return cfg.resolve(config_class(name), options, environ)


AUTO_ORDER = ("delf", "aliked", "rootsift")
"""What ``auto`` tries, best first: DELF needs its model (a download), ALIKED ships with the
package but needs ONNX Runtime, RootSIFT needs nothing."""


def create(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    announce: Callable[[str], None] = log.info,
) -> Extractor:
    """Build the extractor ``name`` (or pick one for ``auto``) with ``options`` applied.

    ``auto`` takes the first of :data:`AUTO_ORDER` that loads; ``announce`` is told which one it
    chose and why the better ones were passed over.
    """
    if name == AUTO:
        known = set().union(*(cfg.field_names(config_class(n)) for n in AUTO_ORDER))
        unknown = sorted(set(options or {}) - known)
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r} for extractor auto; valid options: {', '.join(sorted(known))}"
            )
        passed: list[str] = []
        for candidate in AUTO_ORDER:
            try:
                extractor = create(candidate, _options_for(candidate, options), environ=environ)
            except ModelLoadError as error:
                if candidate == AUTO_ORDER[-1]:
                    raise
                passed.append(f"{candidate} unavailable: {error}")
                continue
            loaded = [f"model {extractor.config.model}"] if candidate == "delf" else []
            why = f" ({'; '.join(loaded + passed)})" if loaded or passed else ""
            announce(f"extractor auto: chose {candidate}{why}")
            return extractor
    config_cls, extractor_cls = _entry(name)
    return extractor_cls(cfg.resolve(config_cls, options, environ))


def _options_for(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The subset of ``options`` that extractor ``name`` understands (``auto`` passes all it has)."""
    valid = set(cfg.field_names(config_class(name)))
    return {k: v for k, v in (options or {}).items() if k in valid}
