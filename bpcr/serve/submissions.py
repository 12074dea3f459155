"""Taking a submission: the checks and the scorer of ``bpcr check`` and ``bpcr score``, then one transaction.

A file is received into a folder of its own under the data folder's ``tmp/`` (named by the server, never by
the file's name), checked by :func:`bpcr.evaluation.check.check_submission` against the database and query
manifests, its provenance JSON (when given) read as ``bpcr score`` reads a run's, and scored by
:func:`bpcr.evaluation.score.score_runs` against the board's ground truth, on each half and on all queries.
A refusal is the first problem ``bpcr check`` (or ``bpcr score``) would print, with the file named as the
submitter named it, in one line; nothing of a refused file is kept.

An accepted file is stored in one transaction with its row: its bytes and its provenance's in ``blobs``
under their sha256, the row with its scores. The member's row is locked (:func:`bpcr.serve.database
.lock_member`) while the day's count is read, so concurrent uploads never pass the daily limit. A server
killed at any point leaves the transaction uncommitted (no trace) or committed (a whole submission).

A fusion (:func:`fuse`) writes the chosen submissions into such a folder, runs ``bpcr ensemble`` on them with
its weights tuned on the public half of the ground truth only, and takes the fused run as a submission whose
row names its inputs.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Mapping, Sequence

from sqlalchemy import Connection, func, select

from bpcr.errors import BadInput
from bpcr.evaluation.check import check_submission, first_error
from bpcr.evaluation.score import HalfScore, RunScore
from bpcr.io.ids import check_name
from bpcr.serve.board import Board
from bpcr.serve.database import lock_member, writing
from bpcr.serve.members import Member, utc_text
from bpcr.serve.models import blobs, submissions

NOTE_MAX = 1000
MAX_INPUTS = 8  # bpcr ensemble tunes the whole weight lattice up to 4 runs, coordinate ascent beyond
UPLOAD = "upload"  # the stem of a received file: the server names it, never the submitter


class Refused(Exception):
    """What the board says no to: an HTTP status and one line."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = " ".join(reason.split())


@dataclass
class Received:
    """A file received for checking: where the server put it, and how the submitter named it (for messages)."""

    folder: Path
    csv: Path
    csv_label: str
    json: Path | None = None
    json_label: str | None = None


@dataclass
class Accepted:
    id: int
    name: str
    scores: dict
    warnings: list[str] = field(default_factory=list)


def receiving_folder(board: Board) -> Path:
    """A new folder under ``tmp/`` for one upload; the caller removes it (a start clears what a kill left)."""
    folder = board.tmp / secrets.token_hex(8)
    folder.mkdir(parents=True)
    return folder


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- one submission


def take(board: Board, member: Member, received: Received, name: str | None, note: str = "",
         inputs: Sequence[int] | None = None, companions: Sequence[Path] = ()) -> Accepted:
    """Check, score and store one received run for ``member``; :class:`Refused` when the board says no.

    ``companions``: runs scored beside it that it was derived from (a fusion's inputs), so that it inherits
    their choices as ``bpcr score`` has it.
    """
    name = _name(name, received.csv_label)
    if len(note) > NOTE_MAX:
        raise Refused(400, f"the note is {len(note)} characters long; at most {NOTE_MAX}")
    with board.engine.connect() as connection:
        _within_daily_limit(board, connection, member)
    labels = _labels(received)
    try:
        report = check_submission(received.csv, board.db_manifest, board.query_manifest)
    except BadInput as exc:  # a file the reader refuses outright: binary, bad UTF-8, an absurd line
        raise Refused(400, relabelled(exc, labels)) from None
    if not report.ok:
        raise Refused(400, relabelled(first_error(report), labels))
    warnings = [str(BadInput(labels[str(received.csv)], line, reason)) for line, reason in report.warnings]
    board.observe("checked")
    score = _score(board, received, companions, labels)
    board.observe("scored")
    record = score_record(score)
    csv_bytes = received.csv.read_bytes()
    json_bytes = received.json.read_bytes() if received.json is not None else None
    now = board.clock()
    with writing(board.engine) as connection:
        lock_member(connection, member.id)
        _within_daily_limit(board, connection, member)
        csv_sha = store_blob(connection, csv_bytes)
        json_sha = store_blob(connection, json_bytes) if json_bytes is not None else None
        new_id = connection.execute(submissions.insert().values(
            member_id=member.id, name=name, note=note, csv_sha256=csv_sha, json_sha256=json_sha,
            created_at=utc_text(now), day=now.strftime("%Y-%m-%d"), final=False, summary=score.summary[:500],
            inputs=None if inputs is None else json.dumps(list(inputs)), n_queries=score.n_queries,
            scores=json.dumps(record, sort_keys=True), per_query=json.dumps(score.per_query, sort_keys=True),
        ).returning(submissions.c.id)).scalar_one()
        board.observe("written")
    board.observe("committed")
    return Accepted(new_id, name, record, warnings)


