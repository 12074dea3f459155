"""`bpcr report`: a self-contained HTML page showing, query by query, what runs answered.

For each query: its photo, each run's top 7 as thumbnails with the relevant
ones marked (as the metric counts them: a repeated ID counts once), the
relevant database images, and each run's AP@7. At the top: each run's mAP@7 on
the private half, the public half and all queries (``bpcr.evaluation.score``) and the
leaderboard chart (``bpcr.evaluation.chart``).

Which queries: those of one half of the leaderboard's split (``half``: public by
default, private or all), so that reading queries one by one, and fixing what
they show, never looks at the private half the leaderboard ranks by unless asked;
the page and ``report.json`` say which half is shown.

Order of the queries:

- default: worst first, by the mean AP@7 over the runs, ties by query ID;
  ``limit`` keeps the first ones (the worst).
- ``diff=(A, B)``: the queries where the two runs differ, by AP(B) - AP(A)
  from the largest gain to the largest loss (what B fixed first, what it broke
  last), ties by ID; queries where they agree are counted, not listed.
  ``limit`` keeps the queries with the largest change either way, in that order.

The folder holds ``index.html``, ``leaderboard.svg``, ``report.json`` (what
was shown, from which inputs) and ``thumbs/`` (small JPEGs), so it can be
zipped and opened anywhere: plain HTML and CSS, no script, nothing fetched.
It is built beside ``out`` and swapped into place whole (``bpcr.io.folders``),
and the same inputs always give the same bytes. The options (``diff``, ``limit``,
``thumb``, ``half``, the split) are declared once, in :class:`bpcr.evaluation.options.ReportOptions`.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Mapping, Sequence

from bpcr import __version__
from bpcr.evaluation.chart import chart_svg
from bpcr.errors import BadInput
from bpcr.io.fileio import json_text
from bpcr.io.folders import REPORT, check_output_folder, replace_dir, writing_dir
from bpcr.dataset.gt import read_ground_truth
from bpcr.dataset.images import ImageError, load_rgb
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.evaluation.metrics import ap_at_k
from bpcr.evaluation.options import ReportOptions, ScoreOptions
from bpcr.options import check
from bpcr.progress import Progress, start
from bpcr.io.runs import Run, expand_run_paths, load_run
from bpcr.evaluation.score import AP_TOLERANCE, RunScore, score_runs

FORMAT = "bpcr-report/1"
DEPTH = 7
JPEG_QUALITY = 82
_MANIFEST_NAMES = {"database": "database.csv", "queries": "queries.csv"}


@dataclass
class ReportResult:
    out: Path
    index: Path
    runs: list[str]
    n_queries: int  # in the ground truth
    n_shown: int
    order: str
    thumbnails: int
    missing_images: int  # shown as a labelled box instead
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Image:
    file: str | None  # relative to the report folder; None when there is no picture
    width: int = 0
    height: int = 0
    reason: str = ""


def find_manifests(runs: Sequence[Run], db_manifest: str | Path | None = None,
                   query_manifest: str | Path | None = None) -> tuple[Path, Path]:
    """The database and query manifests: as given, else queries.csv beside a given database manifest,
    else the ``database.csv`` / ``queries.csv`` a run's JSON lists among its inputs (a re-ranked run does)."""
    db = Path(db_manifest) if db_manifest is not None else _named_input(runs, "database")
    queries = Path(query_manifest) if query_manifest is not None else None
    if queries is None and db_manifest is not None:
        queries = Path(db_manifest).with_name(_MANIFEST_NAMES["queries"])
    if queries is None:
        queries = _named_input(runs, "queries")
    for path, option, which in ((db, "--manifest-db", "database"), (queries, "--manifest-queries", "queries")):
        if path is None:
            raise BadInput(None, None, f"no run's JSON names the {which} manifest; give {option} "
                                       f"({_MANIFEST_NAMES[which]} from bpcr prepare)")
    return db, queries


