"""Submitting to the board: the checks and figures of `bpcr check` and `bpcr score`, the limits, what is kept.

Each test runs on SQLite and on PostgreSQL (see conftest.py).
"""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from bpcr.serve.models import blobs, members, submissions
from bpcr.serve.options import ServeOptions
from tests.helpers import DATA
from tests.helpers.serve_world import PRIVATE, PUBLIC, run_text

MALFORMED = sorted((DATA / "malformed" / "submission").iterdir())
MALFORMED_PROVENANCE = sorted((DATA / "malformed" / "provenance").iterdir())


def _count(team, table) -> int:
    with team.board.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def test_the_public_figure_is_bpcr_scores(team, cli, tmp_path):
    run = tmp_path / "mine.csv"
    run.write_text(run_text(team.world.relevant, 0.6, seed=1))
    answer = team.submit(run.read_bytes(), filename="mine.csv")
    assert answer.status_code == 201, answer.text
    result = cli("score", run, "--gt", team.world.gt, "--json", tmp_path / "s.json", "--no-leaderboard")
    assert result.code == 0, result.err
    scored = json.loads((tmp_path / "s.json").read_text())["runs"]["mine"]["public"]
    body = answer.json()
    assert body["public"]["map7"] == pytest.approx(scored["map7"], abs=1e-12)
    assert body["public"]["n_queries"] == scored["n_queries"] == len(PUBLIC)
    assert set(body) == {"id", "name", "url", "warnings", "public"}  # no private figure while hidden
    [row] = team.rows()
    assert (row["name"], row["member"], row["public"]["map7"]) == ("mine", "alice", body["public"]["map7"])
    assert "private" not in row and "all" not in row
    assert f"{scored['map7']:.4f}" in team.client.get("/").text


def test_a_refusal_is_bpcr_checks_first_line_and_keeps_nothing(team, cli, tmp_path):
    text = run_text(team.world.relevant, 0.5, seed=2).splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",zz999"  # an ID the database does not hold
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(text[:-2]) + "\n")  # and the last two queries missing
    result = cli("check", bad, "--manifest", team.world.db)
    assert result.code == 2
    expected = result.err.strip().splitlines()[-1].removeprefix("error: ").replace(str(bad), "bad.csv")
    answer = team.submit(bad.read_bytes(), filename="bad.csv")
    assert answer.status_code == 400
    assert answer.json() == {"error": expected}
    assert "zz999" in expected and "(and 1 more problems)" in expected
    assert _count(team, submissions) == 0 and _count(team, blobs) == 0
    assert list((team.data / "tmp").iterdir()) == []


@pytest.mark.parametrize("path", MALFORMED, ids=lambda p: p.name)
def test_every_malformed_submission_is_refused_in_one_line(team, path):
    answer = team.submit(path.read_bytes(), filename=path.name)
    assert answer.status_code == 400, answer.text
    reason = answer.json()["error"]
    assert reason and "\n" not in reason
    assert reason.startswith(path.name), reason  # named as uploaded
    assert str(team.data) not in reason and "upload.csv" not in reason  # never as the server keeps it
    assert _count(team, submissions) == 0 and _count(team, blobs) == 0


@pytest.mark.parametrize("path", MALFORMED_PROVENANCE, ids=lambda p: p.name)
def test_every_malformed_provenance_is_refused_in_one_line(team, path):
    good = run_text(team.world.relevant, 0.5, seed=3)
    answer = team.submit(good, provenance=path.read_bytes(), provenance_name=path.name)
    assert answer.status_code == 400, answer.text
    reason = answer.json()["error"]
    assert "\n" not in reason and (reason.startswith(path.name) or "JSON" in reason), reason
    assert _count(team, submissions) == 0 and _count(team, blobs) == 0


def test_a_file_name_never_becomes_a_path(team):
    good = run_text(team.world.relevant, 0.5, seed=4)
    answer = team.submit(good, filename="../../../escaped.csv")
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "escaped"  # the base name labels it
    refused = team.submit(b"v001,n1\n", filename="..\\..\\x/../../evil name.csv")
    assert refused.json()["error"].startswith("submission.csv:1: ")
    root = team.data.parent
    assert not [p for p in root.rglob("*") if p.name in ("escaped.csv", "evil name.csv")]


def test_provenance_is_kept_and_read_as_bpcr_score_reads_it(team):
    tuned = {"method": "ensemble:rrf", "summary": "rrf of 2 runs", "tuned_on": {"query_ids": PUBLIC[:3]}}
    answer = team.submit(run_text(team.world.relevant, 0.5, seed=5), provenance=json.dumps(tuned))
    assert answer.status_code == 201, answer.text
    assert answer.json()["public"]["in_sample"] is True  # tuned on public queries: starred
    [row] = team.rows()
    assert row["summary"] == "rrf of 2 runs"
    assert _count(team, blobs) == 2
    page = team.client.get(answer.json()["url"]).text
    assert "rrf of 2 runs" in page


def test_identical_files_are_stored_once(team):
    text = run_text(team.world.relevant, 0.5, seed=6)
    assert team.submit(text).status_code == 201
    assert team.submit(text, member="bob").status_code == 201
    assert _count(team, submissions) == 2 and _count(team, blobs) == 1
    assert team.client.get("/submissions/1/run.csv").content == text.encode()


