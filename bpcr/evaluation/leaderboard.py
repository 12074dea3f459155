"""The leaderboard's outputs: Markdown with its chart, JSON, per-query APs, CSV and LaTeX.

Every output is rendered from the scores of :mod:`bpcr.evaluation.score` (the same scores
always give the same bytes: no dates, since runs are re-made) and all of one
scoring are written as one group (:func:`bpcr.io.fileio.write_group`), after every
target was checked (:func:`check_outputs`, which a caller runs before scoring
to refuse a bad target early).
"""
from __future__ import annotations

import csv
import html
import io
import os
import re
from pathlib import Path
from typing import Sequence

from bpcr.errors import BadInput
from bpcr.io.fileio import json_text, write_group
from bpcr.io.folders import check_output_file
from bpcr.io.textio import inert_cell
from bpcr.evaluation.score import HalfScore, RunScore


def _f(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    """User-derived text (a run's method, a choice's description) in a table cell or a line: on one line, its
    pipes escaped, and ``<``, ``>``, ``&`` as entities, so no file name or provenance becomes markup."""
    return html.escape(text.replace("\n", " "), quote=False).replace("|", "\\|")


def _code(text: str, in_table: bool = True) -> str:
    """User-derived text (a run or file name) as a Markdown code span that holds it whatever it contains: the
    fence is one backtick longer than its longest run of backticks (CommonMark), and HTML inside stays text."""
    text = text.replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|') if in_table else text}{pad}{fence}"


def _half(s: RunScore, half: str) -> HalfScore:
    return s.halves.get(half) or HalfScore(None, None, 0)


def _marked(value: float | None, in_sample: bool) -> str:
    return _f(value) + (" *" if in_sample and value is not None else "")


def _interval(ci: tuple[float, float] | None) -> str:
    return "—" if ci is None else f"[{_f(ci[0])}, {_f(ci[1])}]"


def render_leaderboard(scores: Sequence[RunScore], gt_name: str, chart: str | None = None) -> str:
    """Markdown leaderboard; the same scores always give the same bytes (no dates: runs are re-made)."""
    n = scores[0].n_queries if scores else 0
    split = next((s.split for s in scores if s.split is not None), None)
    n_public = _half(scores[0], "public").n_queries if scores else 0
    n_private = _half(scores[0], "private").n_queries if scores else 0
    how = ""
    if split is not None:
        how = (f" Queries are split into a public half ({n_public}) and a private half ({n_private}) by a seeded hash "
               f"of their IDs (seed {split.seed}, public share {split.public_share}): choices are tuned on the "
               "public half only, runs are ranked by their private mAP@7, and comparisons with a baseline are made "
               "on the private half. `*` marks an in-sample figure: it holds queries that a choice the run depends "
               "on was made on (weights tuned by `ensemble --tune-on`, settings chosen by `bpcr sweep`, or a "
               "default fixed in the code from a benchmark; in the run or a run it was derived from), listed "
               "below the table.")
    lines = [
        "# Leaderboard",
        "",
        f"Ground truth: {_code(gt_name, in_table=False)} ({n} queries). mAP@7 is the challenge definition; "
        "the interval is a seeded 95% bootstrap over queries. Against a baseline: share of queries whose AP "
        "improved / impaired, and a paired randomisation test (p with the +1 correction, Holm-adjusted)." + how +
        " P@1, hit@7 and top-k accuracy are over all queries.",
        "",
    ]
    if chart:
        lines += [f"![private mAP@7 with 95% intervals]({chart})", ""]
    lines += [
        "| # | run | private mAP@7 | private 95% CI | public mAP@7 | all mAP@7 | all 95% CI | P@1 | hit@7 | acc@20 "
        "| acc@100 | vs baseline | Δ private mAP@7 | improved / impaired | p (Holm) | method |",
        "|---:|---|---:|---|---:|---:|---|---:|---:|---:|---:|---|---:|---|---:|---|",
    ]
    for rank, s in enumerate(scores, start=1):
        c = s.comparison
        private, public = _half(s, "private"), _half(s, "public")
        lines.append(
            "| " + " | ".join([
                str(rank), _code(s.name), _marked(private.map7, private.in_sample), _interval(private.ci95),
                _marked(public.map7, public.in_sample), _marked(s.map7, s.in_sample), _interval(s.ci95),
                _f(s.p_at_1), _f(s.hit_at_7), _f(s.top_k.get(20)), _f(s.top_k.get(100)),
                _code(c.baseline) if c else "—",
                f"{c.delta:+.4f}" if c else "—",
                f"{c.improved:.0%} / {c.impaired:.0%}" if c else "—",
                f"{c.p_holm:.4f}" if c else "—",
                _cell(s.summary) or "—",
            ]) + " |"
        )
    return "\n".join(lines + _in_sample_notes(scores)) + "\n"


def _in_sample_notes(scores: Sequence[RunScore]) -> list[str]:
    """Below the table: each starred run and the choices on queries that star it."""
    notes = []
    for s in scores:
        reached = [c for c in s.choices if c.query_ids & set(s.per_query)]
        if not reached or not s.in_sample:
            continue
        starred = ", ".join([h for h in ("private", "public") if _half(s, h).in_sample] + ["all"])
        parts = []
        for c in reached:
            n = len(c.query_ids & set(s.per_query))
            source = f" (in its input {_code(c.source, in_table=False)})" if c.source else ""
            parts.append(f"{_cell(c.what)}{source}, by {_code(c.by, in_table=False)}: {n} of the scored queries")
        notes.append(f"- {_code(s.name, in_table=False)} (in-sample: {starred}): " + "; ".join(parts))
    return ["", "In-sample figures (`*`), and the choices that make them so:", ""] + notes if notes else []


def scores_json(scores: Sequence[RunScore]) -> dict:
    """The ``--json`` document (DESIGN.md "Interfaces"), with extra keys beside the pinned ones."""
    runs = {}
    for s in scores:
        entry = {
            "map7": s.map7, "p_at_1": s.p_at_1, "hit_at_7": s.hit_at_7, "n_queries": s.n_queries,
            "ci95": [s.ci95[0], s.ci95[1]],
            "variants": s.variants, "top_k": {str(k): v for k, v in s.top_k.items()},
            "missing_queries": s.missing, "unknown_queries": s.unknown, "in_sample": s.in_sample,
            "chosen_on": [c.describe(s.per_query) for c in s.choices],
        }
        for half, h in s.halves.items():
            entry[half] = {"map7": h.map7, "n_queries": h.n_queries,
                           "ci95": None if h.ci95 is None else [h.ci95[0], h.ci95[1]], "in_sample": h.in_sample}
        if s.comparison:
            c = s.comparison
            entry["vs_baseline"] = {"baseline": c.baseline, "delta": c.delta, "improved": c.improved,
                                    "impaired": c.impaired, "p_value": c.p_value, "p_holm": c.p_holm}
        if s.variant_plugin:  # a plugin's headline variant: which one, from which distribution and version
            entry["variant_plugin"] = s.variant_plugin
        runs[s.name] = entry
    split = next((s.split for s in scores if s.split is not None), None)
    return {"runs": runs, "split": None if split is None else split.describe()}


SIGNIFICANCE = 0.05  # Holm-adjusted p below this marks a difference from the baseline as significant


def leaderboard_csv(scores: Sequence[RunScore]) -> str:
    """The leaderboard as CSV, in its order: one row per run, every figure unrounded."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "run", "private_map7", "private_ci95_low", "private_ci95_high", "private_in_sample",
                     "public_map7", "public_in_sample", "map7", "ci95_low", "ci95_high", "in_sample", "p_at_1",
                     "hit_at_7", "acc_at_20", "acc_at_100", "n_queries", "baseline", "delta_private",
                     "improved", "impaired", "p_holm", "method"])
    for rank, s in enumerate(scores, start=1):
        private, public, c = _half(s, "private"), _half(s, "public"), s.comparison
        writer.writerow([
            rank, inert_cell(s.name), _raw(private.map7), *(_raw(v) for v in (private.ci95 or (None, None))),
            private.in_sample, _raw(public.map7), public.in_sample, _raw(s.map7), _raw(s.ci95[0]), _raw(s.ci95[1]),
            s.in_sample, _raw(s.p_at_1), _raw(s.hit_at_7), _raw(s.top_k.get(20)), _raw(s.top_k.get(100)),
            s.n_queries, inert_cell(c.baseline) if c else "", _raw(c.delta if c else None), _raw(c.improved if c else None),
            _raw(c.impaired if c else None), _raw(c.p_holm if c else None), inert_cell(s.summary),
        ])
    return buf.getvalue()


def _raw(value: float | None) -> str:
    return "" if value is None else repr(float(value))


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(char, char) for char in text)


def leaderboard_latex(scores: Sequence[RunScore], gt_name: str) -> str:
    """A booktabs table of the leaderboard (as ranx's ``to_latex`` gives): private, public and all mAP@7.

    A dagger marks a run significantly better than its baseline on the private
    half (Holm-adjusted p < 0.05), a double dagger significantly worse; an
    asterisk marks an in-sample figure. Needs ``\\usepackage{booktabs}``.
    """
    lines = [
        r"\begin{table}[t]", r"\centering",
        r"\caption{mAP@7 on " + _tex(gt_name) + r" (private half: ranking; $\dagger$/$\ddagger$: significantly "
        r"better/worse than the baseline on the private half, Holm-adjusted $p < " + f"{SIGNIFICANCE:g}" +
        r"$; $^{*}$: in-sample).}",
        r"\begin{tabular}{rlrrrl}", r"\toprule",
        r"\# & Run & Private & Public & All & Baseline \\", r"\midrule",
    ]
    for rank, s in enumerate(scores, start=1):
        private, public, c = _half(s, "private"), _half(s, "public"), s.comparison
        mark = ""
        if c is not None and c.p_holm < SIGNIFICANCE:
            mark = r"$^{\dagger}$" if c.delta > 0 else r"$^{\ddagger}$"

        def cell(value: float | None, in_sample: bool) -> str:
            return "--" if value is None else f"{value:.4f}" + (r"$^{*}$" if in_sample else "")

        lines.append(" & ".join([str(rank), r"\texttt{" + _tex(s.name) + "}", cell(private.map7, private.in_sample) + mark,
                                 cell(public.map7, public.in_sample), cell(s.map7, s.in_sample),
                                 r"\texttt{" + _tex(c.baseline) + "}" if c else "--"]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def per_query_csv(scores: Sequence[RunScore]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "query_id", "ap"])
    for s in sorted(scores, key=lambda s: s.name):
        for query in sorted(s.per_query):
            writer.writerow([s.name, query, f"{s.per_query[query]:.6f}"])
    return buf.getvalue()


def _output_targets(leaderboard: Path | None, json_out: Path | None, per_query_out: Path | None,
                    chart: bool, csv_out: Path | None = None, latex_out: Path | None = None
                    ) -> dict[str, tuple[str, Path]]:
    """Each output as kind -> (its option, its path); the chart goes beside the leaderboard as .svg."""
    targets: dict[str, tuple[str, Path]] = {}
    if leaderboard is not None:
        leaderboard = Path(leaderboard)
        if chart:
            targets["chart"] = ("--leaderboard", leaderboard.with_name(leaderboard.stem + ".svg"))
        targets["leaderboard"] = ("--leaderboard", leaderboard)
    if json_out is not None:
        targets["json"] = ("--json", Path(json_out))
    if per_query_out is not None:
        targets["per_query"] = ("--per-query", Path(per_query_out))
    if csv_out is not None:
        targets["csv"] = ("--csv", Path(csv_out))
    if latex_out is not None:
        targets["latex"] = ("--latex", Path(latex_out))
    return targets


def check_outputs(leaderboard: Path | None, json_out: Path | None, per_query_out: Path | None,
                  chart: bool = True, csv_out: Path | None = None, latex_out: Path | None = None) -> None:
    """Refuse (BadInput naming the option) an output that cannot be written, or two outputs in one file.

    Called by :func:`write_outputs`; a caller checks here before scoring to refuse early.
    """
    seen: dict[str, str] = {}
    for kind, (option, path) in _output_targets(leaderboard, json_out, per_query_out, chart, csv_out,
                                                latex_out).items():
        real = os.path.realpath(check_output_file(path, option))
        what = "the leaderboard's chart" if kind == "chart" else f"the {option} output"
        if real in seen:
            raise BadInput(f"{option} {path}", None, f"would be written over {seen[real]} ({real}); "
                                                     "give each output its own file")
        seen[real] = what


def write_outputs(scores: Sequence[RunScore], gt_path: str | Path, leaderboard: Path | None,
                  json_out: Path | None, per_query_out: Path | None, chart: bool = True,
                  csv_out: Path | None = None, latex_out: Path | None = None) -> dict[str, Path]:
    """Write the leaderboard (.md and its .svg chart), ``--json``, ``--per-query``, ``--csv`` and ``--latex`` as one group.

    A reader sees every file from one scoring, never an .md from one and an .svg
    from another (:func:`bpcr.io.fileio.write_group`). Returns the written paths by kind.
    """
    targets = _output_targets(leaderboard, json_out, per_query_out, chart, csv_out, latex_out)
    check_outputs(leaderboard, json_out, per_query_out, chart, csv_out, latex_out)
    contents: dict[str, str | bytes] = {}
    if "chart" in targets:
        from bpcr.evaluation.chart import chart_svg

        contents["chart"] = chart_svg(scores)
    if "leaderboard" in targets:
        chart_name = targets["chart"][1].name if "chart" in targets else None
        contents["leaderboard"] = render_leaderboard(scores, Path(gt_path).name, chart_name)
    if "json" in targets:
        contents["json"] = json_text(scores_json(scores))
    if "per_query" in targets:
        contents["per_query"] = per_query_csv(scores)
    if "csv" in targets:
        contents["csv"] = leaderboard_csv(scores)
    if "latex" in targets:
        contents["latex"] = leaderboard_latex(scores, Path(gt_path).name)
    write_group({targets[kind][1]: data for kind, data in contents.items()})
    return {kind: path for kind, (_, path) in targets.items()}