def _named_input(runs: Sequence[Run], which: str) -> Path | None:
    """The first manifest of that kind a run's JSON names that is still there: ``params.db_manifest`` /
    ``params.query_manifest``, else an input file named ``database.csv`` / ``queries.csv``."""
    key = "db_manifest" if which == "database" else "query_manifest"
    for run in runs:
        params, inputs = run.provenance.get("params"), run.provenance.get("inputs")
        candidates = [params[key]] if isinstance(params, dict) and isinstance(params.get(key), str) else []
        if isinstance(inputs, list):
            candidates += [i["path"] for i in inputs if isinstance(i, dict) and isinstance(i.get("path"), str)
                           and Path(i["path"]).name == _MANIFEST_NAMES[which]]
        for path in candidates:
            if Path(path).is_file():
                return Path(path)
    return None


def order_queries(ap: Mapping[str, Mapping[str, float]], runs: Sequence[str], diff: tuple[str, str] | None = None,
                  limit: int | None = None) -> tuple[list[str], str]:
    """The queries to show, in order, and the order in words (see the module docstring).

    ``ap``: run name -> query ID -> AP@7, every run holding every query.
    """
    queries = sorted(ap[runs[0]])
    # Rounded so that equal figures summed in another order still tie, and ties go by ID as documented.
    if diff is None:
        mean = {q: round(sum(ap[r][q] for r in runs) / len(runs), 9) for q in queries}
        ordered = sorted(queries, key=lambda q: (mean[q], q))[:limit]
        words = "worst first: by the mean AP@7 over the runs, lowest first, ties by query ID"
        return ordered, words + (f"; the first {limit} of {len(queries)}" if limit and limit < len(queries) else "")
    a, b = diff
    delta = {q: round(ap[b][q] - ap[a][q], 9) for q in queries}
    changed = [q for q in queries if abs(delta[q]) > AP_TOLERANCE]
    if limit is not None:
        changed = sorted(changed, key=lambda q: (-abs(delta[q]), q))[:limit]
    ordered = sorted(changed, key=lambda q: (-delta[q], q))
    gained = sum(delta[q] > AP_TOLERANCE for q in queries)
    lost = sum(delta[q] < -AP_TOLERANCE for q in queries)
    words = (f"AP({b}) − AP({a}), largest gain first, largest loss last, ties by query ID: {gained} queries "
             f"gained, {lost} lost, {len(queries) - gained - lost} unchanged (not listed)")
    return ordered, words + (f"; the {limit} largest changes" if limit is not None and limit < gained + lost else "")


