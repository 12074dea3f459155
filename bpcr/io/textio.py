"""Strict reading of the files a user hands in, shared by every reader.

Text: tolerates what real files carry (UTF-8 BOM, CRLF) and rejects what no
reader can trust (binary junk, invalid UTF-8), always naming file and line.

Every input is opened the same way (:func:`open_input`): only a regular file
(a symlink to one is fine) is read; a folder, a named pipe (FIFO), a device or
a socket is refused before anything blocks on it, and the file is opened with
``O_NONBLOCK`` so one swapped in meanwhile cannot block either. Each kind of
file has a size limit and, for text, a line-length limit (:data:`LIMITS`),
generous for real data: a larger file is refused from its size before it is
read, and a text file is read in blocks, so an absurd line is refused as soon
as it passes the limit. Memory stays bounded by the limits.

Numbers in text files are ASCII decimal only, as trec_eval reads them
(:func:`parse_int`, :func:`parse_float`): Python's ``int``/``float`` would also
take ``1_000``, Arabic-Indic or full-width digits and surrounding spaces.

Binary inputs: :func:`load_npy` memory-maps a ``.npy`` and :func:`read_npz`
reads named arrays of a ``.npz``, both without pickle and checking the
header's shape against the bytes present.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from bpcr.errors import BadInput

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Limit:
    """How large one kind of input file may be: ``max_bytes`` in all, ``max_line`` bytes per line."""

    what: str
    max_bytes: int
    max_line: int


# Generous for real data, refusing only what no real file of the kind comes near.
LIMITS: dict[str, Limit] = {
    # the challenge's queries: a few thousand lines of ~80 bytes; 10^6 queries fit
    "submission": Limit("a submission", 256 * MiB, 1 * MiB),
    # 100 results for each of 10^5 queries: 10^7 lines of ~50 bytes
    "trec": Limit("a TREC run", 2 * GiB, 64 * KiB),
    "ground truth": Limit("a ground-truth file", 256 * MiB, 1 * MiB),
    # 10^6 images with their descriptions
    "manifest": Limit("a manifest", 1 * GiB, 1 * MiB),
    "descriptions": Limit("a descriptions CSV", 1 * GiB, 1 * MiB),
    "ids": Limit("an ids.txt", 1 * GiB, 64 * KiB),
    "failed": Limit("a failed.csv", 1 * GiB, 1 * MiB),
    "crops": Limit("a crops.csv", 1 * GiB, 64 * KiB),
    "json": Limit("a JSON file", 64 * MiB, 64 * MiB),
    "text": Limit("a text input", 1 * GiB, 16 * MiB),
    # binary: a .npy is memory-mapped, so only the disk bounds it; a .npz is read into memory
    "npy": Limit("a .npy array", 1 << 62, 0),
    "npz": Limit("a .npz archive", 8 * GiB, 0),
}

_BLOCK = 1 * MiB
_KIND_NAMES = {
    stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def size_text(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------- opening


def check_regular(path: str | Path, kind: str = "text") -> os.stat_result:
    """Stat ``path`` (following symlinks); BadInput unless it is a regular file within the kind's size limit."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BadInput(path, None, "file not found") from None
    except NotADirectoryError:
        raise BadInput(path, None, "file not found (a part of the path is not a folder)") from None
    except OSError as exc:
        raise BadInput(path, None, f"cannot read: {exc.strerror}") from None
    except ValueError:
        raise BadInput(path, None, "invalid file name") from None
    _check_mode(path, info)
    limit = LIMITS[kind]
    if info.st_size > limit.max_bytes:
        raise BadInput(path, None, f"file is {size_text(info.st_size)}; {limit.what} is at most {size_text(limit.max_bytes)}")
    return info


def _check_mode(path: Path, info: os.stat_result) -> None:
    if stat.S_ISREG(info.st_mode):
        return
    if stat.S_ISDIR(info.st_mode):
        raise BadInput(path, None, "is a folder, expected a file")
    kind = _KIND_NAMES.get(stat.S_IFMT(info.st_mode), "a special file")
    raise BadInput(path, None, f"is {kind}, not a regular file")


