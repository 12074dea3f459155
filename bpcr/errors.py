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

    def __reduce__(self):
        # Crosses process boundaries (loader workers, Ray tasks) as itself, not as a TypeError.
        return (type(self), (self.file, self.line, self.reason))

    def __str__(self) -> str:
        if self.file is None:
            return self.reason if self.line is None else f"line {self.line}: {self.reason}"
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"