def write_report(run_paths: Sequence[str | Path], gt_path: str | Path, out: str | Path,
                 options: ReportOptions = ReportOptions(), *, db_manifest: str | Path | None = None,
                 query_manifest: str | Path | None = None, progress: Progress | None = None,
                 chosen_on: Sequence[Mapping] = ()) -> ReportResult:
    """Write the report of ``run_paths`` (files or folders of runs) against ``gt_path`` into the folder ``out``.

    ``options``: :class:`ReportOptions`, declared in :mod:`bpcr.evaluation.options`. The manifests are found
    as :func:`find_manifests` says when not given. ``chosen_on``: as :func:`bpcr.evaluation.score.score_runs`
    takes it (a config's ``[score] chosen_on``), so the page stars what the leaderboard stars.
    """
    check(options)
    out = check_output_folder(out, "--out", REPORT)  # before any work: only a report folder is replaced
    scores = score_runs(run_paths, gt_path, ScoreOptions(split_seed=options.split_seed,
                                                         public_share=options.public_share), chosen_on=chosen_on)
    gt = read_ground_truth(gt_path)
    by_name = {run.name: run for run in (load_run(stem, exact_depth=True) for stem in expand_run_paths(run_paths))}
    names = _run_order([s.name for s in scores], by_name, options.diff)
    db_path, query_path = find_manifests([by_name[n] for n in sorted(by_name)], db_manifest, query_manifest)
    manifests = {"d": read_manifest(db_path), "q": read_manifest(query_path)}
    tops = {n: by_name[n].top(DEPTH) for n in names}
    half_ids = scores[0].split.half(gt, options.half)  # the leaderboard's split: score_runs made it
    ap = {n: {q: ap_at_k(tops[n].get(q, []), gt[q], DEPTH) for q in half_ids} for n in names}
    shown, order = order_queries(ap, names, options.diff, options.limit)
    which = _half_words(options.half, len(half_ids), len(gt), scores[0].split)
    record = {"format": FORMAT, "bpcr_version": __version__, "runs": names, "ground_truth": str(gt_path),
              "manifests": {"database": str(db_path), "queries": str(query_path)}, "order": order,
              "diff": list(options.diff) if options.diff else None, "limit": options.limit, "thumb": options.thumb,
              "split": scores[0].split.describe() if scores[0].split else None,
              "half": options.half, "n_half": len(half_ids), "queries_shown": shown, "n_queries": len(gt)}

    def write(folder: Path) -> dict[str, dict[str, _Image]]:
        images = _all_thumbnails(shown, gt, names, tops, manifests, folder, options.thumb, progress)
        (folder / "leaderboard.svg").write_bytes(chart_svg(scores))
        page = _page(scores, names, gt, Path(gt_path).name, tops, ap, shown, order, images, options.diff, options.thumb,
                     which)
        (folder / "index.html").write_text(page, encoding="utf-8", newline="\n")
        (folder / "report.json").write_text(json_text(record), encoding="utf-8", newline="\n")
        return images

    images = _swap_in(out, write)
    missing = sum(image.file is None for kind in images.values() for image in kind.values())
    warnings = [w for s in scores for w in s.warnings]
    if missing:
        warnings.append(f"{missing} image{'s' if missing != 1 else ''} could not be shown (not in the manifest, "
                        "or unreadable): a labelled box in the report instead")
    n_thumbs = sum(image.file is not None for kind in images.values() for image in kind.values())
    return ReportResult(out, out / "index.html", names, len(gt), len(shown), order, n_thumbs, missing, warnings)


def query_sections(runs: Mapping[str, Mapping[str, list[str]]], gt: Mapping[str, list[str]], shown: Sequence[str],
                   manifests: Mapping[str, Manifest], folder: Path, thumb: int = 128) -> str:
    """The page's sections of the queries ``shown``, in that order, for ``runs`` (name -> query ID -> top 7),
    their thumbnails written under ``folder``/thumbs/: for a page that embeds the report's view of a few
    queries (``bpcr serve``), styled by :func:`page_style`. ``gt`` holds at least the queries shown;
    ``manifests``: ``{"q": the query manifest, "d": the database manifest}``."""
    names = list(runs)
    ap = {n: {q: ap_at_k(runs[n].get(q, []), gt[q], DEPTH) for q in shown} for n in names}
    (Path(folder) / "thumbs").mkdir(parents=True, exist_ok=True)
    images = _all_thumbnails(shown, gt, names, runs, manifests, Path(folder), thumb, None)
    return "\n".join(_query(i, q, gt[q], names, runs, ap, images, None) for i, q in enumerate(shown, start=1))


def page_style(thumb: int = 128) -> str:
    """The report's style sheet, its thumbnails ``thumb`` pixels wide."""
    return f"{_CSS}:root{{--t:{thumb}px}}"


def _half_words(half: str, n_half: int, n_all: int, split) -> str:
    """What the page says of the queries it shows: which half, how many, by which split."""
    how = f"split seed {split.seed}, public share {split.public_share}"
    if half == "all":
        return (f"all {n_all} queries, both halves ({how}): the private half, which the leaderboard ranks by, "
                "is shown too")
    words = f"the {half} half only: {n_half} of the {n_all} queries ({how})"
    if half == "private":
        return words + ": the queries the leaderboard ranks by; a choice made from what they show is in-sample"
    return words + "; the private half, which the leaderboard ranks by, is not shown (--half private or all)"


