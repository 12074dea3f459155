"""`bpcr serve`'s own commands: add-member prints a token once (only its hash is kept), reveal, and the
one-line refusals of a board that cannot start."""
from __future__ import annotations

from sqlalchemy import select

from bpcr.serve.board import is_revealed, open_database
from bpcr.serve.members import token_hash
from bpcr.serve.models import members
from tests.helpers.cli_help import help_as_declared
from bpcr.serve.options import ServeOptions


def test_add_member_prints_a_token_once_and_keeps_its_hash(cli, tmp_path):
    data = tmp_path / "board"
    result = cli("serve", "add-member", "alice", "--data", data)
    assert result.code == 0, result.err
    token = result.out.strip()
    assert token.startswith("bpcr_") and len(token) > 40 and result.out.count("\n") == 1
    engine, _ = open_database(data)
    with engine.connect() as connection:
        stored = connection.execute(select(members.c.name, members.c.token_sha256)).all()
    engine.dispose()
    assert [tuple(r) for r in stored] == [("alice", token_hash(token))]
    assert token.encode() not in b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    again = cli("serve", "add-member", "alice", "--data", data)
    assert again.code == 2 and again.err == "error: member 'alice' already exists\n"
    odd = cli("serve", "add-member", "../x", "--data", data)
    assert odd.code == 2 and odd.err.count("\n") == 1


def test_reveal_shows_the_private_half(cli, tmp_path):
    data = tmp_path / "board"
    assert cli("serve", "reveal", "--data", data).code == 0
    engine, _ = open_database(data)
    with engine.connect() as connection:
        assert is_revealed(connection)
    engine.dispose()


def test_a_board_that_cannot_start_says_why_in_one_line(cli, tmp_path, world):
    cases = [
        (["serve", "--data", tmp_path / "b"], "needs --gt FILE and --data DIR"),
        (["serve", "--gt", world.gt, "--data", tmp_path / "b"], "the first start of a board needs --manifest"),
        (["serve", "--gt", world.gt, "--data", tmp_path / "b", "--manifest", world.db, "--db", "mysql://x/y"],
         "the board runs on a SQLite file or PostgreSQL"),
        (["serve", "--gt", tmp_path / "none.csv", "--data", tmp_path / "b", "--manifest", world.db], "file not found"),
        (["serve", "--gt", world.gt, "--data", tmp_path / "b", "--manifest", world.db, "--port", "0"], "--port"),
    ]
    for args, words in cases:
        result = cli(*args)
        assert result.code == 2, (args, result)
        assert result.err.count("\n") == 1 and words in result.err, result.err


def test_serve_help_gives_the_options_as_declared_and_examples(cli, monkeypatch):
    _, text = help_as_declared(cli, monkeypatch, "serve", ServeOptions)
    for words in ("bpcr serve --gt", "bpcr serve add-member alice --data", "bpcr submit http://127.0.0.1:8000",
                  "bpcr serve reveal --data", "add-member", "reveal"):
        assert words in text, words
