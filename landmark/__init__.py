"""landmark: find the other photos of the same landmark in a large collection.

Local features (DELF or RootSIFT) in PostgreSQL, matched against a query with RANSAC
geometric verification fanned out on Dask. Start with :class:`landmark.session.Session`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Session", "Settings", "Features", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import landmark` stays cheap (no TensorFlow, Dask or psycopg2 at import).
    if name == "Session":
        from .session import Session

        return Session
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "Features":
        from .contract import Features

        return Features
    raise AttributeError(f"module 'landmark' has no attribute {name!r}")
