"""Members, their tokens, and the browser's session and form tokens.

A member's token is made once (:func:`add_member`), shown once, and only its sha256 is kept: a token is 32
random bytes, so a plain hash cannot be searched back to it. The API takes the token as ``Authorization:
Bearer TOKEN``. A browser logs in with it once and then carries a session cookie signed with the board's
secret (HMAC-SHA256), bound to the token's hash, so a member given a new token is logged out everywhere.
Each form carries a token derived from the session (:func:`form_token`): a page of another site can make the
browser post with the cookie, but cannot read the form token to post with it.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from bpcr.errors import BadInput
from bpcr.serve.database import SECRET, read_setting, writing
from bpcr.serve.models import members

TOKEN_PREFIX = "bpcr_"
SESSION_DAYS = 14
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")


@dataclass(frozen=True)
class Member:
    id: int
    name: str
    token_sha256: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def utc_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_member(engine: Engine, name: str, now: datetime, token: str | None = None) -> str:
    """Add member ``name`` and return their token (made here unless given); only its hash is stored."""
    if not _NAME.fullmatch(name):
        raise BadInput(None, None, f"member name {name[:60]!r}: 1 to 100 letters, digits, '_', '.', '@' or '-', "
                                   "starting with a letter or digit")
    token = token or TOKEN_PREFIX + secrets.token_urlsafe(32)
    with writing(engine) as connection:
        if connection.execute(select(members.c.id).where(members.c.name == name)).first() is not None:
            raise BadInput(None, None, f"member {name!r} already exists")
        connection.execute(members.insert().values(name=name, token_sha256=token_hash(token),
                                                   created_at=utc_text(now)))
    return token


def member_by_token(connection: Connection, token: str) -> Member | None:
    row = connection.execute(select(members.c.id, members.c.name, members.c.token_sha256)
                             .where(members.c.token_sha256 == token_hash(token))).first()
    return None if row is None else Member(row.id, row.name, row.token_sha256)


def _member_by_id(connection: Connection, member_id: int) -> Member | None:
    row = connection.execute(select(members.c.id, members.c.name, members.c.token_sha256)
                             .where(members.c.id == member_id)).first()
    return None if row is None else Member(row.id, row.name, row.token_sha256)


def board_secret(connection: Connection) -> bytes:
    value = read_setting(connection, SECRET)
    if value is None:  # migrate() writes it before any request is served
        raise RuntimeError("the board has no secret: its database was not migrated")
    return bytes.fromhex(value)


def _sign(secret: bytes, *parts: object) -> str:
    return hmac.new(secret, ":".join(map(str, parts)).encode("utf-8"), hashlib.sha256).hexdigest()


def session_cookie(secret: bytes, member: Member, now: datetime) -> str:
    """``MEMBER_ID.ISSUED.SIGNATURE``: the member, when it was issued (Unix seconds), the board's signature."""
    issued = int(now.timestamp())
    return f"{member.id}.{issued}.{_sign(secret, 'session', member.id, issued, member.token_sha256)}"


def member_by_session(connection: Connection, secret: bytes, cookie: str, now: datetime) -> Member | None:
    """The member a session cookie names, when its signature holds and it is under :data:`SESSION_DAYS` old."""
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit() or len(parts[0]) > 18:
        return None
    member = _member_by_id(connection, int(parts[0]))
    if member is None:
        return None
    expected = _sign(secret, "session", member.id, int(parts[1]), member.token_sha256)
    if not hmac.compare_digest(expected, parts[2]):
        return None
    age = now.timestamp() - int(parts[1])
    return member if 0 <= age <= SESSION_DAYS * 86_400 else None


def form_token(secret: bytes, cookie: str) -> str:
    """The token every form of a logged-in page carries: derived from the session, unknown to other sites."""
    return _sign(secret, "form", cookie)[:40]


def form_token_ok(secret: bytes, cookie: str, given: str) -> bool:
    return bool(given) and hmac.compare_digest(form_token(secret, cookie), given)
