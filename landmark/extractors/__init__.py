"""Extractor registry: plugins chosen by name, each with a typed config of named defaults.

``auto`` is not an extractor of its own: it picks ``delf`` when the DELF model loads, else
``aliked`` (shipped with the package, run by ONNX Runtime), else ``rootsift`` (see
:func:`landmark.extractors.registry.create`).
"""

from .registry import AUTO, EXTRACTORS, config_class, create, extractor_names, make_config

__all__ = ["AUTO", "EXTRACTORS", "config_class", "create", "extractor_names", "make_config"]
