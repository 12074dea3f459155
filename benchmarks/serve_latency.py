"""Latency of the team board (`bpcr serve`): a 100-query submission end to end, and the board page with 1,000
submissions, against a real uvicorn process on 127.0.0.1.

1. Upload -> check -> score -> row: ``--submissions`` different 100-query runs are sent one after another
   with ``bpcr.serve.client.submit`` (the code of ``bpcr submit``); each is timed from the request to the
   board's answer, which comes after the row is committed. The first is timed apart (it warms the worker).
2. The board with 1,000 submissions: the rows beyond those of step 1 are written straight into the board's
   database by the library (``store_blob`` and the table's insert, the scores of 20 runs scored once with
   ``score_runs`` and repeated), not through HTTP: 1,000 uploads would take minutes and time step 1 again.
   Then ``GET /`` (the HTML board) and ``GET /api/board`` are timed ``--reads`` times each.

Printed: p50 / p95 / max of each, the machine's cores and the database. Every request has a timeout and the
whole run a deadline (``--max-seconds``); ``--smoke`` runs a few of each (what tests/test_benchmarks.py runs).

    .venv/bin/python benchmarks/serve_latency.py
    .venv/bin/python benchmarks/serve_latency.py --db postgresql://user@127.0.0.1/board   # a PostgreSQL board
    .venv/bin/python benchmarks/serve_latency.py --smoke
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bpcr.dataset.gt import write_ground_truth  # noqa: E402
from bpcr.dataset.manifest import write_manifest  # noqa: E402

N_QUERIES, N_DB = 100, 1000


def make_world(root: Path) -> tuple[Path, Path, dict[str, list[str]], list[str]]:
    """100 queries, 1,000 database images (manifests only: the board's pages are not timed with pictures)."""
    queries = [f"v{i:04d}" for i in range(N_QUERIES)]
    db = [f"n{i:05d}" for i in range(N_DB)]
    for name, ids in (("database.csv", db), ("queries.csv", queries)):
        write_manifest(root / name, ids, [root / f"{i}.jpg" for i in ids], [64] * len(ids), [64] * len(ids),
                       [""] * len(ids))
    rng = random.Random(0)
    relevant = {q: rng.sample(db, rng.randint(1, 4)) for q in queries}
    write_ground_truth(root / "gt.csv", relevant)
    return root / "gt.csv", root / "database.csv", relevant, db


def run_text(relevant: dict[str, list[str]], db: list[str], seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for query in sorted(relevant):
        picks = rng.sample(db, 12)
        if rng.random() < 0.5:
            picks.insert(0, relevant[query][0])
        lines.append(",".join([query, *list(dict.fromkeys(picks))[:7]]))
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"p50 {1000 * statistics.median(ordered):7.1f} ms | p95 {1000 * p95:7.1f} ms | "
            f"max {1000 * ordered[-1]:7.1f} ms | n {len(ordered)}")


def timed_get(url: str, timeout: float) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{url}: HTTP {answer.status}")
    return time.perf_counter() - start


def fill_board(data: Path, db_url: str | None, gt: Path, relevant, db: list[str], work: Path, total: int,
               member_id: int) -> int:
    """Write rows until the board holds ``total`` (see the module docstring); returns how many were written."""
    from sqlalchemy import func, select

    from bpcr.evaluation.score import score_runs
    from bpcr.serve.board import open_database
    from bpcr.serve.database import writing
    from bpcr.serve.models import submissions
    from bpcr.serve.submissions import score_record, store_blob

    engine, _ = open_database(data, db_url)
    with engine.connect() as connection:
        have = connection.execute(select(func.count()).select_from(submissions)).scalar_one()
    scored = []
    for seed in range(20):
        path = work / f"filler{seed:02d}.csv"
        path.write_text(run_text(relevant, db, 10_000 + seed))
        [score] = score_runs([path], gt)
        scored.append((path.read_bytes(), score))
    with writing(engine) as connection:
        for number in range(total - have):
            data_bytes, score = scored[number % len(scored)]
            connection.execute(submissions.insert().values(
                member_id=member_id, name=f"filler-{number:04d}", note="", csv_sha256=store_blob(connection, data_bytes),
                json_sha256=None, created_at="2024-06-01T12:00:00Z", day="2024-06-01", final=False, summary="",
                inputs=None, n_queries=score.n_queries, scores=json.dumps(score_record(score)),
                per_query=json.dumps(score.per_query)))
    engine.dispose()
    return max(0, total - have)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=60, help="100-query submissions timed (after a warm-up)")
    parser.add_argument("--board-rows", type=int, default=1000, help="submissions on the board when it is read")
    parser.add_argument("--reads", type=int, default=40, help="times each board read is timed")
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in the board's folder)")
    parser.add_argument("--max-seconds", type=float, default=600, help="deadline of the whole run")
    parser.add_argument("--smoke", action="store_true", help="a few of each, to check the script runs")
    args = parser.parse_args()
    if args.smoke:
        args.submissions, args.board_rows, args.reads = 3, 30, 3
    deadline = time.monotonic() + args.max_seconds

    from bpcr.serve.board import open_database, utc_now
    from bpcr.serve.client import submit
    from bpcr.serve.members import add_member

    with tempfile.TemporaryDirectory(prefix="bpcr-serve-bench-") as tmp:
        work = Path(tmp)
        gt, manifest, relevant, db = make_world(work)
        data = work / "board"
        engine, url = open_database(data, args.db)
        token = add_member(engine, "bench", utc_now())
        engine.dispose()
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        command = [sys.executable, "-m", "bpcr", "serve", "--gt", str(gt), "--data", str(data), "--manifest",
                   str(manifest), "--port", str(port), "--daily-limit", "10000", *(["--db", args.db] if args.db else [])]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the board did not start: {server.stderr.read().decode()[-1000:]}")
                try:
                    timed_get(f"{base}/api/board", 5)
                    break
                except OSError:
                    time.sleep(0.1)
            print(f"bpcr serve on {base}, {os.cpu_count()} cores, database {url.split('://')[0]}, "
                  f"{N_QUERIES} queries ({N_QUERIES // 2} or so public), {N_DB} database images")

            upload_seconds = []
            for number in range(args.submissions + 1):
                if time.monotonic() > deadline:
                    print(f"deadline reached after {number} submissions")
                    break
                path = work / f"run{number:03d}.csv"
                path.write_text(run_text(relevant, db, number))
                start = time.perf_counter()
                submit(base, path, token, timeout=60)
                upload_seconds.append(time.perf_counter() - start)
            print(f"first submission (warm-up)              {1000 * upload_seconds[0]:7.1f} ms")
            print(f"100-query submission, upload->row:      {percentiles(upload_seconds[1:] or upload_seconds)}")

            member_id = 1
            written = fill_board(data, args.db, gt, relevant, db, work, args.board_rows, member_id)
            print(f"{written} rows written by the library; the board holds "
                  f"{len(json.loads(urllib.request.urlopen(f'{base}/api/board', timeout=60).read())['submissions'])}")
            for what, path in (("board page GET /", "/"), ("board JSON GET /api/board", "/api/board")):
                timed_get(f"{base}{path}", 60)  # warm
                seconds = []
                for _ in range(args.reads):
                    if time.monotonic() > deadline:
                        break
                    seconds.append(timed_get(f"{base}{path}", 60))
                print(f"{what + ', ' + str(args.board_rows) + ' rows:':<40}{percentiles(seconds)}")
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