def test_the_daily_limit_counts_each_member_and_resets_at_midnight_utc(make_team):
    team = make_team(ServeOptions(daily_limit=3))
    texts = [run_text(team.world.relevant, 0.5, seed=s) for s in range(10)]
    assert [team.submit(texts[i]).status_code for i in range(3)] == [201] * 3
    over = team.submit(texts[3])
    assert over.status_code == 429
    assert over.json()["error"] == ("daily limit reached: alice made 3 submissions on 2024-06-01 (UTC), at most 3 "
                                    "a day; the next is taken from 2024-06-02T00:00:00Z")
    assert team.submit(texts[4], member="bob").status_code == 201  # bob's own count
    team.clock.advance(hours=12)  # 2024-06-02 00:00 UTC
    assert team.submit(texts[5]).status_code == 201
    assert len(team.rows()) == 5


def test_writing_needs_a_members_token_and_only_its_hash_is_kept(team):
    text = run_text(team.world.relevant, 0.5, seed=7).encode()
    files = {"file": ("run.csv", text, "text/csv")}
    assert team.client.post("/api/submissions", files=files).status_code == 401
    wrong = team.client.post("/api/submissions", files=files, headers={"Authorization": "Bearer bpcr_nope"})
    assert wrong.status_code == 401 and "unknown token" in wrong.json()["error"]
    assert _count(team, submissions) == 0
    with team.board.engine.connect() as connection:
        stored = [tuple(r) for r in connection.execute(select(members))]
    assert all(team.tokens["alice"] not in str(row) for row in stored)


def test_an_upload_over_the_size_limit_is_refused(make_team):
    team = make_team(ServeOptions(max_bytes=1024))
    big = run_text(team.world.relevant, 0.5, seed=8)
    assert len(big) > 1024
    answer = team.submit(big)
    assert answer.status_code == 413
    assert answer.json()["error"] == "run.csv is larger than 1 KiB, the most this board takes"
    declared = team.client.post("/api/submissions", content=b"x", headers={
        **team.auth(), "Content-Length": str(10 ** 9), "Content-Type": "multipart/form-data; boundary=b"})
    assert declared.status_code == 413
    assert _count(team, submissions) == 0


def test_at_most_two_final_per_member_and_only_ones_own(team):
    for seed in range(3):
        assert team.submit(run_text(team.world.relevant, 0.5, seed=seed)).status_code == 201
    final = lambda n, member="alice", value=True: team.client.post(  # noqa: E731
        f"/api/submissions/{n}/final", json={"final": value}, headers=team.auth(member))
    assert final(1).status_code == 200 and final(2).status_code == 200
    third = final(3)
    assert third.status_code == 409 and "unmark one first" in third.json()["error"]
    assert final(1, member="bob").status_code == 403
    assert final(1, value=False).status_code == 200 and final(3).status_code == 200
    assert {r["id"] for r in team.rows() if r["final"]} == {2, 3}
    assert final(99).status_code == 404


def test_reveal_ranks_by_the_private_half(team):
    from bpcr.serve.board import reveal

    relevant = team.world.relevant
    public_only = run_text(relevant, 1.0, seed=9, queries=None)
    # good on the public queries only: every private line's first relevant image removed
    lines = []
    for line in public_only.splitlines():
        query, *ids = line.split(",")
        if query in PRIVATE:
            ids = [d for d in ids if d not in relevant[query]][:6]
            ids += [d for d in ("n079", "n080", "n078", "n077") if d not in relevant[query] and d not in ids][:7 - len(ids)]
        lines.append(",".join([query, *ids]))
    assert team.submit("\n".join(lines) + "\n", name="public-only").status_code == 201
    assert team.submit(run_text(relevant, 0.6, seed=10), name="steady", member="bob").status_code == 201
    assert [r["name"] for r in team.rows()] == ["public-only", "steady"]
    assert "private mAP@7" not in team.client.get("/").text
    reveal(team.board.engine)
    rows = team.rows()
    assert [r["name"] for r in rows] == ["steady", "public-only"]
    assert rows[1]["private"]["map7"] == 0.0 and rows[0]["private"]["map7"] > 0
    page = team.client.get("/").text
    assert "private mAP@7" in page and "Final standings" in page


def test_a_restart_keeps_everything(make_team, tmp_path):
    team = make_team()
    for seed in range(3):
        team.submit(run_text(team.world.relevant, 0.5, seed=seed), member=("alice", "bob")[seed % 2])
    before = (team.rows(), team.client.get("/").text, team.client.get("/submissions/2/").text)
    team.client.close()
    team.board.engine.dispose()
    again = make_team(data=team.data, members=(), clock=team.clock)
    again.tokens = team.tokens
    assert (again.rows(), again.client.get("/").text, again.client.get("/submissions/2/").text) == before
    assert again.submit(run_text(team.world.relevant, 0.5, seed=9)).json()["id"] == 4


def test_another_ground_truth_is_refused_at_start(make_team, tmp_path):
    from bpcr.errors import BadInput

    team = make_team()
    other = tmp_path / "other.csv"
    other.write_text(team.world.gt.read_text().replace("v001,n001", "v001,n002"))
    with pytest.raises(BadInput, match="another ground truth"):
        make_team(data=team.data, gt=other, members=())
