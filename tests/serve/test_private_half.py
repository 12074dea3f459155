"""While the private half is hidden, nothing the board returns depends on it.

Two boards are built alike (the same clock, secret, members and tokens, the same requests in the same order)
over two ground truths that differ only in the relevant images of the private queries. Every response --
the board, the JSON API, submission pages, their charts, CSVs and thumbnails, per-query pages, refusals of
bad files and of limits, a fusion tuned on the board, the forms -- must be the same, byte for byte, headers
included. Once revealed, the same board responses differ: the twist is real and the comparison can see it.
"""
from __future__ import annotations

import json
import re

from bpcr.serve.app import create_app
from bpcr.serve.board import open_board, reveal
from bpcr.serve.database import SECRET, write_setting, writing
from bpcr.serve.members import add_member
from bpcr.serve.options import ServeOptions
from tests.helpers import DATA
from tests.helpers.serve_world import PRIVATE, PUBLIC, make_world, run_text
from tests.serve.conftest import Clock

TOKENS = {"alice": "bpcr_alice-token", "bob": "bpcr_bob-token"}


def _board(root, twist: int, db_url):
    from starlette.testclient import TestClient

    world = make_world(root / "world", private_twist=twist, images=True)
    clock = Clock()
    board = open_board(world.gt, root / "data", world.db, db=db_url, options=ServeOptions(daily_limit=3),
                       clock=clock)
    with writing(board.engine) as connection:
        write_setting(connection, SECRET, "ab" * 32)
    for name, token in TOKENS.items():
        add_member(board.engine, name, clock(), token=token)
    return world, board, TestClient(create_app(board)), clock


def _requests(client, world, clock):
    """Every kind of request, in one order; yields (what, response)."""
    auth = {name: {"Authorization": f"Bearer {token}"} for name, token in TOKENS.items()}

    def upload(member, text, filename="run.csv", provenance=None, **fields):
        files = {"file": (filename, text.encode() if isinstance(text, str) else text, "text/csv")}
        if provenance is not None:
            files["provenance"] = ("run.json", provenance, "application/json")
        return client.post("/api/submissions", files=files, data=fields, headers=auth[member])

    relevant = world.relevant  # the public half's relevant images are the same in both worlds
    public_only = {q: relevant[q] for q in PUBLIC}
    yield "empty board", client.get("/")
    yield "first", upload("alice", run_text(public_only | {q: ["n001"] for q in PRIVATE}, 0.7, seed=1), note="one")
    tuned = json.dumps({"summary": "tuned", "tuned_on": {"query_ids": PUBLIC[:4] + PRIVATE[:4]}})
    yield "second", upload("bob", run_text(public_only | {q: ["n002"] for q in PRIVATE}, 0.4, seed=2),
                           provenance=tuned.encode(), name="tuned")
    yield "third", upload("alice", run_text(public_only | {q: ["n003"] for q in PRIVATE}, 0.4, seed=3))
    yield "bad file", upload("alice", "v001,n001,n999\n", filename="bad.csv")
    for path in sorted((DATA / "malformed" / "submission").iterdir())[:6]:
        yield f"malformed {path.name}", upload("bob", path.read_bytes(), filename=path.name)
    bad_json = (DATA / "malformed" / "provenance" / "invalid_json.json").read_bytes()
    yield "bad provenance", upload("bob", run_text(public_only | {q: ["n004"] for q in PRIVATE}, 0.5, seed=4),
                                   provenance=bad_json)
    yield "fusion", client.post("/api/fuse", json={"inputs": [1, 2], "method": "rrf"}, headers=auth["bob"])
    yield "fusion, unknown input", client.post("/api/fuse", json={"inputs": [1, 42]}, headers=auth["bob"])
    yield "fourth", upload("alice", run_text(public_only | {q: ["n005"] for q in PRIVATE}, 0.2, seed=5))
    yield "over the daily limit", upload("alice", run_text(public_only | {q: ["n006"] for q in PRIVATE}, 0.3, seed=6))
    yield "final", client.post("/api/submissions/3/final", json={"final": True}, headers=auth["alice"])
    yield "final of another's", client.post("/api/submissions/2/final", json={"final": True}, headers=auth["alice"])
    for url in ("/", "/api/board", "/nope", "/submissions/99/", "/api/submissions/99"):
        yield url, client.get(url)
    for number in range(1, 6):
        page = client.get(f"/submissions/{number}/")
        yield f"page {number}", page
        for thumb in sorted(set(re.findall(r'src="(thumbs/[dq][0-9]{6}\.jpg)"', page.text))):
            yield f"page {number} {thumb}", client.get(f"/submissions/{number}/{thumb}")
        for extra in ("chart.svg", "run.csv"):
            yield f"page {number} {extra}", client.get(f"/submissions/{number}/{extra}")
        yield f"api {number}", client.get(f"/api/submissions/{number}")
        for query in (PUBLIC[0], PUBLIC[7], PRIVATE[0], PRIVATE[5]):
            yield f"page {number} query {query}", client.get(f"/submissions/{number}/queries/{query}/")
    login = client.post("/login", data={"token": TOKENS["bob"]}, follow_redirects=False)
    yield "login", login
    board = client.get("/")
    yield "board as bob", board
    form_token = re.search(r'name="form_token" value="([0-9a-f]+)"', board.text).group(1)
    form = {"form_token": form_token, "name": "from-the-form"}
    bad = client.post("/submit", data=form, files={"file": ("form.csv", b"v001\n", "text/csv")})
    yield "form, bad file", bad
    good = client.post("/submit", data=form, follow_redirects=False, files={
        "file": ("form.csv", run_text(public_only | {q: ["n007"] for q in PRIVATE}, 0.6, seed=7).encode(), "text/csv")})
    yield "form, good file", good
    yield "board after the form", client.get(good.headers.get("location", "/"))
    clock.advance(days=1)
    yield "next day", upload("alice", run_text(public_only | {q: ["n008"] for q in PRIVATE}, 0.3, seed=8))
    yield "board the next day", client.get("/api/board")


