"""What the command line shows: progress bars, tables and summaries.

The one place that draws. Stages return results and report progress through
the callback of :mod:`bpcr.progress`; the CLI passes :func:`rich_progress`
and renders the results with the functions here.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from bpcr.progress import Advance


@contextmanager
def rich_progress(label: str, total: int, done: int = 0) -> Iterator[Advance]:
    """A rich progress bar on stderr with items/s, the time left and the stage's live note (a
    :class:`bpcr.progress.Progress`; training's note is its running loss)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"),
                   console=Console(stderr=True), disable=total <= done)
    with bar:
        task = bar.add_task(label, total=total, completed=done, rate="", note="")
        started, count = time.perf_counter(), 0

        def advance(n: int = 1, note: str | None = None) -> None:
            nonlocal count
            count += n
            rate = count / max(time.perf_counter() - started, 1e-9)
            fields = {"rate": f"{rate:.1f}/s"}
            if note is not None:
                fields["note"] = note
            bar.update(task, advance=n, **fields)

        yield advance


# ---------------------------------------------------------------- stage results

def _echo(message: str, err: bool = False) -> None:
    import typer

    typer.echo(message, err=err)


def warn(message: str) -> None:
    """One warning, one line on stderr, whatever the terminal's width (never wrapped, line breaks joined)."""
    _echo(f"warning: {_one_line(message)}", err=True)


def _one_line(message: str) -> str:
    """Line breaks inside a message become spaces: one message, one line."""
    return " ".join(str(message).splitlines())


def show_written(paths) -> None:
    for path in paths:
        _echo(f"wrote {path}")


def show_stores(stores) -> None:
    """``extract``: each store written, with its shape and failures."""
    from bpcr.io.store import open_store

    for name, path in stores.items():
        store = open_store(path)
        _echo(f"wrote {path}: {len(store)} x {store.features.shape[1]} {store.features.dtype} ({name}), "
              f"{len(store.failed)} failed")


def show_index(info) -> None:
    recall = "exact" if info.kind == "flat" else f"recall@100 {info.recall_at_100:.4f}"
    _echo(f"wrote {info.path}: {info.kind} {info.distance} index of {info.count} x {info.dim} ({recall}, "
          f"{info.seconds:.1f} s)")


def show_run(result) -> None:
    """A run written by search, refine, rerank or ensemble: what the stage did, then the files."""
    prov = result.provenance
    method = prov.get("method", "")
    if method == "refine":
        counts, params = prov["counts"], prov["params"]
        _echo(f"refined {counts['queries']} queries (k={params['k']}, {params['mode']}): {counts['changed']} changed, "
              f"{counts['with_fallback']} filled partly from the input run, "
              f"{counts['mean_subset']:.1f} textual neighbours per query on average")
    elif method.startswith("refine:"):
        _echo(prov["summary"])
    elif method == "rerank":
        counted = prov["warnings"]
        for example in counted["examples"]:
            warn(example)
        total = sum(v for k, v in counted.items() if k != "examples")
        if total > len(counted["examples"]):
            warn(f"{total - len(counted['examples'])} more warnings counted in {result.written['.json']}")
        cache = prov["sift_cache"]
        invalid = cache.get("recomputed_invalid", 0)
        _echo(f"re-ranked {prov['queries']['reranked']}/{prov['queries']['total']} queries "
              f"(database descriptors: {cache['computed']} computed, {cache['reused']} cached"
              f"{f', {invalid} invalid in the cache and computed again' if invalid else ''})")
    elif method.startswith("ensemble:"):
        _show_ensemble(result)
    show_written(result.written.values())


