"""Who asks: a member by their API token or their browser's session, and whether they may read or write.

Reading is open unless the board is private. Writing through the API needs the token (``Authorization:
Bearer TOKEN``); writing through a page's form needs a session, the form token of that page
(:func:`bpcr.serve.members.form_token`) and, when the browser says where the form came from (``Origin``),
this board.
"""
from __future__ import annotations

from starlette.requests import Request

from bpcr.serve.board import Board
from bpcr.serve.members import Member, board_secret, form_token, form_token_ok, member_by_session, member_by_token
from bpcr.serve.submissions import Refused

COOKIE = "bpcr_session"


class Access:
    """The board's rules of access, asked from a request (blocking: call it from a worker thread)."""

    def __init__(self, board: Board) -> None:
        self.board = board

    def member_of(self, request: Request) -> Member | None:
        """The member an API token or a session cookie names; a bad token is refused, a bad cookie ignored."""
        header = request.headers.get("authorization")
        with self.board.engine.connect() as connection:
            if header is not None:
                scheme, _, token = header.partition(" ")
                member = member_by_token(connection, token.strip()) if scheme.lower() == "bearer" else None
                if member is None:
                    raise Refused(401, "unknown token (Authorization: Bearer TOKEN, as bpcr serve add-member "
                                       "printed it)")
                return member
            cookie = request.cookies.get(COOKIE)
            if cookie:
                return member_by_session(connection, board_secret(connection), cookie, self.board.clock())
        return None

    def writer(self, request: Request) -> Member:
        member = self.member_of(request)
        if member is None:
            raise Refused(401, "this needs a member's token: Authorization: Bearer TOKEN, or log in on the page")
        return member

    def reader(self, request: Request) -> Member | None:
        member = self.member_of(request)
        if member is None and self.board.options.private_board:
            raise Refused(401, "this board is private: log in with your token, or send Authorization: Bearer TOKEN")
        return member

    def page_context(self, request: Request, member: Member | None) -> dict:
        """What every page shows of who reads it: the member, and the token its forms carry."""
        cookie = request.cookies.get(COOKIE)
        if member is None or not cookie:
            return {"member": member}
        with self.board.engine.connect() as connection:
            return {"member": member, "form_token": form_token(board_secret(connection), cookie)}

    def form_writer(self, request: Request, form) -> Member:
        """A form's poster: logged in, the form's token theirs, and the page it came from this board's."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            raise Refused(403, "this form was posted from another site")
        cookie = request.cookies.get(COOKIE, "")
        member = None
        if cookie:
            with self.board.engine.connect() as connection:
                secret = board_secret(connection)
                member = member_by_session(connection, secret, cookie, self.board.clock())
        if member is None:
            raise Refused(401, "log in with your token first")
        given = form.get("form_token")
        if not isinstance(given, str) or not form_token_ok(secret, cookie, given):
            raise Refused(403, "this form's token is missing or stale: reload the page and try again")
        return member
