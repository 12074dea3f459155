"""`bpcr submit`: send a run to a team's board and say what it answered (the standard library only).

The CSV goes as the form's ``file`` and, when ``NAME.json`` lies beside it, that file as ``provenance``, with
the token as ``Authorization: Bearer TOKEN``. The board's refusal comes back as :class:`bpcr.errors.BadInput`
(exit code 2, the board's one line), and so does a board that cannot be reached (the URL is the user's input:
a wrong one is theirs to fix); a board that fails (HTTP 5xx) raises :class:`BoardFailed` (exit code 1).
"""
from __future__ import annotations

import http.client
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bpcr.errors import BadInput
from bpcr.io.textio import check_regular


class BoardFailed(Exception):
    """The board answered with an error of its own (HTTP 5xx): not the submitter's to fix."""


@dataclass
class Submitted:
    id: int
    name: str
    url: str
    public: dict
    private: dict | None = None
    warnings: list[str] = field(default_factory=list)


def _part(boundary: str, name: str, value: bytes, filename: str | None = None, kind: str = "text/plain") -> bytes:
    quoted = (filename or "").replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
    disposition = f'form-data; name="{name}"' + (f'; filename="{quoted}"' if filename else "")
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {kind}\r\n\r\n"
    return head.encode("utf-8") + value + b"\r\n"


def submit(url: str, run: str | Path, token: str, name: str | None = None, note: str = "",
           timeout: float = 300.0) -> Submitted:
    """Submit ``run`` (NAME.csv, with NAME.json beside it when there) to the board at ``url``."""
    run = Path(run)
    check_regular(run, "submission")
    provenance = run.with_suffix(".json")
    base = url.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise BadInput(None, None, f"URL must start with http:// or https://, got {url!r}")
    boundary = "bpcr-" + secrets.token_hex(12)
    body = _part(boundary, "file", run.read_bytes(), run.name, "text/csv")
    if run.suffix == ".csv" and provenance.is_file():
        body += _part(boundary, "provenance", provenance.read_bytes(), provenance.name, "application/json")
    for key, value in (("name", name or ""), ("note", note)):
        body += _part(boundary, key, value.encode("utf-8"))
    body += f"--{boundary}--\r\n".encode("ascii")
    request = urllib.request.Request(f"{base}/api/submissions", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        reason = _reason(exc)
        if exc.code >= 500:
            raise BoardFailed(f"the board at {base} failed (HTTP {exc.code}): {reason}") from None
        raise BadInput(None, None, f"refused by the board (HTTP {exc.code}): {reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, reset, cut short
        why = getattr(exc, "reason", exc)
        raise BadInput(None, None, f"cannot reach the board at {base}: {why}") from None
    return Submitted(answer["id"], answer["name"], base + answer["url"], answer["public"], answer.get("private"),
                     list(answer.get("warnings", [])))


def _reason(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason or "no reason given"
    try:
        return " ".join(str(json.loads(text)["error"]).split())
    except (ValueError, KeyError, TypeError):
        return " ".join(text.split())[:300] or str(exc.reason)
