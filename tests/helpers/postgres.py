"""A throw-away PostgreSQL server for tests: initdb and pg_ctl from the installed binaries, in a temporary folder.

The server listens on 127.0.0.1 at a free port (and a Unix socket in its own folder), trusts local
connections, and is stopped and removed by :meth:`Postgres.stop`. initdb refuses to run as root, so as root
the binaries run as the ``postgres`` user (the Debian packages make it), on a folder that user owns.
:func:`find_binaries` says why not when no server is installed; the tests are skipped with that reason.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SEARCHED = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")


def find_binaries() -> tuple[Path | None, str]:
    """The folder holding initdb, pg_ctl and postgres (the newest version installed), or None and why not."""
    candidates = []
    for pattern in SEARCHED:
        candidates += sorted(Path("/").glob(pattern.lstrip("/")),
                             key=lambda p: [int(x) if x.isdigit() else 0 for x in p.parent.name.split(".")])
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in reversed(candidates):
        if all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder, ""
    return None, f"no PostgreSQL server installed (initdb, pg_ctl and postgres in none of {', '.join(SEARCHED)} " \
                 "nor on PATH)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Postgres:
    bin: Path
    folder: Path
    port: int
    user: str | None  # the system user the server runs as, when not this process's

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def new_database(self) -> str:
        """A new, empty database on this server; its URL."""
        import psycopg

        name = "board_" + secrets.token_hex(6)
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as connection:
            try:  # copied as files: PostgreSQL 15's default writes the whole template to the WAL
                connection.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
            except psycopg.errors.SyntaxError:  # before PostgreSQL 15
                connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed (exit {done.returncode}): {done.stderr.strip() or done.stdout}")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop", timeout=30)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> Postgres:
    """Start a server (see the module docstring); RuntimeError saying why when it does not start."""
    binaries, why = find_binaries()
    if binaries is None:
        raise RuntimeError(why)
    folder = Path(tempfile.mkdtemp(prefix="bpcr-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    server = Postgres(binaries, folder, _free_port(), user)
    try:
        server._run("initdb", "-D", str(folder / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                    "--locale=C", "--no-sync", timeout=120)
        options = (f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c max_connections=200 -c shared_buffers=32MB")
        server._run("pg_ctl", "-D", str(folder / "data"), "-o", options, "-l", str(folder / "log"), "-w",
                    "-t", "60", "start", timeout=90)
    except BaseException:
        log = folder / "log"
        tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {tail}") from None
    return server
