"""Opening the board's database: SQLite in the data folder by default, PostgreSQL for a shared board.

SQLite runs in WAL mode (readers never wait for the writer) with a busy timeout, and every write
transaction starts with ``BEGIN IMMEDIATE``: writers queue for the one write lock at the start instead of
failing when two upgrade a read lock at once. PostgreSQL is used as it is; a writer that must see a
member's submissions of the day locks that member's row (:func:`lock_member`). The schema is Alembic's
(:mod:`bpcr.serve.migrations`), brought to the newest version by :func:`migrate` at every start.
"""
from __future__ import annotations

import secrets
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bpcr.errors import BadInput
from bpcr.serve.models import members, settings

SQLITE_NAME = "board.sqlite"
BUSY_TIMEOUT_S = 60
_IMMEDIATE = "bpcr_immediate"  # the execution option that makes a SQLite transaction a writer from its start
_MIGRATION_LOCK = 7_271_815  # PostgreSQL advisory lock held while one server migrates
SECRET = "secret"  # the settings key of the key that signs sessions and form tokens


def default_url(data: Path) -> str:
    return f"sqlite:///{(Path(data) / SQLITE_NAME).resolve()}"


def shown_url(url: str) -> str:
    """The URL as messages show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL given"


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///PATH`` or ``postgresql://...``, read with psycopg 3)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise BadInput(None, None, f"--db: not a database URL: {url!r} (e.g. postgresql://user@host/board)") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # SQLAlchemy's default driver would be psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=20)
    if backend != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise BadInput(None, None, f"--db: {shown_url(url)}: the board runs on a SQLite file or PostgreSQL")
    engine = create_engine(parsed, pool_size=10, max_overflow=30,
                           connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_connection: sqlite3.Connection, _record) -> None:
    # pysqlite would open transactions itself, lazily and deferred; _sqlite_begin opens them instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    immediate = connection.get_execution_options().get(_IMMEDIATE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed when the block ends, rolled back on any exception."""
    with engine.connect() as connection:
        connection = connection.execution_options(**{_IMMEDIATE: True})
        with connection.begin():
            yield connection


def lock_member(connection: Connection, member_id: int) -> None:
    """Hold ``member_id``'s row until the transaction ends, so one member's writes (the daily limit, the final
    selection) are counted one at a time. SQLite's writers are one at a time already (``BEGIN IMMEDIATE``)."""
    if connection.dialect.name != "sqlite":
        connection.execute(select(members.c.id).where(members.c.id == member_id).with_for_update())


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest version (creating it on a new database) and give a new board its secret;
    several servers may start at once."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    try:
        with writing(engine) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if read_setting(connection, SECRET) is None:  # under the same lock: one secret however many start
                write_setting(connection, SECRET, secrets.token_hex(32))
    except SQLAlchemyError as exc:
        raise BadInput(None, None, f"cannot open the board's database {shown_url(str(engine.url))}: "
                                   f"{_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    words = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return words[0] if words else type(exc).__name__


def read_setting(connection: Connection, key: str) -> str | None:
    return connection.execute(select(settings.c.value).where(settings.c.key == key)).scalar_one_or_none()


def write_setting(connection: Connection, key: str, value: str) -> None:
    if read_setting(connection, key) is None:
        connection.execute(settings.insert().values(key=key, value=value))
    else:
        connection.execute(settings.update().where(settings.c.key == key).values(value=value))
