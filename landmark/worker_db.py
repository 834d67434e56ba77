"""The database connection of a Dask worker process: one per store, kept across tasks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .store import connect

_connections: dict[str, Any] = {}


def worker_connection(url: str) -> Any:
    """This process's connection to ``url`` (opened on first use)."""
    conn = _connections.get(url)
    if conn is None or conn.closed:
        conn = _connections[url] = connect(url)
    return conn


def forget_connection(url: str) -> None:
    """Drop the connection to ``url`` (found broken); the next use opens a new one."""
    _connections.pop(url, None)


@contextlib.contextmanager
def worker_cursor(url: str) -> Iterator[Any]:
    """A cursor on this process's connection to ``url``, in one transaction; a connection found
    broken is dropped, so that the next task opens a new one."""
    import psycopg2

    conn = worker_connection(url)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except (psycopg2.OperationalError, psycopg2.InterfaceError):
        forget_connection(url)
        raise
