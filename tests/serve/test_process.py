"""The board as a real uvicorn process: killed with SIGKILL during an upload, twenty members submitting at once,
bodies refused as they stream, and `bpcr submit`'s exit codes. Each test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import func, select

from bpcr.errors import BadInput
from bpcr.serve.board import open_database
from bpcr.serve.client import submit
from bpcr.serve.members import add_member
from bpcr.serve.models import blobs, submissions
from bpcr.serve.board import utc_now
from tests.helpers.serve_process import start
from tests.helpers.serve_world import run_text

pytestmark = pytest.mark.slow  # real server processes


@pytest.fixture
def serve_args(tmp_path, world, db_url):
    """``bpcr serve`` arguments for a board in tmp_path/data; its database made, with 24 members."""
    data = tmp_path / "data"
    engine, _ = open_database(data, db_url)
    tokens = {f"m{i:02d}": add_member(engine, f"m{i:02d}", utc_now()) for i in range(24)}
    engine.dispose()
    args = ["--gt", str(world.gt), "--data", str(data), "--manifest", str(world.db)]
    return args + (["--db", db_url] if db_url else []), tokens, data, db_url


def _state(data, db_url) -> tuple[int, int, list]:
    """(submissions, blobs, what tmp/ holds) of the board in ``data``."""
    engine, _ = open_database(data, db_url)
    with engine.connect() as connection:
        counts = [connection.execute(select(func.count()).select_from(t)).scalar_one() for t in (submissions, blobs)]
    engine.dispose()
    return counts[0], counts[1], sorted(p.name for p in (data / "tmp").iterdir())


def test_a_kill_at_any_step_leaves_no_trace_or_a_whole_submission(serve_args, world, tmp_path):
    args, tokens, data, db_url = serve_args
    run = tmp_path / "run.csv"
    run.write_text(run_text(world.relevant, 0.6, seed=1))
    (tmp_path / "run.json").write_text(json.dumps({"summary": "kept with its provenance"}))
    log = tmp_path / "server.log"
    outcomes = {}
    for step in ("received", "checked", "scored", "written", "committed"):
        server = start(args, log, kill_at=step)  # a start also clears what the last kill left in tmp/
        assert server.board()["submissions"] == [] or step == "committed"
        with pytest.raises(BadInput, match="cannot reach the board|Remote end closed"):
            submit(server.url, run, tokens["m00"], timeout=60)
        server.process.wait(timeout=30)
        outcomes[step] = _state(data, db_url)[:2]
    server = start(args, log)  # the real `bpcr serve`, after the last kill
    try:
        assert _state(data, db_url)[2] == []
        # killed before the commit: no trace; killed after it: the whole submission
        assert outcomes == {"received": (0, 0), "checked": (0, 0), "scored": (0, 0), "written": (0, 0),
                            "committed": (1, 2)}
        [row] = server.board()["submissions"]
        assert row["summary"] == "kept with its provenance" and row["public"]["n_queries"] == 20
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # a body cut by a kill
            body = run.read_bytes()
            raw.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                        tokens["m01"].encode() + b"\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        b"Content-Length: " + str(len(body) + 200).encode() + b"\r\n\r\n--b\r\n"
                        b'Content-Disposition: form-data; name="file"; filename="run.csv"\r\n\r\n' + body[:500])
            time.sleep(0.5)
            server.kill()
        server = start(args, log)
        assert _state(data, db_url) == (1, 2, [])
        # (PostgreSQL's sequences are not rolled back: a number drawn in the transaction killed is skipped)
        assert server.board()["submissions"] == [row]
    finally:
        server.stop()


def test_twenty_members_at_once_lose_and_duplicate_nothing(serve_args, world, tmp_path):
    args, tokens, data, db_url = serve_args
    runs = {}
    for i in range(20):
        runs[f"m{i:02d}"] = tmp_path / f"run{i:02d}.csv"
        runs[f"m{i:02d}"].write_text(run_text(world.relevant, 0.3 + i / 40, seed=i))
    server = start(args, tmp_path / "server.log")
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            done = list(pool.map(lambda member: (member, submit(server.url, runs[member], tokens[member],
                                                                 timeout=120)), sorted(runs)))
        rows = server.board()["submissions"]
        assert sorted(r["id"] for r in rows) == list(range(1, 21))
        assert {r["member"]: r["id"] for r in rows} == {member: answer.id for member, answer in done}
        assert {r["name"] for r in rows} == {f"run{i:02d}" for i in range(20)}
        # one member's eight at once meet the daily limit of 5 exactly
        extra = [tmp_path / f"more{i}.csv" for i in range(8)]
        for i, path in enumerate(extra):
            path.write_text(run_text(world.relevant, 0.5, seed=100 + i))

        def one(path):
            try:
                return submit(server.url, path, tokens["m20"], timeout=120).id
            except BadInput as exc:
                return str(exc)

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(one, extra))
        accepted = [a for a in answers if isinstance(a, int)]
        assert len(accepted) == 5 and len(set(accepted)) == 5
        assert all("daily limit reached" in a for a in answers if not isinstance(a, int))
        assert len(server.board()["submissions"]) == 25
    finally:
        server.stop()
    assert _state(data, db_url) == (25, 25, [])  # 25 different files, no provenance


def _raw(port: int, head: bytes, body_parts=(), read_timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as raw:
        raw.sendall(head)
        try:
            for part in body_parts:
                raw.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks, deadline = [], time.monotonic() + read_timeout
        while time.monotonic() < deadline:
            try:
                chunk = raw.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and b'"error"' in b"".join(chunks):
                break
        return b"".join(chunks)


def test_a_body_over_the_limit_is_refused_before_it_is_read(serve_args, tmp_path):
    args, tokens, data, db_url = serve_args
    server = start([*args, "--max-bytes", "1024"], tmp_path / "server.log")
    auth = b"Authorization: Bearer " + tokens["m00"].encode() + b"\r\n"
    try:
        started = time.monotonic()
        answer = _raw(server.port, b"POST /api/submissions HTTP/1.1\r\nHost: x\r\n" + auth +
                      b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert time.monotonic() - started < 5  # answered without waiting for a gigabyte
        chunk = b"x" * 8192
        chunked = [b"%x\r\n" % len(chunk) + chunk + b"\r\n"] * 40  # 320 KiB, never ended
        answer = _raw(server.port, b"POST /api/submissions HTTP/1.1\r\nHost: x\r\n" + auth +
                      b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n", chunked)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"the most this board takes in one request" in answer
        assert server.board()["submissions"] == []
    finally:
        server.stop()
    assert _state(data, db_url) == (0, 0, [])


class _Failing(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "something broke"}')

    def log_message(self, *args):
        pass


def test_bpcr_submit_exit_codes(serve_args, world, tmp_path, cli):
    args, tokens, _, _ = serve_args
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(run_text(world.relevant, 0.6, seed=3))
    bad.write_text("v001,n001\n")
    server = start(args, tmp_path / "server.log")
    try:
        accepted = cli("submit", server.url, good, "--token", tokens["m00"], "--note", "first")
        assert accepted.code == 0, accepted.err
        assert accepted.out.startswith("accepted: submission 1 (good), public mAP@7 ")
        assert accepted.out.strip().endswith(f"{server.url}/submissions/1/")
        refused = cli("submit", server.url, bad, "--token", tokens["m00"])
        assert refused.code == 2
        assert refused.err == ("error: refused by the board (HTTP 400): bad.csv:1: 1 predictions, exactly 7 "
                               "required (and 1 more problems)\n")
        wrong = cli("submit", server.url, good, "--token", "bpcr_wrong")
        assert wrong.code == 2 and "HTTP 401" in wrong.err and wrong.err.count("\n") == 1
    finally:
        server.stop()
    gone = cli("submit", server.url, good, "--token", tokens["m00"])
    assert gone.code == 2 and gone.err.startswith(f"error: cannot reach the board at {server.url}: ")
    failing = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=failing.serve_forever, daemon=True)
    thread.start()
    try:
        broken = cli("submit", f"http://127.0.0.1:{failing.server_address[1]}", good, "--token", "t")
        assert broken.code == 1 and "failed (HTTP 500): something broke" in broken.err
    finally:
        failing.shutdown()
