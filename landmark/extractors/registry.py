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


def create(
    name: str,
    options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    announce: Callable[[str], None] = log.info,
) -> Extractor:
    """Build the extractor ``name`` (or pick one for ``auto``) with ``options`` applied.

    ``auto`` tries DELF first and falls back to RootSIFT when the model cannot be loaded;
    ``announce`` is told which one it chose and why.
    """
    if name == AUTO:
        known = set(cfg.field_names(config_class("delf"))) | set(cfg.field_names(config_class("rootsift")))
        unknown = sorted(set(options or {}) - known)
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r} for extractor auto; valid options: {', '.join(sorted(known))}"
            )
        try:
            extractor = create("delf", _options_for("delf", options), environ=environ)
        except ModelLoadError as error:
            announce(f"extractor auto: chose rootsift (DELF unavailable: {error})")
            return create("rootsift", _options_for("rootsift", options), environ=environ)
        announce(f"extractor auto: chose delf (model {extractor.config.model})")
        return extractor
    config_cls, extractor_cls = _entry(name)
    return extractor_cls(cfg.resolve(config_cls, options, environ))


def _options_for(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The subset of ``options`` that extractor ``name`` understands (``auto`` passes all it has)."""
    valid = set(cfg.field_names(config_class(name)))
    return {k: v for k, v in (options or {}).items() if k in valid}
