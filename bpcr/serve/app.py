"""The board as an ASGI app (Starlette): the pages a browser reads, the forms it posts, and the JSON API.

Routes (``{id}`` a submission's number):

- ``GET /`` the board; ``GET /submissions/{id}/`` a submission's page, with ``chart.svg``, ``run.csv`` and its
  thumbnails; ``GET /submissions/{id}/queries/{query}/`` one public query's page.
- ``GET|POST /login`` (a member's token, once, for a session cookie), ``POST /logout``; the forms ``POST
  /submit``, ``POST /fuse``, ``POST /submissions/{id}/final``: a session and the page's form token.
- ``GET /api/board``, ``GET /api/submissions/{id}``; ``POST /api/submissions`` (multipart: ``file``, optional
  ``provenance``, ``name``, ``note``), ``POST /api/fuse`` and ``POST /api/submissions/{id}/final`` (JSON): the
  token as ``Authorization: Bearer TOKEN``.

Every refusal is one line: ``{"error": "..."}`` under ``/api/``, else a page that says it. Who may do what is
:mod:`bpcr.serve.access`'s; bodies are bounded as they stream in (:mod:`bpcr.serve.uploads`). Blocking work
(the database, checking, scoring, drawing) runs in worker threads.
"""
from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bpcr.evaluation.options import run_fusion_choices
from bpcr.serve import pages
from bpcr.serve.access import COOKIE, Access
from bpcr.serve.board import Board, is_revealed
from bpcr.serve.members import SESSION_DAYS, board_secret, member_by_token, session_cookie
from bpcr.serve.standings import csv_of, final_standings, one_row, public_per_query, ranked_rows
from bpcr.serve.submissions import Refused, fuse, mark_final, remove, take, top7
from bpcr.serve.uploads import BodyLimit, body_limit, receive

_THUMB = re.compile(r"[dq][0-9]{6}\.jpg")
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def refusal(path: str, refused: Refused, **context) -> Response:
    """A refusal as its one line: JSON under ``/api/``, else a page."""
    if path.startswith("/api/"):
        return JSONResponse({"error": refused.reason}, status_code=refused.status, headers=HEADERS)
    return HTMLResponse(pages.error_page(refused.reason, **context), status_code=refused.status, headers=HEADERS)