def _exchange(responses) -> list[tuple[str, int, list, bytes]]:
    return [(what, r.status_code, sorted(r.headers.multi_items()), r.content) for what, r in responses]


def test_nothing_returned_while_hidden_depends_on_the_private_half(tmp_path, db_url, request):
    second_url = None if db_url is None else request.getfixturevalue("postgres").new_database()
    world_a, board_a, client_a, clock_a = _board(tmp_path / "a", 0, db_url)
    world_b, board_b, client_b, clock_b = _board(tmp_path / "b", 1, second_url)
    assert all(world_a.relevant[q] == world_b.relevant[q] for q in PUBLIC)
    assert all(world_a.relevant[q] != world_b.relevant[q] for q in PRIVATE)
    try:
        a = _exchange(_requests(client_a, world_a, clock_a))
        b = _exchange(_requests(client_b, world_b, clock_b))
        assert [w for w, *_ in a] == [w for w, *_ in b]
        statuses = {what: status for what, status, *_ in a}
        # the sequence reached what it meant to: accepted, refused, limited, fused, pages with thumbnails
        assert (statuses["first"], statuses["bad file"], statuses["over the daily limit"]) == (201, 400, 429)
        assert statuses["fusion"] == 201 and statuses["form, good file"] == 303 and statuses["next day"] == 201
        assert statuses[f"page 1 query {PRIVATE[0]}"] == 404 and statuses[f"page 1 query {PUBLIC[0]}"] == 200
        assert sum(what.startswith("page 1 thumbs/") for what, *_ in a) >= 5
        different = [what for (what, *one), (_, *other) in zip(a, b) if one != other]
        assert different == [], f"responses that depend on the private half: {different}"

        reveal(board_a.engine)
        reveal(board_b.engine)
        assert client_a.get("/api/board").content != client_b.get("/api/board").content
        assert client_a.get("/").content != client_b.get("/").content
    finally:
        for client, board in ((client_a, board_a), (client_b, board_b)):
            client.close()
            board.engine.dispose()
