"""`bpcr report`: a self-contained HTML page showing, query by query, what runs answered.

For each query: its photo, each run's top 7 as thumbnails with the relevant
ones marked (as the metric counts them: a repeated ID counts once), the
relevant database images, and each run's AP@7. At the top: each run's mAP@7 on
the private half, the public half and all queries (``bpcr.evaluation.score``) and the
leaderboard chart (``bpcr.evaluation.chart``).

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
and the same inputs always give the same bytes.
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
from bpcr.io.folders import REPORT, check_output_folder, replace_dir
from bpcr.dataset.gt import read_ground_truth
from bpcr.dataset.images import ImageError, load_rgb
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.evaluation.metrics import ap_at_k
from bpcr.progress import Progress, start
from bpcr.ranges import REPORT_LIMIT_MAX, THUMB_MAX, THUMB_MIN, check_range
from bpcr.io.runs import Run, expand_run_paths, load_run
from bpcr.evaluation.score import AP_TOLERANCE, RunScore, score_runs
from bpcr.evaluation.split import DEFAULT_PUBLIC_SHARE, DEFAULT_SEED

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
                 db_manifest: str | Path | None = None, query_manifest: str | Path | None = None,
                 diff: tuple[str, str] | None = None, limit: int | None = None, thumb: int = 128,
                 split_seed: int = DEFAULT_SEED, public_share: float = DEFAULT_PUBLIC_SHARE,
                 progress: Progress | None = None) -> ReportResult:
    """Write the report of ``run_paths`` (files or folders of runs) against ``gt_path`` into the folder ``out``."""
    check_range("--thumb", thumb, THUMB_MIN, THUMB_MAX, integer=True)
    check_range("--limit", limit, 1, REPORT_LIMIT_MAX, integer=True, optional=True)
    out = check_output_folder(out, "--out", REPORT)  # before any work: only a report folder is replaced
    scores = score_runs(run_paths, gt_path, split_seed=split_seed, public_share=public_share)
    gt = read_ground_truth(gt_path)
    by_name = {run.name: run for run in (load_run(stem, exact_depth=True) for stem in expand_run_paths(run_paths))}
    names = [s.name for s in scores]  # the leaderboard's order
    if diff is not None:
        for name in diff:
            if name not in by_name:
                raise BadInput(None, None, f"--diff {name!r} is not one of the runs reported: {', '.join(names)}")
        if diff[0] == diff[1]:
            raise BadInput(None, None, f"--diff needs two different runs, got {diff[0]!r} twice")
        names = [*diff, *(n for n in names if n not in diff)]
    db_path, query_path = find_manifests([by_name[n] for n in sorted(by_name)], db_manifest, query_manifest)
    db, queries = read_manifest(db_path), read_manifest(query_path)
    tops = {n: by_name[n].top(DEPTH) for n in names}
    ap = {n: {q: ap_at_k(tops[n].get(q, []), gt[q], DEPTH) for q in gt} for n in names}
    shown, order = order_queries(ap, names, diff, limit)

    tmp = out.with_name(f".{out.name}.writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "thumbs").mkdir(parents=True)
    try:
        query_ids = sorted(shown)
        db_ids = sorted({d for q in shown for d in [*gt[q][:DEPTH], *(x for n in names for x in tops[n].get(q, []))]})
        images = {"q": _thumbnails(query_ids, queries, "q", tmp, thumb, progress),
                  "d": _thumbnails(db_ids, db, "d", tmp, thumb, progress)}
        missing = sum(image.file is None for kind in images.values() for image in kind.values())
        (tmp / "leaderboard.svg").write_bytes(chart_svg(scores))
        page = _page(scores, names, gt, Path(gt_path).name, tops, ap, shown, order, images, diff, thumb)
        (tmp / "index.html").write_text(page, encoding="utf-8", newline="\n")
        record = {"format": FORMAT, "bpcr_version": __version__, "runs": names, "ground_truth": str(gt_path),
                  "manifests": {"database": str(db_path), "queries": str(query_path)}, "order": order,
                  "diff": list(diff) if diff else None, "limit": limit, "thumb": thumb,
                  "split": scores[0].split.describe() if scores[0].split else None,
                  "queries_shown": shown, "n_queries": len(gt)}
        (tmp / "report.json").write_text(json_text(record), encoding="utf-8", newline="\n")
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    warnings = [w for s in scores for w in s.warnings]
    if missing:
        warnings.append(f"{missing} image{'s' if missing != 1 else ''} could not be shown (not in the manifest, "
                        "or unreadable): a labelled box in the report instead")
    n_thumbs = sum(image.file is not None for kind in images.values() for image in kind.values())
    return ReportResult(out, out / "index.html", names, len(gt), len(shown), order, n_thumbs, missing, warnings)


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
            f"all {first.n_queries}. * in-sample: the run was tuned on some of those queries.</p>")
    return f'<table class="summary">{head}{"".join(rows)}</table>{note}'


def _page(scores: Sequence[RunScore], names: Sequence[str], gt: Mapping[str, list[str]], gt_name: str,
          tops: Mapping[str, Mapping[str, list[str]]], ap: Mapping[str, Mapping[str, float]], shown: Sequence[str],
          order: str, images: Mapping[str, Mapping[str, _Image]], diff: tuple[str, str] | None, thumb: int) -> str:
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
<p class="legend"><span><b>Order</b>: {escape(order)}.</span></p>
<p class="legend"><span>Each row: a run's top {DEPTH}, best first.</span><span>green frame and ✓: relevant</span>
<span>dashed frame: a repeated ID (counts once)</span><span>last row: the relevant database images</span></p>
</header>
<main>
{body or "<p>No query to show.</p>"}
</main>
</body></html>
"""
