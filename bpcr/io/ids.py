"""Image and query IDs (DESIGN.md, "IDs").

An ID matches ``[A-Za-z0-9][A-Za-z0-9_.-]*``, never contains a path separator,
and is compared as an exact string. A run name is an ID that also names files
(``NAME.csv``, ``NAME.trec``), so it is at most :data:`MAX_NAME_LENGTH` characters.
"""
from __future__ import annotations

import re
from pathlib import Path

from bpcr.errors import BadInput

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


def check_id(value: str, file: str | Path | None = None, line: int | None = None) -> str:
    """Return ``value`` if it is a valid ID, else raise :class:`BadInput` naming file and line."""
    if not is_valid_id(value):
        if value == "":
            raise BadInput(file, line, "empty ID")
        shown = value if len(value) <= 60 else value[:57] + "..."
        if "/" in value or "\\" in value or value.startswith("."):
            raise BadInput(file, line, f"ID {shown!r} looks like a path; IDs must match [A-Za-z0-9][A-Za-z0-9_.-]*")
        raise BadInput(file, line, f"invalid ID {shown!r}; IDs must match [A-Za-z0-9][A-Za-z0-9_.-]*")
    return value


# A run name is a file stem: NAME plus its longest suffix (".trec", ".json") must fit the usual
# 255-byte limit on a file name. IDs are ASCII, so characters are bytes.
MAX_NAME_LENGTH = 250


def check_name(value: str, option: str = "--name") -> str:
    """Return ``value`` if it can name a run (an ID short enough for NAME.trec), else raise :class:`BadInput`."""
    try:
        check_id(value)
    except BadInput as exc:
        raise BadInput(None, None, f"{option}: {exc.reason}") from None
    if len(value) > MAX_NAME_LENGTH:
        raise BadInput(None, None, f"{option}: the run name is {len(value)} characters long; at most "
                                   f"{MAX_NAME_LENGTH} fit a file name with its suffix (NAME.trec)")
    return value
