"""The commands that judge runs (score, check), and those not built yet."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .options import VARIANTS, app, choices, not_built


@app.command(rich_help_panel="Evaluate")
def score(
    runs: List[Path] = typer.Argument(..., help="Run files (NAME.csv / NAME.trec / NAME.json) or folders of runs."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth in the challenge format."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Compare every run with this one (improved / impaired, paired test). Default: each run with the input run its JSON names, when scored too."),
    leaderboard: Path = typer.Option(Path("leaderboard.md"), "--leaderboard", help="Where to write the Markdown leaderboard (its chart goes beside it as .svg)."),
    no_leaderboard: bool = typer.Option(False, "--no-leaderboard", help="Do not write the leaderboard."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write scores as JSON: {runs: {name: {map7, p_at_1, hit_at_7, n_queries, ci95}}}."),
    per_query: Optional[Path] = typer.Option(None, "--per-query", help="Write per-query AP rows: run,query_id,ap."),
    variant: str = typer.Option("challenge", "--variant", help=f"Headline metric, one of {choices(VARIANTS)}: challenge is the default; the others are variants printed in papers."),
    strict: bool = typer.Option(False, "--strict", help="Missing or unknown queries and malformed-but-tolerated lines become errors."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the randomisation test."),
    resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap / randomisation resamples."),
) -> None:
    """Score runs with the challenge's mAP@7 and write leaderboard.md.

    Example: bpcr score submissions/ --gt work/demo/ground_truth.csv --json scores.json
    """
    from ..display import show_scores, show_written
    from ..score import score_runs, write_outputs

    scores = score_runs(runs, gt, baseline=baseline, strict=strict, seed=seed, n_resamples=resamples, variant=variant)
    show_scores(scores, variant, gt.name)
    written = write_outputs(scores, gt, None if no_leaderboard else leaderboard, json_out, per_query)
    show_written(f"{kind}: {path}" for kind, path in written.items())


@app.command(rich_help_panel="Evaluate")
def check(
    submission: Path = typer.Argument(..., help="The submission CSV to upload."),
    manifest: Path = typer.Option(..., "--manifest", help="Database manifest from `bpcr prepare` (database.csv)."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Query manifest (default: queries.csv beside --manifest)."),
) -> None:
    """Check a submission before upload: every query once, exactly 7 distinct known IDs, sorted, no header.

    Exit code 2 when the file would be rejected. Example:
    bpcr check submissions/mac.csv --manifest work/demo/prepared/database.csv
    """
    from ..check import check_submission, first_error
    from ..display import show_check

    report = check_submission(submission, manifest, queries)
    show_check(submission, report)
    if not report.ok:
        raise first_error(report)


@app.command(rich_help_panel="Not built yet", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """Not built yet: fine-tuning with the robust contrastive loss of paper 004. Exits 2."""
    not_built("train")


@app.command(rich_help_panel="Not built yet", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def report() -> None:
    """Not built yet: per-query visual reports of runs. Exits 2."""
    not_built("report")
