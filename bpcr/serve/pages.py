"""The board's HTML: the board, a submission's page, a query's page, the log-in page, an error page.

Pages are Jinja2 templates (``templates/``, every value escaped); what a page shows of one query is
``bpcr report``'s own view of it (:func:`bpcr.evaluation.report.query_sections`), and the chart is
``bpcr report``'s (:func:`bpcr.evaluation.chart.chart_svg`). While the private half is hidden the pages get
public figures only (:mod:`bpcr.serve.standings`) and the public half of the ground truth, so nothing they
show can depend on the private half. A submission never changes, so its thumbnails are made once, into the
data folder's ``cache/`` (a folder named by the submission's number and the query's place, never by a name
a user gave), and kept.
"""
from __future__ import annotations

import os
import secrets
import shutil
import threading
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

from bpcr.io.textio import size_text
from bpcr.serve.board import Board
from bpcr.serve.standings import Row

WORST_SHOWN = 5  # the worst public queries a submission's page shows as the report does
CHART_ROWS = 10  # the board's best submissions the chart of a submission's page draws beside it
THUMB = 96
_STYLE = """
nav.top{display:flex;gap:1.2em;align-items:center;margin-bottom:1em}
form.inline{display:inline;margin:0}
.error{background:#fdecea;border:1px solid #b2182b;color:#7a0f1d;padding:.5em .8em}
.notice{background:#e8f5e9;border:1px solid #1a9641;padding:.5em .8em}
table.board{border-collapse:collapse;background:#fff;margin:.6em 0}
table.board th,table.board td{border:1px solid #ccc;padding:.25em .6em;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.lead{font-weight:bold}
tr.new{background:#fff8d6}.id{color:#777;font-weight:normal}td.what{max-width:28em}
.bar{display:inline-block;height:.8em;background:#4c72b0}
section.forms{display:flex;flex-wrap:wrap;gap:2em}section.forms form{background:#fff;border:1px solid #ccc;padding:.8em}
section.forms label{display:block;margin:.3em 0}.small{font-size:12px;color:#555}
"""


@lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    return Environment(loader=FileSystemLoader(str(Path(__file__).with_name("templates"))),
                       autoescape=select_autoescape(default=True, default_for_string=True))


def figure_text(half: dict) -> str:
    value = half.get("map7")
    return "—" if value is None else f"{value:.4f}" + (" *" if half.get("in_sample") else "")


def _interval(half: dict) -> str:
    ci = half.get("ci95")
    return "—" if not ci else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def render(template: str, **context) -> str:
    from bpcr.evaluation.report import page_style

    context.setdefault("style", page_style(THUMB) + _STYLE)
    for key in ("member", "form_token", "error", "notice"):
        context.setdefault(key, None)
    return _environment().get_template(template).render(figure=figure_text, interval=_interval, number=_number,
                                                        **context)


def board_page(board: Board, rows: Sequence[Row], revealed: bool, standings, methods: Sequence[str],
               **context) -> str:
    n_public = len(board.public_gt)
    return render("board.html", title="Team leaderboard", rows=rows, revealed=revealed, standings=standings,
                  gt_name=board.gt_path.name, n_public=n_public, n_private=len(board.gt) - n_public,
                  final_limit=board.options.final_limit, daily_limit=board.options.daily_limit,
                  max_size=size_text(board.options.max_bytes), methods=methods, **context)


def submission_page(board: Board, row: Row, per_query: dict[str, float], revealed: bool, top7: dict[str, list[str]],
                    **context) -> str:
    ordered = sorted(per_query.items(), key=lambda item: (round(item[1], 9), item[0]))
    worst = [q for q, _ in ordered[:WORST_SHOWN]]
    sections = _sections(board, row, top7, worst, board.cache / f"s{row.id}" / "worst")
    halves = ("private", "public", "all") if revealed else ("public",)
    return render("submission.html", title=f"{row.name} #{row.id}", row=row, revealed=revealed, halves=halves,
                  per_query=ordered, worst=worst, sections=sections, chart_words=_chart_words(revealed), **context)


def query_page(board: Board, row: Row, query: str, ap: float, top7: dict[str, list[str]], **context) -> str:
    place = board.public_queries().index(query)
    sections = _sections(board, row, top7, [query], board.cache / f"s{row.id}" / f"q{place:06d}")
    return render("query.html", title=f"{query} in {row.name} #{row.id}", row=row, query=query, ap=ap,
                  sections=sections, **context)


def error_page(reason: str, **context) -> str:
    return render("error.html", title="bpcr board: refused", error=reason, **context)


def login_page(**context) -> str:
    return render("login.html", title="Log in to the board", **context)


def _sections(board: Board, row: Row, top7: dict[str, list[str]], shown: list[str], folder: Path) -> str:
    """The report's view of the queries ``shown`` (public ones), made once into ``folder`` and kept."""
    from bpcr.evaluation.report import query_sections

    page = folder / "sections.html"
    if not page.exists():
        work = folder.parent / f".making-{secrets.token_hex(6)}"
        work.mkdir(parents=True)
        try:
            html = query_sections({row.name: top7}, board.public_gt, shown, board.manifests, work, THUMB)
            (work / "sections.html").write_text(html, encoding="utf-8")
            try:
                os.rename(work, folder)
            except OSError:  # made meanwhile by another request: the same bytes
                pass
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return page.read_text(encoding="utf-8")


def thumbnail(board: Board, submission_id: int, place: int | None, file: str) -> Path:
    """The path of a thumbnail a page made: ``file`` is checked by the caller (``[dq]NNNNNN.jpg``)."""
    folder = board.cache / f"s{submission_id}" / ("worst" if place is None else f"q{place:06d}")
    return folder / "thumbs" / file


def _chart_words(revealed: bool) -> str:
    half = "private" if revealed else "public"
    return f"{half} mAP@7 (95% bootstrap interval over the {half} queries)"


_CHART_LOCK = threading.Lock()  # matplotlib's pyplot is not thread-safe


def chart(rows: Sequence[Row], row: Row, revealed: bool) -> bytes:
    """``bpcr report``'s chart of the board's best submissions and this one, on the half the board ranks by."""
    half = "private" if revealed else "public"
    drawn = list(rows[:CHART_ROWS]) + ([row] if row.id not in {r.id for r in rows[:CHART_ROWS]} else [])
    key = tuple((r.id, r.name, r.figure(half)["map7"], tuple(r.figure(half)["ci95"] or ())) for r in drawn)
    return _chart(key, _chart_words(revealed))


@lru_cache(maxsize=256)
def _chart(key: tuple, words: str) -> bytes:
    from bpcr.evaluation.chart import chart_svg

    bars = [SimpleNamespace(name=f"{name} #{number}", map7=value or 0.0, ci95=ci or (value or 0.0, value or 0.0),
                            halves={}) for number, name, value, ci in key]
    with _CHART_LOCK:
        return chart_svg(bars, xlabel=words)