def _name(name: str | None, label: str) -> str:
    if name is None or name == "":
        stem = label.rsplit(".", 1)[0] if "." in label else label
        name = stem or "submission"
    try:
        return check_name(name, "name")
    except BadInput as exc:
        raise Refused(400, exc.reason) from None


def _labels(received: Received) -> dict[str, str]:
    """The files the server made, by path and by name, as the submitter named them."""
    labels = {str(received.csv): received.csv_label, received.csv.name: received.csv_label}
    if received.json is not None:
        labels.update({str(received.json): received.json_label, received.json.name: received.json_label})
    return labels


def relabelled(exc: BadInput, labels: Mapping[str, str]) -> str:
    """``exc`` in one line, its file named as the submitter named it; no other path of the server is shown."""
    return str(BadInput(labels.get(exc.file or "") if exc.file else None, exc.line, exc.reason))


def _within_daily_limit(board: Board, connection: Connection, member: Member) -> None:
    now = board.clock()
    day = now.strftime("%Y-%m-%d")
    made = connection.execute(select(func.count()).select_from(submissions).where(
        submissions.c.member_id == member.id, submissions.c.day == day)).scalar_one()
    limit = board.options.daily_limit
    if made >= limit:
        tomorrow = (now + timedelta(days=1)).strftime("%Y-%m-%d")
        raise Refused(429, f"daily limit reached: {member.name} made {made} submissions on {day} (UTC), at most "
                           f"{limit} a day; the next is taken from {tomorrow}T00:00:00Z")


def _score(board: Board, received: Received, companions: Sequence[Path], labels: Mapping[str, str]) -> RunScore:
    """``bpcr score`` of the received run (with ``companions`` beside it), against the board's ground truth."""
    from bpcr.evaluation.options import ScoreOptions
    from bpcr.evaluation.score import score_runs
    from bpcr.io.runs import read_provenance

    try:
        if received.json is not None:
            read_provenance(received.json)
        scores = score_runs([received.csv, *companions], board.gt_path, ScoreOptions())
    except BadInput as exc:
        raise Refused(400, relabelled(exc, labels)) from None
    return next(s for s in scores if s.name == received.csv.stem)


def _half(half: HalfScore) -> dict:
    return {"map7": half.map7, "ci95": None if half.ci95 is None else list(half.ci95),
            "n_queries": half.n_queries, "in_sample": half.in_sample}


def score_record(score: RunScore) -> dict:
    """What the row keeps of a score: each half's figures and all queries', as ``bpcr score --json`` has them."""
    record = {half: _half(score.halves[half]) for half in ("public", "private")}
    record["all"] = {"map7": score.map7, "ci95": list(score.ci95), "n_queries": score.n_queries,
                     "in_sample": score.in_sample, "p_at_1": score.p_at_1, "hit_at_7": score.hit_at_7}
    return record


def store_blob(connection: Connection, data: bytes) -> str:
    """Keep ``data`` under its sha256 (once, however many submissions hold it); return the sha256."""
    digest = hashlib.sha256(data).hexdigest()
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    connection.execute(insert(blobs).values(sha256=digest, size=len(data), content=data)
                       .on_conflict_do_nothing(index_elements=["sha256"]))
    return digest