def _run_order(ranked: list[str], by_name: Mapping[str, Run], diff: tuple[str, str] | None) -> list[str]:
    """The runs in the leaderboard's order; with ``diff`` (A, B), A and B first (both must be reported)."""
    if diff is None:
        return ranked
    for name in diff:
        if name not in by_name:
            raise BadInput(None, None, f"--diff {name!r} is not one of the runs reported: {', '.join(ranked)}")
    if diff[0] == diff[1]:
        raise BadInput(None, None, f"--diff needs two different runs, got {diff[0]!r} twice")
    return [*diff, *(n for n in ranked if n not in diff)]


def _swap_in(out: Path, write):
    """Run ``write(folder)`` on a folder beside ``out`` with its thumbs/, then swap it into place whole
    (``bpcr.io.folders``); nothing is left behind on failure. Returns what ``write`` returns."""
    tmp = writing_dir(out)
    (tmp / "thumbs").mkdir()
    try:
        made = write(tmp)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return made


def _all_thumbnails(shown: Sequence[str], gt: Mapping[str, list[str]], names: Sequence[str],
                    tops: Mapping[str, Mapping[str, list[str]]], manifests: Mapping[str, Manifest], folder: Path,
                    size: int, progress: Progress | None) -> dict[str, dict[str, _Image]]:
    """Thumbnails of the queries shown ("q") and of every database image their rows show ("d")."""
    query_ids = sorted(shown)
    db_ids = sorted({d for q in shown for d in [*gt[q][:DEPTH], *(x for n in names for x in tops[n].get(q, []))]})
    return {"q": _thumbnails(query_ids, manifests["q"], "q", folder, size, progress),
            "d": _thumbnails(db_ids, manifests["d"], "d", folder, size, progress)}


def _thumbnails(ids: Sequence[str], manifest: Manifest, prefix: str, folder: Path, size: int,
                progress: Progress | None) -> dict[str, _Image]:
    """One small JPEG per image, named by its place among the sorted IDs (file names never depend on
    an ID's case, which some file systems fold)."""
    from PIL import Image

    index = manifest.index()
    made: dict[str, _Image] = {}
    label = "query thumbnails" if prefix == "q" else "database thumbnails"
    with start(progress, label, len(ids)) as advance:
        for number, image_id in enumerate(ids, start=1):
            row = index.get(image_id)
            if row is None:
                made[image_id] = _Image(None, reason=f"not in {manifest.path.name}")
            else:
                try:
                    image = load_rgb(manifest.paths[row])
                except (ImageError, OSError) as exc:
                    made[image_id] = _Image(None, reason=getattr(exc, "reason", None) or exc.strerror or str(exc))
                else:
                    image.thumbnail((size, size), Image.Resampling.LANCZOS)
                    name = f"thumbs/{prefix}{number:06d}.jpg"
                    image.save(folder / name, "JPEG", quality=JPEG_QUALITY, optimize=True)
                    made[image_id] = _Image(name, image.width, image.height)
            advance(1)
    return made