def _text(form, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _ids(values) -> list[int]:
    if not isinstance(values, list) or not all(isinstance(v, (int, str)) and not isinstance(v, bool)
                                               and str(v).isdigit() and len(str(v)) < 12 for v in values):
        raise Refused(400, "inputs must be a list of submission numbers")
    return [int(v) for v in values]


async def _json_body(request: Request) -> dict:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise Refused(400, "the request body must be a JSON object")
    return body


async def thread(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a worker thread: the database and the scorer block."""
    return await run_in_threadpool(function, *args, **kwargs)


def _standing(board: Board) -> tuple[list, bool, list]:
    """The board's rows in their order, whether the private half is revealed, and the final standings if it is."""
    with board.engine.connect() as connection:
        revealed = is_revealed(connection)
        rows = ranked_rows(connection, revealed)
    return rows, revealed, final_standings(rows, board.options.final_limit) if revealed else []


def _submission(board: Board, submission_id: int) -> tuple:
    """One submission's row, whether the board is revealed, its public per-query scores and its run's CSV."""
    with board.engine.connect() as connection:
        revealed = is_revealed(connection)
        row = one_row(connection, submission_id, revealed)
        if row is None:
            raise Refused(404, f"no submission {submission_id}")
        return row, revealed, public_per_query(connection, board, submission_id), csv_of(connection, submission_id)


def _public_query(board: Board, query: str) -> str:
    if query not in board.public_gt:
        raise Refused(404, f"no public query {query[:60]!r}")
    return query


def _reading(board: Board, access: Access, methods) -> dict[str, Callable]:
    """The pages, files and API answers that read the board (who may read: :class:`Access`)."""

    async def board_page(request: Request) -> Response:
        member = await thread(access.reader, request)
        rows, revealed, standings = await thread(_standing, board)
        given = request.query_params.get("submitted", "")
        highlight = int(given) if given.isdigit() and len(given) < 12 else None
        new = next((r for r in rows if r.id == highlight), None)
        notice = None if new is None else (f"submission {new.id} ({new.name}) accepted: public mAP@7 "
                                           f"{pages.figure_text(new.figure('public'))}")
        context = await thread(access.page_context, request, member)
        html = pages.board_page(board, rows, revealed, standings, methods, highlight=highlight, notice=notice,
                                **context)
        return HTMLResponse(html, headers=HEADERS)

    async def submission_page(request: Request) -> Response:
        member = await thread(access.reader, request)
        row, revealed, per_query, data = await thread(_submission, board, request.path_params["id"])
        context = await thread(access.page_context, request, member)
        answers = await thread(top7, board, data)
        html = await thread(pages.submission_page, board, row, per_query, revealed, answers, **context)
        return HTMLResponse(html, headers=HEADERS)

    async def query_page(request: Request) -> Response:
        member = await thread(access.reader, request)
        query = _public_query(board, request.path_params["query"])
        row, _, per_query, data = await thread(_submission, board, request.path_params["id"])
        context = await thread(access.page_context, request, member)
        answers = await thread(top7, board, data)
        html = await thread(pages.query_page, board, row, query, per_query[query], answers, **context)
        return HTMLResponse(html, headers=HEADERS)

    async def thumbnail(request: Request) -> Response:
        await thread(access.reader, request)
        file, query = request.path_params["file"], request.path_params.get("query")
        place = None if query is None else board.public_queries().index(_public_query(board, query))
        path = pages.thumbnail(board, request.path_params["id"], place, file) if _THUMB.fullmatch(file) else None
        if path is None or not path.is_file():
            raise Refused(404, "no such thumbnail: open the page that shows it first")
        return Response(path.read_bytes(), media_type="image/jpeg", headers=HEADERS)

    async def chart(request: Request) -> Response:
        await thread(access.reader, request)
        row, revealed, _, _ = await thread(_submission, board, request.path_params["id"])
        rows, _, _ = await thread(_standing, board)
        return Response(await thread(pages.chart, rows, row, revealed), media_type="image/svg+xml", headers=HEADERS)

    async def run_csv(request: Request) -> Response:
        await thread(access.reader, request)
        _, _, _, data = await thread(_submission, board, request.path_params["id"])
        return Response(data, media_type="text/csv; charset=utf-8", headers=HEADERS)

    async def api_board(request: Request) -> Response:
        await thread(access.reader, request)
        rows, revealed, _ = await thread(_standing, board)
        return JSONResponse({"revealed": revealed, "n_public": len(board.public_gt),
                             "submissions": [r.as_json() for r in rows]}, headers=HEADERS)

    async def api_submission(request: Request) -> Response:
        await thread(access.reader, request)
        row, _, per_query, _ = await thread(_submission, board, request.path_params["id"])
        return JSONResponse({**row.as_json(), "public_per_query": per_query}, headers=HEADERS)

    return {"board_page": board_page, "submission_page": submission_page, "query_page": query_page,
            "thumbnail": thumbnail, "chart": chart, "run_csv": run_csv, "api_board": api_board,
            "api_submission": api_submission}


def _writing(board: Board, access: Access) -> dict[str, Callable]:
    """Submitting, fusing and final marks, from the API (a token) or a page's forms (a session and its form
    token)."""

    async def submit(request: Request, member_of):
        async with request.form(max_files=2, max_fields=8) as form:
            member = await thread(member_of, request, form)
            received = await receive(board, form)
            name, note = _text(form, "name"), _text(form, "note")
        try:
            return await thread(take, board, member, received, name or None, note)
        finally:
            await thread(remove, received.folder)

    def shown(scores: dict) -> dict:
        with board.engine.connect() as connection:
            return scores if is_revealed(connection) else {"public": scores["public"]}

    async def api_submit(request: Request) -> Response:
        member = await thread(access.writer, request)  # before the body is read
        accepted = await submit(request, lambda _request, _form: member)
        return JSONResponse({"id": accepted.id, "name": accepted.name, "url": f"/submissions/{accepted.id}/",
                             "warnings": accepted.warnings, **await thread(shown, accepted.scores)},
                            status_code=201, headers=HEADERS)

    async def form_submit(request: Request) -> Response:
        accepted = await submit(request, access.form_writer)
        return RedirectResponse(f"/?submitted={accepted.id}#s{accepted.id}", status_code=303, headers=HEADERS)

    async def api_fuse(request: Request) -> Response:
        member = await thread(access.writer, request)
        body = await _json_body(request)
        method, name = body.get("method", "rrf"), body.get("name")
        if not isinstance(method, str) or not isinstance(name, (str, type(None))):
            raise Refused(400, "method and name must be text")
        accepted = await thread(fuse, board, member, _ids(body.get("inputs")), method, name or None,
                                str(body.get("note") or ""))
        return JSONResponse({"id": accepted.id, "name": accepted.name, "url": f"/submissions/{accepted.id}/",
                             **await thread(shown, accepted.scores)}, status_code=201, headers=HEADERS)

    async def form_fuse(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=200) as form:
            member = await thread(access.form_writer, request, form)
            ids, method, name = _ids(form.getlist("inputs")), _text(form, "method") or "rrf", _text(form, "name")
        accepted = await thread(fuse, board, member, ids, method, name or None)
        return RedirectResponse(f"/?submitted={accepted.id}#s{accepted.id}", status_code=303, headers=HEADERS)

    async def api_final(request: Request) -> Response:
        member = await thread(access.writer, request)
        final = (await _json_body(request)).get("final", True)
        if not isinstance(final, bool):
            raise Refused(400, "final must be true or false")
        await thread(mark_final, board, member, request.path_params["id"], final)
        return JSONResponse({"id": request.path_params["id"], "final": final}, headers=HEADERS)

    async def form_final(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=4) as form:
            member = await thread(access.form_writer, request, form)
            final = _text(form, "final") != "0"
        await thread(mark_final, board, member, request.path_params["id"], final)
        return RedirectResponse(f"/#s{request.path_params['id']}", status_code=303, headers=HEADERS)

    return {"api_submit": api_submit, "form_submit": form_submit, "api_fuse": api_fuse, "form_fuse": form_fuse,
            "api_final": api_final, "form_final": form_final}


def _sessions(board: Board, access: Access) -> dict[str, Callable]:
    """Logging in and out, and the redirect of a page's address without its slash."""

    def log_in(token: str) -> str | None:
        with board.engine.connect() as connection:
            member = member_by_token(connection, token) if token else None
            return None if member is None else session_cookie(board_secret(connection), member, board.clock())

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(pages.login_page(), headers=HEADERS)
        async with request.form(max_files=0, max_fields=4) as form:
            cookie = await thread(log_in, _text(form, "token"))
        if cookie is None:
            return HTMLResponse(pages.login_page(error="unknown token"), status_code=401, headers=HEADERS)
        response = RedirectResponse("/", status_code=303, headers=HEADERS)
        response.set_cookie(COOKIE, cookie, max_age=int(timedelta(days=SESSION_DAYS).total_seconds()),
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    async def logout(request: Request) -> Response:
        async with request.form(max_files=0, max_fields=4) as form:
            await thread(access.form_writer, request, form)
        response = RedirectResponse("/", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE)
        return response

    async def with_slash(request: Request) -> Response:
        return RedirectResponse(f"{request.url.path}/", status_code=308, headers=HEADERS)

    return {"login": login, "logout": logout, "with_slash": with_slash}


def _errors(access: Access) -> dict[str, Callable]:
    """A refusal as one line: a page (with the member's menu) or, under /api/, JSON."""

    async def refused(request: Request, exc: Refused) -> Response:
        context = {}
        if not request.url.path.startswith("/api/"):
            try:
                member = await thread(access.member_of, request)
            except Refused:
                member = None
            context = await thread(access.page_context, request, member)
        return refusal(request.url.path, exc, **context)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        words = {404: "no such page", 405: "this page does not take that method"}.get(exc.status_code, exc.detail)
        return refusal(request.url.path, Refused(exc.status_code, str(words)))

    return {"refused": refused, "http_error": http_error}


def create_app(board: Board) -> Starlette:
    """The board's app; everything it serves comes from ``board`` (and its database)."""
    access = Access(board)
    handlers = {**_reading(board, access, run_fusion_choices()), **_writing(board, access),
                **_sessions(board, access)}
    errors = _errors(access)
    routes = [
        Route("/", handlers["board_page"]),
        Route("/login", handlers["login"], methods=["GET", "POST"]),
        Route("/logout", handlers["logout"], methods=["POST"]),
        Route("/submit", handlers["form_submit"], methods=["POST"]),
        Route("/fuse", handlers["form_fuse"], methods=["POST"]),
        Route("/submissions/{id:int}", handlers["with_slash"]),
        Route("/submissions/{id:int}/", handlers["submission_page"]),
        Route("/submissions/{id:int}/final", handlers["form_final"], methods=["POST"]),
        Route("/submissions/{id:int}/run.csv", handlers["run_csv"]),
        Route("/submissions/{id:int}/chart.svg", handlers["chart"]),
        Route("/submissions/{id:int}/thumbs/{file}", handlers["thumbnail"]),
        Route("/submissions/{id:int}/queries/{query}", handlers["with_slash"]),
        Route("/submissions/{id:int}/queries/{query}/", handlers["query_page"]),
        Route("/submissions/{id:int}/queries/{query}/thumbs/{file}", handlers["thumbnail"]),
        Route("/api/board", handlers["api_board"]),
        Route("/api/submissions", handlers["api_submit"], methods=["POST"]),
        Route("/api/submissions/{id:int}", handlers["api_submission"]),
        Route("/api/submissions/{id:int}/final", handlers["api_final"], methods=["POST"]),
        Route("/api/fuse", handlers["api_fuse"], methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit, limit=body_limit(board), refuse=refusal)],
                     exception_handlers={Refused: errors["refused"], HTTPException: errors["http_error"]})
