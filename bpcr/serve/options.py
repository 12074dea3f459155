"""The options of ``bpcr serve``, declared once (:mod:`bpcr.options`): the CLI and the app read
:class:`ServeOptions`; the inputs (ground truth, manifest, data folder, database URL) are the command's own.

It imports nothing heavy: ``bpcr --help`` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass

from bpcr.options import option

MiB = 1 << 20
# Kaggle's default for a competition; the challenge itself allowed a few a day.
DAILY_LIMIT = 5
# The challenge let each team pick 2 submissions for the final (private) ranking.
FINAL_LIMIT = 2


@dataclass(frozen=True)
class ServeOptions:
    """How the board serves (:mod:`bpcr.serve.app`): where it listens, what one member may submit a day, how
    large a file may be, how many submissions a member may mark final, and who may read the board."""

    host: str = option("127.0.0.1", "Address to listen on; the board is open to read for anyone who reaches it "
                                    "(only this machine by default), unless --private-board.")
    port: int = option(8000, "Port to listen on.", low=1, high=65535, integer=True)
    daily_limit: int = option(DAILY_LIMIT, "Submissions one member may make per UTC day, fused ones included "
                                           "(Kaggle's default is 5).", low=1, high=10_000, integer=True)
    max_bytes: int = option(16 * MiB, "Largest submission CSV (and provenance JSON) accepted, in bytes; a larger "
                                      "upload is refused before its body is read whole.",
                            low=1024, high=256 * MiB, integer=True)
    final_limit: int = option(FINAL_LIMIT, "Submissions one member may mark final (the challenge's 2).",
                              low=1, high=100, integer=True)
    private_board: bool = option(False, "Reading the board needs a member's token too.")
