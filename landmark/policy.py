"""Which sources a request to the HTTP API may name: the roots the operator allows.

The CLI reads any path (its user is the operator). The service reads only what
``LANDMARK_ALLOWED_SOURCES`` lists: absolute local directories, and ``s3://bucket/`` or
``s3://bucket/prefix/`` entries. Empty (the default), a request may name no source at all; a
query by upload still works, the server storing the image itself.

Two checks, at two times:

* :meth:`SourcePolicy.check`, at submit: lexical. The source is normalised (made absolute,
  ``..`` collapsed) and compared with the entries without touching the file system, so that the
  answer, and its message, are the same whether or not the path exists.
* :meth:`SourcePolicy.confirm`, where the job is carried out: the real path (symbolic links
  resolved) must lie under the real path of an allowed root, so that a link inside a root cannot
  lead out of it.

A job submitted through the API keeps its policy in its parameters (:data:`PARAMETER`), so that
a worker on another host applies the same one (:func:`from_parameters`); a job from the CLI has
none and is unconfined.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import s3
from .errors import ConfigError, ForbiddenSourceError, SourceError
from .sources import local_path, normalise

PARAMETER = "allowed_sources"
"""The job parameter holding the entries of the policy a job was submitted under."""

SETTING = "LANDMARK_ALLOWED_SOURCES"


@dataclass(frozen=True)
class SourcePolicy:
    """The local roots and S3 prefixes a request may name; nothing else."""

    roots: tuple[str, ...] = ()
    """absolute local directories, normalised (no ``..``, no trailing slash)"""
    prefixes: tuple[str, ...] = ()
    """``s3://bucket/`` or ``s3://bucket/prefix/``, always ending in ``/``"""

    @classmethod
    def parse(cls, entries: Iterable[str]) -> SourcePolicy:
        """The policy of ``entries`` (the setting's comma-separated items; blanks skipped).

        ``s3://bucket/prefix`` without the trailing slash is the folder ``prefix/``, as a local
        root is: it never allows ``s3://bucket/prefix2/``.
        """
        roots: list[str] = []
        prefixes: list[str] = []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            if s3.is_s3(entry):
                prefixes.append(_prefix(entry))
            elif "://" in entry or not os.path.isabs(entry):
                raise ConfigError(
                    f"allowed_sources: {entry!r} is neither an absolute directory nor an s3://bucket/prefix/ "
                    f"({SETTING})"
                )
            else:
                roots.append(os.path.abspath(entry))
        return cls(tuple(dict.fromkeys(roots)), tuple(dict.fromkeys(prefixes)))

    @property
    def entries(self) -> list[str]:
        """The entries as the setting and a job's parameters spell them."""
        return [*self.roots, *self.prefixes]

    def widened(self, entry: str) -> SourcePolicy:
        """This policy plus ``entry`` (a job's own upload folder)."""
        return SourcePolicy.parse([*self.entries, entry])

    def confine(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """A job's ``parameters`` with this policy recorded, for whoever carries the job out."""
        return {**parameters, PARAMETER: self.entries}

    def check(self, source: str, base: Path | None = None) -> str:
        """The identity URI of ``source`` when the policy allows it, else :class:`ForbiddenSourceError`.

        Lexical only: nothing on disk is looked at. A source that cannot be normalised (an
        unsupported scheme, a NUL character) raises its :class:`SourceError` as it is.
        """
        uri = normalise(source, base)
        reason = self._refusal(uri)
        if reason:
            raise ForbiddenSourceError(f"{source}: not allowed: {reason}")
        return uri

    def confirm(self, uri: str) -> None:
        """Refuse the identity URI ``uri`` when its real path (links resolved) leaves every root.

        For a path :meth:`check` allowed, only a symbolic link on the way can do that. S3 keys
        have no links: nothing to confirm.
        """
        if s3.is_s3(uri):
            return
        real = os.path.realpath(local_path(uri))
        if not any(_inside(real, os.path.realpath(root)) for root in self.roots):
            raise ForbiddenSourceError(
                f"{uri}: not allowed: a symbolic link leads outside the sources this service may read ({SETTING})"
            )

    def _refusal(self, uri: str) -> str | None:
        """Why the identity URI ``uri`` is not allowed; ``None`` when it is."""
        if not self.roots and not self.prefixes:
            return f"this service reads no sources named in requests ({SETTING} is empty)"
        if s3.is_s3(uri):
            _, key = s3.split(uri)
            # S3 keys are not paths, but a server or proxy may still collapse dot segments.
            if any(part in (".", "..") for part in key.split("/")):
                return "an S3 key may not hold '.' or '..' segments"
            allowed = any(uri.startswith(prefix) or uri + "/" == prefix for prefix in self.prefixes)
        else:
            allowed = any(_inside(str(local_path(uri)), root) for root in self.roots)
        return None if allowed else f"outside the sources this service may read ({SETTING})"


def from_parameters(parameters: Mapping[str, Any]) -> SourcePolicy | None:
    """The policy a job was submitted under; ``None`` (unconfined) for a job from the CLI."""
    entries = parameters.get(PARAMETER)
    return None if entries is None else SourcePolicy.parse(entries)


def _prefix(entry: str) -> str:
    try:
        bucket, key = s3.split(entry)
    except SourceError as error:
        raise ConfigError(f"allowed_sources: {error} ({SETTING})") from None
    key = "/".join(part for part in key.split("/") if part)
    return f"s3://{bucket}/{key}/" if key else f"s3://{bucket}/"


def _inside(path: str, root: str) -> bool:
    """Whether the absolute, normalised ``path`` is ``root`` or lies under it."""
    return os.path.commonpath([path, root]) == root
