"""The board a server serves: its ground truth and manifests, its database, its folder, its options.

:func:`open_board` is what ``bpcr serve`` does before it listens: it checks the ground truth against the
database manifest as ``bpcr check --gt`` does, migrates the database, refuses a ground truth other than the
one the stored scores were made against, writes the public half of the ground truth (what tuning and the
pages read, so that nothing they make can depend on the private half), and clears uploads a killed server
left half-received.

The data folder holds ``serve.json`` (the manifests and database URL given at the first start, so later
starts and ``bpcr serve add-member`` need only ``--data``), ``board.sqlite`` (the default database),
``public-gt.csv``, ``tmp/`` (uploads in flight) and ``cache/`` (thumbnails of the pages).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from sqlalchemy import Connection, Engine

from bpcr.dataset.gt import read_ground_truth, write_ground_truth
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.errors import BadInput
from bpcr.evaluation.check import check_ground_truth, first_error
from bpcr.evaluation.split import QuerySplit
from bpcr.io.fileio import atomic_path, write_json_atomic
from bpcr.io.textio import read_json
from bpcr.serve.database import default_url, migrate, open_engine, read_setting, write_setting, writing
from bpcr.serve.options import ServeOptions

RECORD = "serve.json"
RECORD_FORMAT = "bpcr-serve/1"
PUBLIC_GT = "public-gt.csv"
GT_SHA256 = "ground_truth_sha256"  # settings keys
REVEALED = "revealed"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Board:
    """Everything a request needs. ``clock`` gives the time (UTC; tests fix it); ``observe(step)`` is called as
    each step of a submission ends ("received", "checked", "scored", "written" inside the transaction,
    "committed"), for a benchmark's timings or a test that kills the server at one of them."""

    engine: Engine
    data: Path
    gt: dict[str, list[str]]
    gt_path: Path
    public_gt: dict[str, list[str]]
    public_gt_path: Path
    db_manifest: Path
    query_manifest: Path | None
    options: ServeOptions = ServeOptions()
    split: QuerySplit = QuerySplit()  # bpcr score's default split, so the figures agree with it
    clock: Callable[[], datetime] = utc_now
    observe: Callable[[str], None] = field(default=lambda step: None)

    @property
    def tmp(self) -> Path:
        return self.data / "tmp"

    @property
    def cache(self) -> Path:
        return self.data / "cache"

    def public_queries(self) -> list[str]:
        return sorted(self.public_gt)

    @cached_property
    def manifests(self) -> dict[str, Manifest]:
        """``{"q": queries, "d": database}``, read once, for the pages' thumbnails (no query manifest: empty)."""
        queries = read_manifest(self.query_manifest) if self.query_manifest else Manifest(Path("queries.csv"))
        return {"q": queries, "d": read_manifest(self.db_manifest)}


def data_folder(data: str | Path) -> Path:
    data = Path(data)
    if data.exists() and not data.is_dir():
        raise BadInput(data, None, "--data must be a folder")
    data.mkdir(parents=True, exist_ok=True)
    return data


def read_record(data: Path) -> dict:
    path = data / RECORD
    if not path.exists():
        return {}
    record = read_json(path, "the board's record")
    if record.get("format") != RECORD_FORMAT:
        raise BadInput(path, None, f"not a bpcr serve record (format {record.get('format')!r})")
    return record


def _write_record(data: Path, record: dict) -> None:
    path = data / RECORD
    write_json_atomic(path, {"format": RECORD_FORMAT, **record})
    os.chmod(path, 0o600)  # it may hold the database URL's password


def open_database(data: str | Path, db: str | None = None) -> tuple[Engine, str]:
    """The engine of the board in ``data`` (``db``, else the URL its record holds, else SQLite in ``data``),
    migrated; and the URL used."""
    folder = data_folder(data)
    url = db or read_record(folder).get("db") or default_url(folder)
    engine = open_engine(url)
    migrate(engine)
    return engine, url


def open_board(gt_path: str | Path, data: str | Path, manifest: str | Path | None = None,
               queries: str | Path | None = None, db: str | None = None, options: ServeOptions = ServeOptions(),
               clock: Callable[[], datetime] = utc_now) -> Board:
    """Ready the board for serving (see the module docstring); BadInput with one line when it cannot be."""
    folder = data_folder(data)
    record = read_record(folder)
    manifest = manifest or record.get("manifest")
    if manifest is None:
        raise BadInput(None, None, f"the first start of a board needs --manifest (the database manifest, "
                                   f"database.csv from bpcr prepare); {folder / RECORD} keeps it for later starts")
    manifest = Path(manifest).resolve()
    queries = queries or (record.get("queries") if manifest == Path(record.get("manifest", "")) else None)
    if queries is None and (manifest.parent / "queries.csv").exists():
        queries = manifest.parent / "queries.csv"
    queries = None if queries is None else Path(queries).resolve()
    gt_path = Path(gt_path)
    report = check_ground_truth(gt_path, manifest, queries)  # as `bpcr check --gt` does
    if not report.ok:
        raise first_error(report)
    gt = read_ground_truth(gt_path)
    split = QuerySplit()
    public_gt = {q: gt[q] for q in split.half(gt, "public")}
    if not public_gt:
        raise BadInput(gt_path, None, "the public half of the ground truth holds no query")
    engine, url = open_database(folder, db)
    try:
        with writing(engine) as connection:
            _same_ground_truth(connection, gt_path)
    except BaseException:
        engine.dispose()
        raise
    public_path = folder / PUBLIC_GT
    with atomic_path(public_path) as tmp:
        write_ground_truth(tmp, public_gt)
    _clear(folder / "tmp")
    for half_made in (folder / "cache").glob("*/.making-*"):  # thumbnails a killed server was making
        shutil.rmtree(half_made, ignore_errors=True)
    _write_record(folder, {"manifest": str(manifest), "queries": None if queries is None else str(queries),
                           "db": url})
    return Board(engine, folder, gt, gt_path, public_gt, public_path, manifest, queries, options, split, clock)


def _same_ground_truth(connection: Connection, gt_path: Path) -> None:
    """The board's scores were made against one ground truth: refuse another (a new board needs a new --data)."""
    digest = hashlib.sha256(gt_path.read_bytes()).hexdigest()
    stored = read_setting(connection, GT_SHA256)
    if stored is None:
        write_setting(connection, GT_SHA256, digest)
    elif stored != digest:
        raise BadInput(gt_path, None, f"this board's scores were made against another ground truth (sha256 "
                                      f"{stored[:12]}..., this file's {digest[:12]}...); give that file, or "
                                      "start a new board with another --data")


def _clear(folder: Path) -> None:
    """Remove what uploads in flight left in ``folder`` (a killed server's), then make it anew."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()


def is_revealed(connection: Connection) -> bool:
    return read_setting(connection, REVEALED) == "1"


def reveal(engine: Engine) -> None:
    """Show the private half: from now on the board ranks by private mAP@7, as the local leaderboard does."""
    with writing(engine) as connection:
        write_setting(connection, REVEALED, "1")
