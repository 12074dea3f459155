"""The board's tables (SQLAlchemy Core), the schema that :mod:`bpcr.serve.migrations` builds.

- ``settings``: the board's own facts, one row each: the secret that signs sessions, the ground truth's
  sha256 the scores were made against, whether the private half is revealed.
- ``members``: a name and the sha256 of the member's token (the token itself is shown once, never stored).
- ``blobs``: file contents by their sha256 (content-addressed): a submission's CSV and its provenance JSON.
  They live in the database, so one transaction holds a submission whole and several servers can share
  a PostgreSQL board.
- ``submissions``: who sent what, when, and its scores. ``scores`` is JSON ``{"public": {...}, "private":
  {...}, "all": {...}}`` (each ``map7``, ``ci95``, ``n_queries``, ``in_sample``; ``all`` adds ``p_at_1``,
  ``hit_at_7``), ``per_query`` JSON ``{query_id: ap}``; ``inputs`` the JSON list of the submissions a fused
  one was made from.

Times are stored as text, ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, and ``day`` as ``YYYY-MM-DD`` for the daily limit.
"""
from __future__ import annotations

from sqlalchemy import (Boolean, Column, ForeignKey, Index, Integer, LargeBinary, MetaData, String, Table, Text)

# Named constraints, so that a migration can name what it alters on every database.
metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

settings = Table(
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

members = Table(
    "members", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", String(20), nullable=False),
)

blobs = Table(
    "blobs", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
)

submissions = Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True),
    Column("member_id", Integer, ForeignKey("members.id"), nullable=False),
    Column("name", String(250), nullable=False),
    Column("note", Text, nullable=False),
    Column("csv_sha256", String(64), ForeignKey("blobs.sha256"), nullable=False),
    Column("json_sha256", String(64), ForeignKey("blobs.sha256"), nullable=True),
    Column("created_at", String(20), nullable=False),
    Column("day", String(10), nullable=False),
    Column("final", Boolean, nullable=False),
    Column("summary", Text, nullable=False),
    Column("inputs", Text, nullable=True),
    Column("n_queries", Integer, nullable=False),
    Column("scores", Text, nullable=False),
    Column("per_query", Text, nullable=False),
    Index("ix_submissions_member_day", "member_id", "day"),
)
