"""A throw-away PostgreSQL server on 127.0.0.1 for storage tests (skips with the reason when it
cannot run: no server binaries, no psycopg2 driver)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture
def postgres_server():
    """Yields a SQLAlchemy URL of a fresh, empty PostgreSQL database (trust auth, 127.0.0.1 only)."""
    pytest.importorskip(
        "psycopg2", reason="psycopg2 not installed: pip install 'histoflow[postgres]' (psycopg2-binary)"
    )
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL server binaries not found: apt-get install -y postgresql")
    as_user: list[str] = []
    folder = tempfile.mkdtemp(prefix="histoflow-pg-")  # not under pytest's 0700 tmp: the server user must enter it
    if os.geteuid() == 0:
        # initdb refuses to run as root: run the server as the postgres (or nobody) account
        for account in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(account)
                break
            except KeyError:
                continue
        else:
            pytest.skip("running as root and no postgres/nobody account to run the server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser to drop privileges for PostgreSQL")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", user.pw_name, "--"]
    data = os.path.join(folder, "data")
    init = subprocess.run(
        [*as_user, initdb, "-D", data, "-U", "histoflow", "--auth=trust", "-E", "UTF8"], capture_output=True, text=True
    )
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    port = free_port()
    server = subprocess.Popen(
        [
            *as_user,
            postgres,
            "-D",
            data,
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={folder}",
            "-c",
            "fsync=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"postgresql+psycopg2://histoflow@127.0.0.1:{port}/postgres"
    try:
        import psycopg2

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(
                    host="127.0.0.1", port=port, user="histoflow", dbname="postgres", connect_timeout=2
                ).close()
                break
            except psycopg2.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(
                        f"PostgreSQL did not start: {server.stderr.read().decode()[-300:] if server.stderr else ''}"
                    )
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)