def read_blob(connection: Connection, digest: str) -> bytes:
    return connection.execute(select(blobs.c.content).where(blobs.c.sha256 == digest)).scalar_one()


def top7(board: Board, data: bytes) -> dict[str, list[str]]:
    """A stored submission's answers, query -> its 7 IDs, as ``bpcr score`` reads the file."""
    from bpcr.io.runs import read_submission

    folder = receiving_folder(board)
    try:
        (folder / f"{UPLOAD}.csv").write_bytes(data)
        return read_submission(folder / f"{UPLOAD}.csv")
    finally:
        remove(folder)


# ---------------------------------------------------------------- fusion and the final selection


def fuse(board: Board, member: Member, ids: Sequence[int], method: str, name: str | None = None,
         note: str = "") -> Accepted:
    """Fuse submissions ``ids`` with ``bpcr ensemble`` (weights tuned on the public half) into a new submission."""
    from bpcr.evaluation.ensemble import ensemble
    from bpcr.evaluation.options import EnsembleOptions, check_ensemble_options

    ids = list(dict.fromkeys(ids))
    if not 2 <= len(ids) <= MAX_INPUTS:
        raise Refused(400, f"a fusion takes 2 to {MAX_INPUTS} different submissions, {len(ids)} given")
    options = EnsembleOptions(method=method)
    try:
        check_ensemble_options(options)
    except BadInput as exc:
        raise Refused(400, exc.reason) from None
    name = _name(name or f"{method}-of-" + "-".join(map(str, ids)), "")
    with board.engine.connect() as connection:
        _within_daily_limit(board, connection, member)
        rows = {row.id: row for row in connection.execute(
            select(submissions.c.id, submissions.c.csv_sha256, submissions.c.json_sha256)
            .where(submissions.c.id.in_(ids)))}
        missing = [i for i in ids if i not in rows]
        if missing:
            raise Refused(404, f"no submission {missing[0]}")
        folder = receiving_folder(board)
        try:
            for i in ids:
                (folder / f"s{i}.csv").write_bytes(read_blob(connection, rows[i].csv_sha256))
                if rows[i].json_sha256 is not None:
                    (folder / f"s{i}.json").write_bytes(read_blob(connection, rows[i].json_sha256))
        except BaseException:
            remove(folder)
            raise
    try:
        inputs = [folder / f"s{i}.csv" for i in ids]
        try:
            fused = ensemble(inputs, "fused", options, out=folder / "fused", tune_on=board.public_gt_path)
        except BadInput as exc:
            raise Refused(400, f"{method} fusion of submissions {', '.join(map(str, ids))}: "
                               f"{relabelled(exc, {})}") from None
        received = Received(folder, fused.written[".csv"], f"{name}.csv", fused.written[".json"], f"{name}.json")
        return take(board, member, received, name, note, inputs=ids, companions=inputs)
    finally:
        remove(folder)


def mark_final(board: Board, member: Member, submission_id: int, final: bool) -> None:
    """Mark (or unmark) one of ``member``'s submissions final; at most ``final_limit`` at once."""
    with writing(board.engine) as connection:
        lock_member(connection, member.id)
        row = connection.execute(select(submissions.c.member_id, submissions.c.final)
                                 .where(submissions.c.id == submission_id)).first()
        if row is None:
            raise Refused(404, f"no submission {submission_id}")
        if row.member_id != member.id:
            raise Refused(403, f"submission {submission_id} is another member's; only its author marks it final")
        if final and not row.final:
            marked = connection.execute(select(func.count()).select_from(submissions).where(
                submissions.c.member_id == member.id, submissions.c.final.is_(True))).scalar_one()
            limit = board.options.final_limit
            if marked >= limit:
                raise Refused(409, f"{member.name} has {marked} submissions marked final, the most allowed; "
                                   "unmark one first")
        connection.execute(submissions.update().where(submissions.c.id == submission_id).values(final=final))
