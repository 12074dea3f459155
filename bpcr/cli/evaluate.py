"""The commands that judge runs (score, check, report), and those not built yet."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bpcr.errors import BadInput
from bpcr.evaluation.options import ReportOptions, ScoreOptions
from bpcr.options import cli_command
from bpcr.cli.options import app


@app.command(rich_help_panel="Evaluate")
@cli_command(ScoreOptions)
def score(
    runs: List[Path] = typer.Argument(..., help="Run files (NAME.csv / NAME.trec / NAME.json) or folders of runs."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth in the challenge format."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Compare every run with this one (improved / impaired, paired test). Default: each run with the input run its JSON names, when scored too."),
    twin: Optional[List[str]] = typer.Option(None, "--twin", metavar="RUN=BASELINE", help="Compare run RUN with run BASELINE, both among the runs scored, by name (repeatable: each run its own baseline, e.g. a trained run with its untrained twin); the runs not named as with no --baseline."),
    leaderboard: Path = typer.Option(Path("leaderboard.md"), "--leaderboard", help="Where to write the Markdown leaderboard (its chart goes beside it as .svg)."),
    no_leaderboard: bool = typer.Option(False, "--no-leaderboard", help="Do not write the leaderboard."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write scores as JSON: {runs: {name: {map7, p_at_1, hit_at_7, n_queries, ci95}}}."),
    per_query: Optional[Path] = typer.Option(None, "--per-query", help="Write per-query AP rows: run,query_id,ap."),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="Write the leaderboard as CSV (every figure unrounded)."),
    latex_out: Optional[Path] = typer.Option(None, "--latex", help="Write the leaderboard as a LaTeX booktabs table, significance against the baseline marked."),
    options: ScoreOptions = ScoreOptions(),
) -> None:
    """Score runs with the challenge's mAP@7 and write leaderboard.md.

    The queries are split into a public half (where choices may be tuned) and a
    private half (reported): runs are ranked by their private mAP@7.

    Example: bpcr score submissions/ --gt work/demo/ground_truth.csv --json scores.json
    """
    from bpcr.cli.display import show_scores, show_written
    from bpcr.evaluation.leaderboard import check_outputs, write_outputs
    from bpcr.evaluation.score import score_runs

    if twin and baseline is not None:
        raise BadInput(None, None, "give --baseline (one run for every run) or --twin (each run its own), not both")
    compared_with = _twins(twin) if twin else baseline
    board = None if no_leaderboard else leaderboard
    check_outputs(board, json_out, per_query, csv_out=csv_out, latex_out=latex_out)  # before any run is read
    scores = score_runs(runs, gt, options, baseline=compared_with)
    show_scores(scores, options.variant, gt.name)
    written = write_outputs(scores, gt, board, json_out, per_query, csv_out=csv_out, latex_out=latex_out)
    show_written(f"{kind}: {path}" for kind, path in written.items())


def _twins(items: List[str]) -> dict[str, str]:
    """``--twin RUN=BASELINE``, repeated, as ``{run: baseline}`` (the library checks the names)."""
    twins: dict[str, str] = {}
    for item in items:
        run, sep, baseline = (part.strip() for part in item.partition("="))
        if not sep or not run or not baseline:
            raise BadInput(None, None, f"--twin must look like RUN=BASELINE (e.g. trained-rc-gem=lite0-gem), "
                                       f"got {item!r}")
        if twins.get(run, baseline) != baseline:
            raise BadInput(None, None, f"--twin gives run {run!r} two baselines, {twins[run]!r} and {baseline!r}")
        twins[run] = baseline
    return twins


@app.command(rich_help_panel="Evaluate")
def check(
    submission: Optional[Path] = typer.Argument(None, help="The submission CSV to upload."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Database manifest from `bpcr prepare` (database.csv); required for a submission."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Query manifest (default: queries.csv beside --manifest)."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Check this ground-truth file instead of a submission (against --manifest when given)."),
) -> None:
    """Check a submission before upload (every query once, exactly 7 distinct known IDs, sorted, no header),
    or a ground-truth file with --gt (a header, every query once, valid and known relevant IDs).

    Exit code 2 when the file would be rejected. Examples:

      bpcr check submissions/mac.csv --manifest work/demo/prepared/database.csv

      bpcr check --gt ground_truth/val_2020.csv --manifest work/p500k/prepared/database.csv
    """
    from bpcr.evaluation.check import check_ground_truth, check_submission, first_error
    from bpcr.cli.display import show_check

    if (submission is None) == (gt is None):
        raise BadInput(None, None, "give a SUBMISSION to check, or --gt FILE to check a ground truth")
    if gt is not None:
        report, checked = check_ground_truth(gt, manifest, queries), gt
    else:
        if manifest is None:
            raise BadInput(None, None, "checking a submission needs --manifest (the database manifest)")
        report, checked = check_submission(submission, manifest, queries), submission
    show_check(checked, report)
    if not report.ok:
        raise first_error(report)


@app.command(rich_help_panel="Evaluate")
@cli_command(ReportOptions)
def report(
    runs: List[Path] = typer.Argument(..., help="Run files (NAME.csv / NAME.trec / NAME.json) or folders of runs."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth in the challenge format."),
    out: Path = typer.Option(..., "--out", help="Folder to write: index.html, leaderboard.svg, report.json and thumbs/ (a report folder there is replaced)."),
    manifest_db: Optional[Path] = typer.Option(None, "--manifest-db", help="Database manifest from `bpcr prepare` (database.csv). Default: the one a run's JSON names (a re-ranked run's does); required otherwise."),
    manifest_queries: Optional[Path] = typer.Option(None, "--manifest-queries", help="Query manifest (default: queries.csv beside --manifest-db, else the one a run's JSON names)."),
    options: ReportOptions = ReportOptions(),
) -> None:
    """Write a per-query visual report of runs: a self-contained HTML page to open or zip and share.

    For each query: the photo, each run's top 7 as thumbnails (relevant ones
    framed green), the relevant images and each run's AP@7; worst queries first
    (by the mean AP@7 over the runs). At the top: mAP@7 per run on the private
    half, the public half and all queries, and the leaderboard chart.

    Example: bpcr report submissions/ --gt work/demo/ground_truth.csv --manifest-db work/demo/prepared/database.csv --out work/demo/report
    """
    from bpcr.cli.display import rich_progress, show_report
    from bpcr.evaluation.report import write_report

    result = write_report(runs, gt, out, options, db_manifest=manifest_db, query_manifest=manifest_queries,
                          progress=rich_progress)
    show_report(result)
