"""Throw-away PostgreSQL and MariaDB servers on 127.0.0.1 for the backend tests (Debian packages, no service).

apt does not start services here, so each server runs from a temp data folder on a free port and is stopped at
the end of the session. Anything missing raises ``Unavailable`` with the reason; the tests skip with it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


class Unavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    pg_ctl = found[-1] if found else shutil.which("pg_ctl")
    if not pg_ctl:
        raise Unavailable("PostgreSQL server not installed (Debian package postgresql)")
    return Path(os.path.realpath(pg_ctl)).parent


def start_postgres() -> tuple[str, Callable[[], None]]:
    """initdb + pg_ctl into a temp folder; as root the server runs as the ``postgres`` user it refuses to skip."""
    bindir = _pg_bindir()
    base = Path(tempfile.mkdtemp(prefix="cadx-pg-"))
    run_as: dict = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(base, ignore_errors=True)
            raise Unavailable("running as root and there is no 'postgres' user to run the server") from None
        os.chown(base, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid}
    data, port = base / "data", free_port()
    try:
        subprocess.run([bindir / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, timeout=180, **run_as)
        options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c shared_buffers=16MB -c max_connections=40")
        subprocess.run([bindir / "pg_ctl", "-D", data, "-l", base / "log", "-o", options, "-w", "-t", "90", "start"],
                       check=True, capture_output=True, timeout=120, **run_as)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        shutil.rmtree(base, ignore_errors=True)
        raise Unavailable(f"PostgreSQL did not start: {exc} {detail.decode(errors='replace')[-300:]}") from None

    def stop() -> None:
        subprocess.run([bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60,
                       **run_as)
        shutil.rmtree(base, ignore_errors=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}", stop


def start_mariadb() -> tuple[str, Callable[[], None]]:
    """mariadb-install-db + mariadbd in the background; grant tables skipped (root, no password, 127.0.0.1 only)."""
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
    install = shutil.which("mariadb-install-db")
    if not server or not install:
        raise Unavailable("MariaDB server not installed (Debian package mariadb-server)")
    import pymysql

    base = Path(tempfile.mkdtemp(prefix="cadx-maria-"))
    data, port = base / "data", free_port()
    user = ["--user=root"] if os.geteuid() == 0 else []
    try:
        subprocess.run([install, "--no-defaults", f"--datadir={data}", "--auth-root-authentication-method=normal",
                        "--skip-test-db", "--skip-name-resolve", *user], check=True, capture_output=True, timeout=240)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        shutil.rmtree(base, ignore_errors=True)
        raise Unavailable(f"mariadb-install-db failed: {exc}") from None
    log = (base / "server.log").open("wb")
    proc = subprocess.Popen(
        [server, "--no-defaults", f"--datadir={data}", f"--socket={base / 'sock'}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--pid-file={base / 'pid'}", f"--tmpdir={base}", "--skip-grant-tables",
         "--skip-name-resolve", "--skip-log-bin", "--performance-schema=OFF", "--innodb-buffer-pool-size=32M",
         "--innodb-flush-log-at-trx-commit=0", "--max-connections=60", *user],
        stdout=log, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)

    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            text = (base / "server.log").read_text(errors="replace")[-400:]
            stop()
            raise Unavailable(f"mariadbd exited with {proc.returncode}: {text}")
        try:
            pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2).close()
            break
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                stop()
                raise Unavailable("mariadbd did not accept connections within 90 s") from None
            time.sleep(0.3)
    return f"mysql+pymysql://root@127.0.0.1:{port}", stop


def create_database(server_url: str, name: str, attempts: int = 3) -> str:
    """A fresh, empty database on the server; returns its SQLAlchemy URL (retried: a just-started server may
    still drop its first connection)."""
    for attempt in range(attempts):
        try:
            return _create_database(server_url, name)
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def _create_database(server_url: str, name: str) -> str:
    if server_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(server_url.replace("postgresql+psycopg", "postgresql") + "/postgres",
                             autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{server_url}/{name}"
    import pymysql

    host_port = server_url.rsplit("@", 1)[1]
    host, port = host_port.split(":")
    conn = pymysql.connect(host=host, port=int(port), user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()
    return f"{server_url}/{name}?charset=utf8mb4"
