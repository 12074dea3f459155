"""Reading the board: its submissions in rank order, one submission, what each reader may see of them.

While the private half is hidden, what leaves this module holds public figures only: :attr:`Row.shown` has
the public half's mAP@7 and interval, rows are ranked by it (ties by submission number), and
:func:`public_per_query` keeps the public queries' AP@7. Once revealed, rows are ranked as the local
leaderboard ranks runs (:meth:`bpcr.evaluation.score.RunScore.rank_key`): private mAP@7, a run in-sample on
its private half after the others, then all queries, then the name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import Connection, select

from bpcr.serve.board import Board
from bpcr.serve.models import members, submissions


@dataclass(frozen=True)
class Row:
    id: int
    name: str
    member: str
    created_at: str
    final: bool
    summary: str
    note: str
    inputs: tuple[int, ...]
    shown: dict  # the scores this reader may see: {"public": ...} while hidden, every half once revealed

    def figure(self, half: str) -> dict:
        return self.shown.get(half) or {"map7": None, "ci95": None, "n_queries": 0, "in_sample": False}

    def as_json(self) -> dict:
        return {"id": self.id, "name": self.name, "member": self.member, "created_at": self.created_at,
                "final": self.final, "summary": self.summary, "note": self.note, "inputs": list(self.inputs),
                **self.shown}


_COLUMNS = (submissions.c.id, submissions.c.name, members.c.name.label("member"), submissions.c.created_at,
            submissions.c.final, submissions.c.summary, submissions.c.note, submissions.c.inputs,
            submissions.c.scores)


def _row(record, revealed: bool) -> Row:
    scores = json.loads(record.scores)
    shown = scores if revealed else {"public": scores["public"]}
    inputs = tuple(json.loads(record.inputs)) if record.inputs else ()
    return Row(record.id, record.name, record.member, record.created_at, bool(record.final), record.summary,
               record.note, inputs, shown)


def _rank_key(row: Row, revealed: bool) -> tuple:
    if not revealed:
        return (-(row.figure("public")["map7"] or 0.0), row.id)
    private, every = row.figure("private"), row.figure("all")
    return (bool(private["in_sample"]), -(private["map7"] or 0.0), -(every["map7"] or 0.0), row.name, row.id)


def ranked_rows(connection: Connection, revealed: bool) -> list[Row]:
    found = connection.execute(select(*_COLUMNS).join(members, members.c.id == submissions.c.member_id))
    return sorted((_row(r, revealed) for r in found), key=lambda r: _rank_key(r, revealed))


def one_row(connection: Connection, submission_id: int, revealed: bool) -> Row | None:
    found = connection.execute(select(*_COLUMNS).join(members, members.c.id == submissions.c.member_id)
                               .where(submissions.c.id == submission_id)).first()
    return None if found is None else _row(found, revealed)


def public_per_query(connection: Connection, board: Board, submission_id: int) -> dict[str, float]:
    """The submission's AP@7 on each public query (the board's public half), by query ID."""
    stored = connection.execute(select(submissions.c.per_query).where(submissions.c.id == submission_id)).scalar_one()
    per_query = json.loads(stored)
    return {q: per_query[q] for q in board.public_queries()}


def csv_of(connection: Connection, submission_id: int) -> bytes | None:
    from bpcr.serve.submissions import read_blob

    digest = connection.execute(select(submissions.c.csv_sha256).where(submissions.c.id == submission_id)
                                ).scalar_one_or_none()
    return None if digest is None else read_blob(connection, digest)


def final_standings(rows: Sequence[Row], final_limit: int) -> list[tuple[str, Row]]:
    """Once revealed: each member's best private mAP@7 among their final selection (or, when they marked none,
    among their ``final_limit`` best public submissions, as Kaggle picks for them), best first."""
    by_member: dict[str, list[Row]] = {}
    for row in rows:
        by_member.setdefault(row.member, []).append(row)
    best = []
    for member, own in by_member.items():
        chosen = [r for r in own if r.final] or sorted(own, key=lambda r: _rank_key(r, False))[:final_limit]
        best.append((member, min(chosen, key=lambda r: _rank_key(r, True))))
    return sorted(best, key=lambda pair: (_rank_key(pair[1], True), pair[0]))