def open_input(path: str | Path, kind: str = "text") -> BinaryIO:
    """Open a regular file for reading in binary, never blocking; BadInput naming it otherwise.

    Checked before opening (:func:`check_regular`) and again on the open
    descriptor, so a file swapped for a FIFO in between is refused too.
    """
    path = Path(path)
    check_regular(path, kind)
    try:
        # ``name`` stays the path, so numpy's memory maps know their file.
        handle = open(str(path), "rb", opener=_open_nonblocking)  # noqa: SIM115
    except FileNotFoundError:
        raise BadInput(path, None, "file not found") from None
    except OSError as exc:
        raise BadInput(path, None, f"cannot read: {exc.strerror}") from None
    try:
        _check_mode(path, os.fstat(handle.fileno()))
    except BaseException:
        handle.close()
        raise
    return handle


def _open_nonblocking(name: str, flags: int) -> int:
    return os.open(name, flags | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))


def exists_as_input(path: str | Path) -> bool:
    """Whether anything is at ``path`` (a dangling symlink counts): its reader then accepts or refuses it."""
    return os.path.lexists(path)


# ---------------------------------------------------------------- text


class LineReader:
    """The lines of a UTF-8 text file, read in blocks: iterate for ``(line_number, line)``.

    A leading BOM is dropped; CRLF and CR line ends are accepted (a form feed or
    U+2028 is text, not a line end). A NUL byte, invalid UTF-8, a line longer
    than the kind's limit, or a file larger than it raise :class:`BadInput`
    naming the 1-based line. ``bom`` says whether the file began with one,
    ``first_crlf`` is the first line ended by CRLF (None when none) and
    ``first_cr`` the first ended by a lone CR; each is set before the line it
    names is yielded, so a strict reader can refuse it there.
    """

    def __init__(self, path: str | Path, kind: str = "text") -> None:
        self.path = Path(path)
        self.kind = kind
        self.limit = LIMITS[kind]
        self.bom = False
        self.first_crlf: int | None = None
        self.first_cr: int | None = None

    def _too_long(self, line: int) -> BadInput:
        return BadInput(self.path, line, f"line is longer than {size_text(self.limit.max_line)}, the most "
                                         f"{self.limit.what} allows on one line")

    def __iter__(self) -> Iterator[tuple[int, str]]:
        limit = self.limit
        number = 0  # lines completed so far
        carry = b""
        total = 0
        first = True
        with open_input(self.path, self.kind) as handle:
            while True:
                try:
                    block = handle.read(_BLOCK)
                except OSError as exc:
                    raise BadInput(self.path, None, f"cannot read: {exc.strerror}") from None
                eof = not block
                total += len(block)
                if total > limit.max_bytes:  # a file that grew, or one whose size the system does not report
                    raise BadInput(self.path, None, f"file is larger than {size_text(limit.max_bytes)}, "
                                                    f"the most {limit.what} may be")
                data = carry + block
                if eof:
                    complete, carry = data, b""
                else:
                    cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
                    if cut == len(data) - 1 and data[cut:] == b"\r":
                        cut = max(data.rfind(b"\n", 0, cut), data.rfind(b"\r", 0, cut))  # may be half a CRLF
                    complete, carry = data[: cut + 1], data[cut + 1 :]
                    if len(carry) > limit.max_line:
                        raise self._too_long(number + _count_ends(complete) + 1)
                if first and complete:
                    if complete.startswith(b"\xef\xbb\xbf"):
                        self.bom = True
                        complete = complete[3:]
                    first = False
                if complete:
                    yield from self._lines(complete, number)
                    number += _count_ends(complete)
                if eof:
                    return

    def _lines(self, chunk: bytes, before: int) -> Iterator[tuple[int, str]]:
        """The lines of ``chunk`` (whole lines; the last may lack its end only at the end of the file)."""
        nul = chunk.find(b"\x00")
        if nul >= 0:
            raise BadInput(self.path, before + _count_ends(chunk[:nul]) + 1,
                           "binary data (NUL byte); expected a UTF-8 text file")
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(self.path, before + _count_ends(chunk[: exc.start]) + 1,
                           f"not valid UTF-8 (byte 0x{chunk[exc.start]:02x})") from None
        if "\r" in text:
            if self.first_crlf is None and "\r\n" in text:
                self.first_crlf = before + _count_text_ends(text[: text.index("\r\n")]) + 1
            if self.first_cr is None:
                lone = re.search(r"\r(?!\n)", text)
                if lone is not None:
                    self.first_cr = before + _count_text_ends(text[: lone.start()]) + 1
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the end of the last line, not an empty line after it
        max_line = self.limit.max_line
        # Characters never outnumber bytes, nor bytes four times the characters: encode only
        # when some line may be over the limit.
        if lines and max(map(len, lines)) * 4 > max_line:
            for offset, line in enumerate(lines, start=1):
                if len(line) * 4 > max_line and len(line.encode("utf-8")) > max_line:
                    raise self._too_long(before + offset)
        yield from zip(itertools.count(before + 1), lines)