# ---------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em;color:#222;background:#f6f6f6}
h1{font-size:1.5em;margin:0 0 .3em}h2{font-size:1.1em;margin:0}
table.summary{border-collapse:collapse;background:#fff;margin:.6em 0}
table.summary th,table.summary td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.summary th:first-child,table.summary td:first-child{text-align:left}
.chart{display:block;max-width:100%;height:auto;background:#fff;border:1px solid #ccc;margin:.6em 0}
.legend span{margin-right:1.2em}
.query{background:#fff;border:1px solid #ccc;border-radius:4px;margin:1em 0;padding:.6em}
.qhead{display:flex;gap:1em;align-items:center;margin-bottom:.4em}
table.ranks{border-collapse:separate;border-spacing:4px 6px}
table.ranks th{text-align:left;font-weight:normal;vertical-align:middle;min-width:11em;max-width:16em;
  overflow-wrap:anywhere}
.ap{font-weight:bold;font-variant-numeric:tabular-nums}
figure{margin:0;width:calc(var(--t) + 6px);font-size:11px;text-align:center}
.box{width:var(--t);height:var(--t);display:flex;align-items:center;justify-content:center;border:3px solid #ddd;
  background:#fff;overflow:hidden}
.box img{display:block;max-width:100%;max-height:100%}
figcaption{overflow-wrap:anywhere;line-height:1.2;margin-top:2px}
.rel .box{border-color:#1a9641}.rel figcaption{color:#1a7031;font-weight:bold}
.dup .box{border-style:dashed}
.missing{color:#a00;font-size:11px;padding:4px;text-align:center;background:#fff3f3}
.empty{color:#999}
.gt th{color:#1a7031}
.plus{color:#1a7031}.minus{color:#b2182b}
"""


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _figure(image: _Image, image_id: str, caption: str, classes: str = "", data: str = "") -> str:
    cls = f' class="{classes}"' if classes else ""
    if image.file is None:
        inner = f'<div class="box missing" title="{escape(image.reason)}">no image<br>{escape(image.reason)}</div>'
    else:
        inner = (f'<div class="box"><img src="{image.file}" width="{image.width}" height="{image.height}" '
                 f'alt="{escape(image_id)}"></div>')
    return f'<figure{cls} data-id="{escape(image_id)}"{data}>{inner}<figcaption>{caption}</figcaption></figure>'


def _run_row(name: str, ranked: Sequence[str], relevant: set[str], ap: float, images: Mapping[str, _Image]) -> str:
    cells, seen = [], set()
    for rank, db_id in enumerate(ranked[:DEPTH], start=1):
        hit = db_id in relevant and db_id not in seen  # as the metric counts it
        repeat = db_id in seen
        seen.add(db_id)
        mark = " ✓" if hit else (" (repeat)" if repeat else "")
        classes = "rel" if hit else ("dup" if repeat else "")
        data = f' data-rank="{rank}" data-relevant="{int(hit)}"'
        cells.append(f"<td>{_figure(images[db_id], db_id, f'{rank}. {escape(db_id)}{mark}', classes, data)}</td>")
    cells += ['<td class="empty">—</td>'] * (DEPTH - len(ranked[:DEPTH]))
    note = "" if ranked else "<br>no answer"
    return (f'<tr class="run" data-run="{escape(name)}" data-ap="{ap:.6f}"><th>{escape(name)}<br>'
            f'<span class="ap">AP@7 {_f(ap)}</span>{note}</th>{"".join(cells)}</tr>')


def _query(position: int, query_id: str, relevant: Sequence[str], names: Sequence[str],
           tops: Mapping[str, Mapping[str, list[str]]], ap: Mapping[str, Mapping[str, float]],
           images: Mapping[str, Mapping[str, _Image]], diff: tuple[str, str] | None) -> str:
    mean = sum(ap[n][query_id] for n in names) / len(names)
    figures = [f"mean AP@7 <span class=\"ap\">{_f(mean)}</span>", f"{len(relevant)} relevant"]
    if diff is not None:
        delta = ap[diff[1]][query_id] - ap[diff[0]][query_id]
        figures.insert(0, f'AP({escape(diff[1])}) − AP({escape(diff[0])}) '
                          f'<span class="ap {"plus" if delta > 0 else "minus"}">{delta:+.4f}</span>')
    rows = [_run_row(n, tops[n].get(query_id, []), set(relevant), ap[n][query_id], images["d"]) for n in names]
    gt_cells = "".join(f"<td>{_figure(images['d'][d], d, escape(d), 'rel')}</td>" for d in relevant[:DEPTH])
    more = f"<br>and {len(relevant) - DEPTH} more" if len(relevant) > DEPTH else ""
    rows.append(f'<tr class="gt"><th>relevant ({len(relevant)}){more}</th>{gt_cells}</tr>')
    return (f'<section class="query" id="q{position}" data-query="{escape(query_id)}" data-position="{position}" '
            f'data-mean-ap="{mean:.6f}"><div class="qhead">{_figure(images["q"][query_id], query_id, "query")}'
            f'<div><h2>{position}. {escape(query_id)}</h2><p>{" · ".join(figures)}</p></div></div>'
            f'<table class="ranks">{"".join(rows)}</table></section>')


def _summary(scores: Sequence[RunScore]) -> str:
    """One row per run in the leaderboard's order: mAP@7 on each half and on all queries, P@1, hit@7."""
    def half(s: RunScore, name: str) -> tuple[str, str]:
        h = s.halves.get(name)
        if h is None or h.map7 is None:
            return "—", "—"
        return _f(h.map7) + (" *" if h.in_sample else ""), f"[{_f(h.ci95[0])}, {_f(h.ci95[1])}]"

    head = ("<tr><th>run</th><th>private mAP@7</th><th>95% interval</th><th>public mAP@7</th><th>all mAP@7</th>"
            "<th>P@1</th><th>hit@7</th></tr>")
    rows = []
    for s in scores:
        private, interval = half(s, "private")
        cells = [escape(s.name), private, interval, half(s, "public")[0], _f(s.map7) + (" *" if s.in_sample else ""),
                 _f(s.p_at_1), _f(s.hit_at_7)]
        rows.append(f'<tr data-run="{escape(s.name)}">{"".join(f"<td>{c}</td>" for c in cells)}</tr>')
    first = scores[0]
    counts = {h: (first.halves[h].n_queries if h in first.halves else 0) for h in ("private", "public")}
    note = (f"<p>Ranked by the private half ({counts['private']} queries); public half {counts['public']} queries, "
            f"all {first.n_queries}. * in-sample: a choice the run depends on (tuned weights, swept settings, a "
            f"default chosen from a benchmark) was made on some of those queries.</p>")
    return f'<table class="summary">{head}{"".join(rows)}</table>{note}'


def _page(scores: Sequence[RunScore], names: Sequence[str], gt: Mapping[str, list[str]], gt_name: str,
          tops: Mapping[str, Mapping[str, list[str]]], ap: Mapping[str, Mapping[str, float]], shown: Sequence[str],
          order: str, images: Mapping[str, Mapping[str, _Image]], diff: tuple[str, str] | None, thumb: int,
          which: str = "") -> str:
    title = f"bpcr report: {', '.join(names)}" if len(names) <= 4 else f"bpcr report: {len(names)} runs"
    body = "\n".join(_query(i, q, gt[q], names, tops, ap, images, diff) for i, q in enumerate(shown, start=1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{_CSS}:root{{--t:{thumb}px}}</style>
</head><body>
<header><h1>{escape(title)}</h1>
<p>Ground truth <code>{escape(gt_name)}</code>: {len(gt)} queries; mAP@7 as the challenge defines it.</p>
{_summary(scores)}
<img class="chart" src="leaderboard.svg" alt="leaderboard chart: private mAP@7 of each run with its 95% interval">
<p class="legend" id="half"><span><b>Queries shown</b>: {escape(which)}.</span></p>
<p class="legend"><span><b>Order</b>: {escape(order)}.</span></p>
<p class="legend"><span>Each row: a run's top {DEPTH}, best first.</span><span>green frame and ✓: relevant</span>
<span>dashed frame: a repeated ID (counts once)</span><span>last row: the relevant database images</span></p>
</header>
<main>
{body or "<p>No query to show.</p>"}
</main>
</body></html>
"""
