"""Versioned schema migrations, one list per owner of tables, applied under one advisory lock.

Each owner (the feature store, the jobs package) keeps its own list of migrations and its own
one-row version table, so the two lists are numbered independently: adding a jobs migration
never renumbers the store's, and a store at version N stays at N when the jobs tables move out
of its list. Every owner migrates under the same lock, so concurrent processes (workers
starting together) agree on the order and run each statement once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import StoreError

if TYPE_CHECKING:
    from .store import Store

SCHEMA_LOCK = 0x6C616E64  # "land": the advisory lock every owner's migrations take


def migrate(cur: Any, version_table: str, migrations: Sequence[str], location: str) -> None:
    """Bring one owner's tables up to ``len(migrations)`` within the caller's transaction.

    ``version_table`` holds the owner's version (the number of its migrations applied). An
    empty migration is a number kept for a statement that moved elsewhere: it is skipped, and
    it keeps the numbers after it where existing databases expect them.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    cur.execute(f"CREATE TABLE IF NOT EXISTS {version_table} (version integer NOT NULL)")
    cur.execute(f"SELECT version FROM {version_table}")
    row = cur.fetchone()
    version = row[0] if row else 0
    if version > len(migrations):
        raise StoreError(
            f"store at {location} has schema version {version}, newer than this landmark "
            f"({len(migrations)} in {version_table}); upgrade landmark"
        )
    for sql in migrations[version:]:
        if sql.strip():
            cur.execute(sql)
    if row is None:
        cur.execute(f"INSERT INTO {version_table} VALUES (%s)", (len(migrations),))
    elif version != len(migrations):
        cur.execute(f"UPDATE {version_table} SET version = %s", (len(migrations),))


_migrated: set[tuple[str, str]] = set()
_migrating = threading.Lock()


def migrate_once(store: Store, version_table: str, migrations: Sequence[str]) -> None:
    """:func:`migrate` one owner's tables on ``store``, the first time this process uses them
    (after that, checking the version on every use would cost a round trip for nothing)."""
    key = (store.url, version_table)
    with _migrating:
        if key not in _migrated:
            with store.transaction() as cur:
                migrate(cur, version_table, migrations, store.location)
            _migrated.add(key)