def _count_ends(data: bytes) -> int:
    """Line ends in ``data``: LF, CRLF and a lone CR each count once."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _count_text_ends(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def iter_lines(path: str | Path, kind: str = "text") -> Iterator[tuple[int, str]]:
    """``(line_number, line)`` of a UTF-8 text file, streamed (see :class:`LineReader`)."""
    return iter(LineReader(path, kind))


def read_lines(path: str | Path, kind: str = "text") -> list[str]:
    """Read a UTF-8 text file into lines without line ends.

    A leading BOM is dropped; CRLF and CR line ends are accepted. A NUL byte,
    invalid UTF-8 or a line over the kind's limit raises :class:`BadInput` with
    the 1-based line it is on; a file over the kind's size limit is refused
    before it is read.
    """
    return [line for _, line in LineReader(path, kind)]


# ---------------------------------------------------------------- JSON


class _NotJson(ValueError):
    def __init__(self, reason: str, token: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token = token


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value", name)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJson(f"number {text[:40]} is out of range", text)
    return value


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 4000:  # int() refuses beyond 4300 digits with a ValueError of its own
        raise _NotJson(f"integer of {len(text)} digits is out of range", text)
    return int(text)


def _line_of_token(text: str, token: str) -> int | None:
    """The line of the first ``token`` outside a JSON string."""
    pattern = re.compile(r'"(?:[^"\\]|\\.)*"|(' + re.escape(token) + ")", re.DOTALL)
    for found in pattern.finditer(text):
        if found.group(1) is not None:
            return text.count("\n", 0, found.start()) + 1
    return None


def read_json(path: str | Path, what: str | None = None) -> Any:
    """Parse a UTF-8 JSON file; with ``what``, it must hold an object ("<what> must be a JSON object").

    Strict JSON (RFC 8259): ``NaN``, ``Infinity`` and numbers beyond float range
    are refused, as are documents nested too deeply to parse.
    """
    path = Path(path)
    text = "\n".join(read_lines(path, "json"))
    try:
        obj = json.loads(text, parse_constant=_refuse_constant, parse_float=_parse_float, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise BadInput(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except _NotJson as exc:
        raise BadInput(path, _line_of_token(text, exc.token), f"invalid JSON: {exc.reason}") from None
    except RecursionError:
        raise BadInput(path, None, "invalid JSON: nested too deeply") from None
    if what is not None and not isinstance(obj, dict):
        raise BadInput(path, 1, f"{what} must be a JSON object")
    return obj


# ---------------------------------------------------------------- numbers

_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_NON_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def parse_int(text: str, what: str, file: str | Path | None = None, line: int | None = None) -> int:
    """An ASCII decimal integer (optional sign, at most 18 digits); BadInput "<what> '...' is not an integer"."""
    if _INT.fullmatch(text) is None:
        raise BadInput(file, line, f"{what} {_shown(text)} is not an integer (ASCII digits only)")
    return int(text)


def parse_float(text: str, what: str, file: str | Path | None = None, line: int | None = None) -> float:
    """An ASCII decimal number such as ``-1.5e-3`` that is finite; BadInput naming ``what`` otherwise."""
    if _FLOAT.fullmatch(text) is None:
        if _NON_FINITE.fullmatch(text):
            raise BadInput(file, line, f"{what} {_shown(text)} is not finite")
        raise BadInput(file, line, f"{what} {_shown(text)} is not a number (ASCII decimal only)")
    value = float(text)
    if not math.isfinite(value):
        raise BadInput(file, line, f"{what} {_shown(text)} is not finite")
    return value


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection): in a CSV meant for
# people, such a cell gets a leading apostrophe, which spreadsheets show as text and never evaluate.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def people_csv(header: list[str], rows: list[tuple] | list[list]) -> str:
    """A CSV for people to open (rejects, reasons): every cell that a spreadsheet would run is neutralised.

    IDs never need it (they start with a letter or digit); file names and reasons may.
    """
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[inert_cell(cell) for cell in row] for row in rows])
    return buf.getvalue()


def inert_cell(cell: object) -> object:
    """``cell`` as a spreadsheet shows it but never runs it (a leading apostrophe where it would be a formula)."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell
