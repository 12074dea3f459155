"""The team board's fixtures: a world, a board on SQLite or on a real PostgreSQL, its app in-process, members.

Every test that takes ``team`` (or ``make_team``) runs twice: on SQLite in the data folder, and on a database
of a PostgreSQL server started for the session from the installed binaries (marked slow; skipped, with the
reason, only where no PostgreSQL server is installed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers.postgres import find_binaries, start_postgres
from tests.helpers.serve_world import World, make_world

START = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """The board's time, moved on by the test."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="session")
def postgres():
    binaries, why = find_binaries()
    if binaries is None:
        pytest.skip(why)
    server = start_postgres()  # installed but not starting is a failure, not a skip
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def db_url(request) -> str | None:
    """None: SQLite in the data folder (the default); else a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
def world(tmp_path) -> World:
    return make_world(tmp_path / "world")


@dataclass
class Team:
    board: object
    client: object
    clock: Clock
    world: World
    data: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, member: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[member]}"}

    def submit(self, content: str | bytes, member: str = "alice", filename: str = "run.csv", name: str | None = None,
               note: str = "", provenance: str | bytes | None = None, provenance_name: str = "run.json"):
        files = {"file": (filename, content if isinstance(content, bytes) else content.encode(), "text/csv")}
        if provenance is not None:
            data = provenance if isinstance(provenance, bytes) else provenance.encode()
            files["provenance"] = (provenance_name, data, "application/json")
        fields = {"note": note, **({"name": name} if name is not None else {})}
        return self.client.post("/api/submissions", files=files, data=fields, headers=self.auth(member))

    def rows(self) -> list[dict]:
        return self.client.get("/api/board").json()["submissions"]


@pytest.fixture
def make_team(tmp_path, world, db_url):
    """``make_team(options=..., clock=..., data=...)``: a board in a data folder, its app, members alice and bob."""
    from starlette.testclient import TestClient

    from bpcr.serve.app import create_app
    from bpcr.serve.board import open_board
    from bpcr.serve.members import add_member
    from bpcr.serve.options import ServeOptions

    made = []

    def make(options: ServeOptions = ServeOptions(), clock: Clock | None = None, data: Path | None = None,
             members: tuple[str, ...] = ("alice", "bob"), gt: Path | None = None) -> Team:
        clock = clock or Clock()
        data = data or tmp_path / "data"
        board = open_board(gt or world.gt, data, world.db, db=db_url, options=options, clock=clock)
        team = Team(board, TestClient(create_app(board)), clock, world, data)
        for name in members:
            team.tokens[name] = add_member(board.engine, name, clock())
        made.append(team)
        return team

    yield make
    for team in made:
        team.client.close()
        team.board.engine.dispose()


@pytest.fixture
def team(make_team) -> Team:
    return make_team()