def _show_ensemble(result) -> None:
    prov = result.provenance
    for warning in result.warnings:
        warn(warning)
    params = prov["params"]
    extra = "".join(f", {key}={params[key]:g}" for key in ("k",) if params.get(key) is not None)
    inputs = prov["fusion_inputs"]
    _echo(f"fused {len(inputs)} runs with {params['method']}{extra} over {prov['queries']['written']} queries:")
    for info in inputs:
        _echo(f"  {info['weight']:.4f}  {info['name']}")
    t = prov.get("tuning")
    if t is not None:
        _echo(f"tuned mAP@7     {t['tuned_map7']:.4f}  (weights chosen on all {t['n_queries']} queries and scored "
              f"on them: optimistic)")
        _echo(f"cross-val mAP@7 {t['cv_map7']:.4f}  95% CI [{t['cv_ci95'][0]:.4f}, {t['cv_ci95'][1]:.4f}]  "
              f"({len(t['folds'])} folds, seed {t['seed']}; each fold scored with weights chosen on the others)")
        _echo(f"equal weights   {t['equal_weights_map7']:.4f};  inputs: "
              + ", ".join(f"{n} {v:.4f}" for n, v in t["input_map7"].items()))


# ---------------------------------------------------------------- tables

def _prepare_tables(summary) -> list:
    """Rich renderables for the terminal: images per set, descriptions, timing (warnings are separate)."""
    from rich.table import Table

    images = Table(title=f"bpcr prepare -> {summary.out}", title_justify="left")
    for column in ("set", "files", "usable", "rejected", "top rejection reasons", "notes"):
        images.add_column(column, justify="right" if column in ("files", "usable", "rejected") else "left")
    for name, s in (("database", summary.database), ("queries", summary.queries)):
        reasons = sorted(s.rejected.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        notes = sorted(s.notes.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        images.add_row(name, str(s.seen), str(s.usable), str(sum(s.rejected.values())),
                       "\n".join(f"{r} ({n})" for r, n in reasons) or "-",
                       "\n".join(f"{r} ({n})" for r, n in notes) or "-")
    rendered: list = [images]
    d = summary.descriptions
    if d.file is not None:
        text = Table(title="descriptions", title_justify="left", show_header=False)
        text.add_column("what")
        text.add_column("count", justify="right")
        for label, value in (("rows", d.rows), ("attached to usable images", d.used),
                             ("usable images without a row", d.images_without_description),
                             ("rows without a usable image", d.without_image), ("empty", d.empty),
                             ("non-ASCII (kept)", d.non_ascii), ("unquoted commas joined", d.unquoted_commas),
                             ("repeated IDs (first kept)", d.duplicates), ("invalid IDs (skipped)", d.invalid_id),
                             ("too many columns (skipped)", d.bad_columns)):
            text.add_row(label, str(value))
        rendered.append(text)
    rendered.append(f"decoded {summary.decoded} images, {summary.cached} from cache, {summary.seconds:.1f} s")
    if getattr(summary, "presize", None):
        p = summary.presize
        spec, cached = p["spec"], sum(p["cached"].values())
        total = cached + sum(p["original"].values())
        kind = f"JPEG q{spec['quality']}" if spec["format"] == "jpeg" else spec["format"].upper()
        rendered.append(f"pre-sized cache ({kind}, shorter side {spec['short_side']}, longer at least "
                        f"{spec['long_side']}): {cached} of {total} images shrunk, {p['bytes'] / 1e6:.1f} MB "
                        f"({p['bytes'] / max(cached, 1) / 1e3:.1f} kB each), {p['encoded']} encoded in "
                        f"{p['seconds']:.1f} s; the rest are read from their originals")
    return rendered


def show_prepare(summary) -> None:
    """``prepare``: images per set, descriptions and timing, then one line per warning."""
    from rich.console import Console

    console = Console()
    for renderable in _prepare_tables(summary):
        if isinstance(renderable, str):
            _echo(renderable)  # a line of text is never wrapped; only tables fit the terminal
        else:
            console.print(renderable, highlight=False)
    for message in summary.warnings:
        warn(message)


def show_pipeline(result) -> None:
    """``run``: the time of every stage, skipped ones marked."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="time per stage")
    for column in ("stage", "name", "seconds", ""):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for t in result.times:
        table.add_row(t.stage, t.name, f"{t.seconds:.1f}", "skipped (up to date)" if t.skipped else "")
    table.add_row("total", "", f"{sum(t.seconds for t in result.times):.1f}", "")
    console.print(table)
    if result.leaderboard is not None:
        _echo(f"leaderboard: {result.leaderboard}")


def show_predict(result) -> None:
    """``predict``: each rejected file, what answered the queries, the time per query, the files."""
    for image_id, file, reason in result.rejected[:20]:
        warn(f"{file or image_id}: {reason}" + ("; answered by the fallback" if image_id in result.fallback_queries
                                                else ""))
    if len(result.rejected) > 20:
        warn(f"{len(result.rejected) - 20} more rejected files listed in {result.rejects}")
    fallback = (f", {len(result.fallback_queries)} of them by the fallback ({', '.join(result.fallback)})"
                if result.fallback_queries else "")
    _echo(f"answered {len(result.queries)} queries with run {result.run}{fallback}")
    _echo(f"time: {result.seconds:.1f} s in all, {result.seconds_per_query:.3f} s per query "
          "(checks, model loading and every stage included)")
    show_written([result.out_csv, result.rejects])


def pipeline_log(message: str) -> None:
    """The pipeline's log lines, printed as given: no markup, one line, never wrapped at the terminal's width."""
    _echo(_one_line(message))


def show_scores(scores, variant: str, gt_name: str) -> None:
    """``score``: warnings, then one row per run (the leaderboard's main columns)."""
    from rich.console import Console
    from rich.table import Table

    for s in scores:
        for warning in s.warnings:
            warn(warning)
    table = Table(title=f"mAP@7 ({variant}) against {gt_name}, ranked by the private half")
    for column in ("run", "private", "95% CI", "public", "all", "P@1", "acc@100", "vs baseline (private)"):
        table.add_column(column, justify="left" if column in ("run", "vs baseline (private)") else "right",
                         no_wrap=not column.startswith("vs baseline"))

    def half(s, name: str) -> tuple[str, str]:
        h = s.halves.get(name)
        if h is None or h.map7 is None:
            return "—", "—"
        return f"{h.map7:.4f}{' *' if h.in_sample else ''}", f"[{h.ci95[0]:.3f}, {h.ci95[1]:.3f}]"

    for s in scores:
        c = s.comparison
        versus = f"{c.delta:+.4f} vs {c.baseline} (p={c.p_holm:.3g})" if c else ""
        acc100 = "—" if s.top_k[100] is None else f"{s.top_k[100]:.4f}"
        private, private_ci = half(s, "private")
        table.add_row(s.name, private, private_ci, half(s, "public")[0],
                      f"{s.map7:.4f}{' *' if s.in_sample else ''}", f"{s.p_at_1:.4f}", acc100, versus)
    Console(width=max(Console().width, 140)).print(table)


def show_check(submission, report) -> None:
    """``check``: up to 50 warnings and errors, each with its line, then OK when it passes."""
    for line, reason in report.warnings[:50]:
        warn(f"{submission}{'' if line is None else f':{line}'}: {reason}")
    for line, reason in report.errors[:50]:
        _echo(f"{submission}{'' if line is None else f':{line}'}: {reason}", err=True)
    if report.ok:
        _echo(f"{submission}: OK, {report.n_lines} queries, {len(report.warnings)} warnings")


def show_sweep(result) -> None:
    """``sweep``: the table of points, then where the chosen config went."""
    _echo(result.table.read_text(encoding="utf-8").rstrip())
    _echo(f"wrote {result.table}")
    _echo(f"wrote {result.config_out} (chosen on the public half)")


def show_report(result) -> None:
    """``report``: warnings, then what the page shows and where it was written."""
    for warning in result.warnings:
        warn(warning)
    _echo(f"{result.n_shown} of {result.n_queries} queries, {len(result.runs)} runs ({', '.join(result.runs)}); "
          f"order: {result.order}")
    _echo(f"{result.thumbnails} thumbnails" + (f", {result.missing_images} not shown" if result.missing_images else ""))
    show_written([result.index])
