"""Receiving a request body: its size bounded as it streams in, its files put where the server chooses.

:class:`BodyLimit` counts a POST body as it arrives: one whose Content-Length is over the limit is refused
before a byte of it is read, and one that grows past it (chunked, or lying about its length) as soon as it
does, whatever reads it. :func:`receive` copies a form's files into a folder of the server's naming
(:func:`bpcr.serve.submissions.receiving_folder`); the names the submitter gave them only label messages
(:func:`label`), never a path.
"""
from __future__ import annotations

import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from bpcr.io.textio import size_text
from bpcr.serve.board import Board
from bpcr.serve.submissions import Received, Refused, receiving_folder, remove

FORM_OVERHEAD = 64 * 1024  # a multipart body's boundaries and small fields beside its files
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def body_limit(board: Board) -> int:
    """The most one request may send: a CSV and its provenance at their limit, and the form around them."""
    return 2 * board.options.max_bytes + FORM_OVERHEAD


def too_large(limit: int) -> str:
    return f"the upload is larger than {size_text(limit)}, the most this board takes in one request"


class BodyLimit:
    """Refuse (413, one line) a POST body over ``limit`` bytes (see the module docstring). ``refuse(path,
    Refused)`` makes the response sent before the app runs."""

    def __init__(self, app, limit: int, refuse) -> None:
        self.app = app
        self.limit = limit
        self.refuse = refuse

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self.refuse(scope["path"], Refused(413, too_large(self.limit)))(scope, receive, send)
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(413, too_large(self.limit))
            return message

        await self.app(scope, counted, send)


def label(filename: str | None, default: str) -> str:
    """How messages name an uploaded file: its base name when that is a plain name, else ``default``."""
    name = re.split(r"[\\/]", filename or "")[-1]
    return name if _LABEL.fullmatch(name) else default


async def receive(board: Board, form) -> Received:
    """The form's ``file`` (and ``provenance``, when given) copied into a new folder under ``tmp/``."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise Refused(400, "no submission file: send the CSV as the form's 'file'")
    folder = await run_in_threadpool(receiving_folder, board)
    try:
        csv = await run_in_threadpool(_copy, board, upload, folder / "upload.csv")
        provenance = form.get("provenance")
        json_path = json_label = None
        if isinstance(provenance, UploadFile) and (provenance.filename or provenance.size):
            json_path = await run_in_threadpool(_copy, board, provenance, folder / "upload.json")
            json_label = label(provenance.filename, "provenance.json")
    except BaseException:
        remove(folder)
        raise
    board.observe("received")
    return Received(folder, csv, label(upload.filename, "submission.csv"), json_path, json_label)


def _copy(board: Board, upload: UploadFile, target: Path) -> Path:
    limit = board.options.max_bytes
    upload.file.seek(0)
    with open(target, "wb") as out:
        copied = 0
        for block in iter(lambda: upload.file.read(1 << 20), b""):
            copied += len(block)
            if copied > limit:
                raise Refused(413, f"{label(upload.filename, target.name)} is larger than {size_text(limit)}, "
                                   "the most this board takes")
            out.write(block)
    return target
