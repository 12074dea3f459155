"""The board's pages and forms: sessions and form tokens, fusion on the board, what a submission's page shows,
the private board, and the schema Alembic builds. Each test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
import re

from sqlalchemy import select

from bpcr.serve.models import blobs, submissions
from bpcr.serve.options import ServeOptions
from tests.helpers.serve_world import PRIVATE, PUBLIC, run_text


def _form_token(page: str) -> str:
    found = re.search(r'name="form_token" value="([0-9a-f]+)"', page)
    assert found, "no form token on the page"
    return found.group(1)


def _log_in(team, member: str = "alice") -> str:
    answer = team.client.post("/login", data={"token": team.tokens[member]}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return _form_token(team.client.get("/").text)


def _post_form(team, token: str | None, content: str, origin: str | None = None):
    data = {} if token is None else {"form_token": token}
    headers = {} if origin is None else {"Origin": origin}
    return team.client.post("/submit", data={**data, "name": "via-form"}, headers=headers, follow_redirects=False,
                            files={"file": ("form.csv", content.encode(), "text/csv")})


def test_the_upload_form_needs_a_session_and_its_form_token(team):
    content = run_text(team.world.relevant, 0.5, seed=1)
    assert _post_form(team, None, content).status_code == 401  # not logged in
    token = _log_in(team)
    assert _post_form(team, None, content).status_code == 403
    assert _post_form(team, "0" * 40, content).status_code == 403
    assert _post_form(team, token, content, origin="http://evil.example").status_code == 403
    assert team.rows() == []
    done = _post_form(team, token, content, origin="http://testserver")
    assert done.status_code == 303 and done.headers["location"] == "/?submitted=1#s1"
    page = team.client.get(done.headers["location"]).text
    assert 'id="s1"' in page and "via-form" in page and 'id="notice"' in page
    # a bob's session gives another form token: alice's does not pass for it
    team.client.cookies.clear()
    assert _log_in(team, "bob") != token
    assert _post_form(team, token, content).status_code == 403


def test_a_bad_file_through_the_form_says_why_on_the_page(team):
    token = _log_in(team)
    answer = _post_form(team, token, "v001,n001\n")
    assert answer.status_code == 400
    assert re.search(r'<p class="error" id="error" role="alert">form.csv:1: 1 predictions, exactly 7 required',
                     answer.text)
    assert team.rows() == []


def test_fusion_on_the_board_is_tuned_on_the_public_half_only(team):
    for seed, member in ((1, "alice"), (2, "bob")):
        assert team.submit(run_text(team.world.relevant, 0.5, seed=seed), member=member).status_code == 201
    answer = team.client.post("/api/fuse", json={"inputs": [1, 2], "method": "rrf"}, headers=team.auth())
    assert answer.status_code == 201, answer.text
    fused = answer.json()
    assert fused["name"] == "rrf-of-1-2" and fused["public"]["in_sample"] is True and "private" not in fused
    row = next(r for r in team.rows() if r["id"] == fused["id"])
    assert row["inputs"] == [1, 2] and row["member"] == "alice" and "tuned on the public queries" in row["summary"]
    with team.board.engine.connect() as connection:
        digest = connection.execute(select(submissions.c.json_sha256).where(submissions.c.id == fused["id"]))
        provenance = json.loads(connection.execute(select(blobs.c.content).where(
            blobs.c.sha256 == digest.scalar_one())).scalar_one())
    assert set(provenance["tuned_on"]["query_ids"]) == set(PUBLIC)
    assert [i["name"] for i in provenance["fusion_inputs"]] == ["s1", "s2"]
    unknown = team.client.post("/api/fuse", json={"inputs": [1, 2], "method": "nope"}, headers=team.auth())
    assert unknown.status_code == 400 and "unknown fusion method 'nope'" in unknown.json()["error"]
    missing = team.client.post("/api/fuse", json={"inputs": [1, 9]}, headers=team.auth())
    assert missing.status_code == 404 and missing.json() == {"error": "no submission 9"}


def test_fusion_counts_toward_the_daily_limit(make_team):
    team = make_team(ServeOptions(daily_limit=2))
    assert team.submit(run_text(team.world.relevant, 0.5, seed=1)).status_code == 201
    assert team.submit(run_text(team.world.relevant, 0.5, seed=2), member="bob").status_code == 201
    assert team.client.post("/api/fuse", json={"inputs": [1, 2]}, headers=team.auth()).status_code == 201
    assert team.client.post("/api/fuse", json={"inputs": [1, 2]}, headers=team.auth()).status_code == 429


def test_the_fuse_form_takes_the_ticked_rows(team):
    for seed in (1, 2):
        team.submit(run_text(team.world.relevant, 0.5, seed=seed))
    token = _log_in(team)
    answer = team.client.post("/fuse", data={"form_token": token, "inputs": ["1", "2"], "method": "borda"},
                              follow_redirects=False)
    assert answer.status_code == 303, answer.text
    [fused] = [r for r in team.rows() if r["inputs"]]
    assert fused["inputs"] == [1, 2] and fused["name"] == "borda-of-1-2" and fused["summary"].startswith("borda")
    assert answer.headers["location"] == f"/?submitted={fused['id']}#s{fused['id']}"


def test_a_submissions_page_shows_the_public_queries_only(team):
    team.submit(run_text(team.world.relevant, 0.5, seed=3), name="mine")
    page = team.client.get("/submissions/1/")
    assert page.status_code == 200
    per_query = re.findall(r'<tr data-query="([^"]+)">', page.text)
    assert sorted(per_query) == PUBLIC
    sections = re.findall(r'<section class="query"[^>]* data-query="([^"]+)"', page.text)
    assert len(sections) == 5 and set(sections) <= set(PUBLIC)
    assert per_query[:5] == sections  # the worst first, as the table lists them
    assert not any(f">{q}<" in page.text or f'"{q}"' in page.text for q in PRIVATE)
    thumbs = sorted(set(re.findall(r'src="(thumbs/[dq][0-9]{6}\.jpg)"', page.text)))
    assert not thumbs  # the world has no images: labelled boxes instead
    assert team.client.get("/submissions/1/chart.svg").content.startswith(b"<?xml")
    assert team.client.get(f"/submissions/1/queries/{PUBLIC[0]}/").status_code == 200
    private = team.client.get(f"/submissions/1/queries/{PRIVATE[0]}/")
    unknown = team.client.get("/submissions/1/queries/nope/")
    assert private.status_code == unknown.status_code == 404
    assert private.text.replace(PRIVATE[0], "X") == unknown.text.replace("nope", "X")
    assert team.client.get("/submissions/7/").status_code == 404
    assert team.client.get("/submissions/1/thumbs/..%2F..%2Fboard.sqlite").status_code == 404


def test_a_private_board_needs_a_token_to_read(make_team):
    team = make_team(ServeOptions(private_board=True))
    assert team.client.get("/").status_code == 401
    assert team.client.get("/api/board").status_code == 401
    assert team.client.get("/api/board", headers=team.auth()).status_code == 200
    assert team.client.get("/login").status_code == 200
    _log_in(team)
    assert team.client.get("/").status_code == 200


def test_the_migrations_build_the_models_schema(team):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bpcr.serve.models import metadata

    with team.board.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
