"""Exceptions. Every message names the input at fault and the reason; tests check them word for word."""

from __future__ import annotations


class LandmarkError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(LandmarkError):
    """A setting or option has a value that cannot be used."""


class ImageError(LandmarkError):
    """One input image cannot be used. Batches report it and go on with the rest."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.reason = reason


class SourceError(LandmarkError):
    """A source (file, directory, list, S3 prefix) cannot be read or expanded."""


class ForbiddenSourceError(SourceError):
    """A source the service's policy does not allow (``LANDMARK_ALLOWED_SOURCES``).

    The message is the same whether or not the source exists, so a refusal tells nothing about
    the server's files.
    """


class TransientError(SourceError):
    """A source could not be reached for now (connection failure, throttling, a server error).

    Queue workers retry the work with backoff; one-off commands report it like any other failure.
    """


class UnknownExtractorError(ConfigError):
    """An extractor name that is not in the registry."""

    def __init__(self, name: str, valid: list[str]) -> None:
        super().__init__(f"unknown extractor {name!r}; valid names: {', '.join(valid)}")
        self.name = name
        self.valid = valid


class ModelLoadError(LandmarkError):
    """A model (the DELF SavedModel) cannot be loaded."""


class StoreError(LandmarkError):
    """The feature store cannot be reached or is not in a usable state."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (for now: queue workers retry)."""


class ExtractorMismatchError(StoreError):
    """The store was built with another extractor than the one asked for."""


class ResultsError(LandmarkError):
    """A query's results (or an upload) cannot be written where they were asked to go."""
