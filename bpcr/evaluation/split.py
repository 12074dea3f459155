"""The public/private split of the ground truth's queries.

Like a Kaggle leaderboard: choices (fusion weights, a sweep's best point, any
default) are made on the *public* half, and the *private* half is reported,
never tuned on. A query's half depends only on its own ID and the split's seed:
``sha256("bpcr-split/1:<seed>:<query_id>")`` read as a number in [0, 1) is below
``public_share`` for a public query. So the split is deterministic, needs no
file, and a query keeps its half when others are added or removed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

from bpcr.errors import BadInput

DEFAULT_SEED = 0
DEFAULT_PUBLIC_SHARE = 0.5
HALVES = ("public", "private")
_VERSION = "bpcr-split/1"


@dataclass(frozen=True)
class QuerySplit:
    """A seeded split of query IDs into a public and a private half."""

    seed: int = DEFAULT_SEED
    public_share: float = DEFAULT_PUBLIC_SHARE

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise BadInput(None, None, f"split seed must be an integer >= 0, got {self.seed!r}")
        if not 0.0 < float(self.public_share) < 1.0:
            raise BadInput(None, None, f"public share must be in (0, 1), got {self.public_share!r}")

    def is_public(self, query_id: str) -> bool:
        digest = hashlib.sha256(f"{_VERSION}:{self.seed}:{query_id}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < self.public_share

    def half(self, query_ids: Iterable[str], which: str) -> list[str]:
        """The sorted IDs of ``query_ids`` in half ``which`` ("public", "private" or "all")."""
        if which == "all":
            return sorted(set(query_ids))
        if which not in HALVES:
            raise BadInput(None, None, f"unknown half {which!r}; choose public, private or all")
        want = which == "public"
        return sorted(q for q in set(query_ids) if self.is_public(q) == want)

    def describe(self) -> dict:
        return {"method": _VERSION, "seed": self.seed, "public_share": self.public_share}


def tuning_queries(gt_ids: Iterable[str], split: QuerySplit, half: str = "public",
                   allow_private: bool = False) -> list[str]:
    """The queries a choice may be tuned on: the public half unless ``allow_private``.

    Tuning on the private half, or on all queries (which holds it), is refused
    without ``allow_private``: those are the queries the leaderboard reports.
    """
    if half != "public" and not allow_private:
        raise BadInput(None, None, f"tuning on the {half} queries uses the private half the leaderboard reports; "
                                   "tune on the public half, or pass --allow-private (the run then says so)")
    chosen = split.half(gt_ids, half)
    if not chosen:
        raise BadInput(None, None, f"the {half} half of the ground truth holds no query")
    return chosen
