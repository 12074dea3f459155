"""Strict text reading shared by every reader of user files.

Tolerates what real files carry (UTF-8 BOM, CRLF) and rejects what no reader
can trust (binary junk, invalid UTF-8), always naming file and line.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BadInput


def read_lines(path: str | Path) -> list[str]:
    """Read a UTF-8 text file into lines without line ends.

    A leading BOM is dropped; CRLF and CR line ends are accepted. A NUL byte or
    invalid UTF-8 raises :class:`BadInput` with the 1-based line it is on.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadInput(path, None, "file not found") from None
    except IsADirectoryError:
        raise BadInput(path, None, "is a folder, expected a file") from None
    except OSError as exc:
        raise BadInput(path, None, f"cannot read: {exc.strerror}") from None
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise BadInput(path, line, "binary data (NUL byte); expected a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadInput(path, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    # str.splitlines would also split on form feeds and U+2028 inside descriptions.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_json(path: str | Path, what: str | None = None) -> Any:
    """Parse a UTF-8 JSON file; with ``what``, it must hold an object ("<what> must be a JSON object")."""
    path = Path(path)
    try:
        obj = json.loads("\n".join(read_lines(path)))
    except json.JSONDecodeError as exc:
        raise BadInput(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    if what is not None and not isinstance(obj, dict):
        raise BadInput(path, 1, f"{what} must be a JSON object")
    return obj
