"""The one exception a user can cause.

Raised deep inside readers and stages; turned into one line and exit code 2 at
the CLI edge (DESIGN.md, "Exit codes").
"""
from __future__ import annotations

from pathlib import Path


class BadInput(Exception):
    """Bad input or usage: names the file, the line (1-based, when known) and why."""

    def __init__(self, file: str | Path | None, line: int | None, reason: str) -> None:
        self.file = None if file is None else str(file)
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.reason}"
