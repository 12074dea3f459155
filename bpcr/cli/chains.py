"""The commands over a whole config -- run, predict, sweep -- and train, which makes weights a config extracts with."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bpcr.cli.options import app
from bpcr.options import cli_command
from bpcr.pipeline.options import PredictOptions, SweepOptions
from bpcr.training.options import TrainOptions


@app.command("run", rich_help_panel="Pipeline")
def run_command(
    config: Path = typer.Argument(..., help="TOML config naming every stage's options (see configs/demo.toml)."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage even when its outputs are up to date."),
    stand_in: bool = typer.Option(False, "--stand-in", help="Run with the stand-ins of the config's offline table: each backbone it maps is replaced by its offline network and size before the config is checked, everything else kept; the runs made from them say so in their JSON and the leaderboard (docs/recipes.md)."),
) -> None:
    """Run the whole chain from one TOML config; stages whose inputs and options are unchanged are skipped.

    Stages, in order: prepare, train, extract, whiten, combine, index, text index,
    search, refine, rerank, ensemble, score, report; each table's keys are the
    keyword arguments of that stage's library function.

    Example: bpcr run configs/demo.toml
    then: bpcr run configs/recipes/2019-1st.toml --stand-in
    """
    from bpcr.cli.display import pipeline_log, rich_progress, show_pipeline
    from bpcr.pipeline.runner import run_pipeline

    show_pipeline(run_pipeline(config, force=force, log=pipeline_log, progress=rich_progress, stand_in=stand_in))


@app.command("predict", rich_help_panel="Pipeline")
@cli_command(PredictOptions)
def predict_command(
    config: Path = typer.Argument(..., help="TOML config already run with `bpcr run CONFIG`: its database side is reused."),
    test_dir: Path = typer.Argument(..., help="Folder of new query images named <id>.<ext>."),
    out_csv: Path = typer.Argument(..., help="Submission to write, 7 answers per query; files that could not be used are listed in OUT.rejected.csv beside it."),
    options: PredictOptions = PredictOptions(),
) -> None:
    """Answer new query photos with a config's frozen pipeline: the challenge's `predict <test_dir> <out_csv>`.

    The database's stores, indexes, text index and SIFT cache are those `bpcr run CONFIG` made, reused as they are; the query images are checked, described with the same extraction settings and sent through the config's chain. A query whose image cannot be used is answered by the fallback (the final run's 7 most common answers).

    Example: bpcr predict configs/demo.toml photos/ answers.csv
    """
    from bpcr.cli.display import pipeline_log, rich_progress, show_predict
    from bpcr.pipeline.predict import predict

    show_predict(predict(config, test_dir, out_csv, options, log=pipeline_log, progress=rich_progress))


@app.command("sweep", rich_help_panel="Pipeline")
@cli_command(SweepOptions)
def sweep_command(
    config: Path = typer.Argument(..., help="TOML config (see configs/demo.toml)."),
    grid: List[str] = typer.Option(..., "--grid", help="STAGE.KEY=V1,V2,... or STAGE.NAME.KEY=V1,V2,... (repeatable: the product of the axes). List the current default first: ties go to the earlier point."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the chosen config (default WORK/sweep/chosen.toml)."),
    options: SweepOptions = SweepOptions(),
) -> None:
    """Run a config over a grid of options and choose on the public half of the queries.

    Every point's public, private and all-queries mAP@7 goes into one table
    (WORK/sweep/sweep.md); the private half is reported, never chosen on. The
    chosen config records the queries it was chosen on ([score] chosen_on), so
    its leaderboard stars the figures that hold them.

    Example: bpcr sweep configs/demo.toml --grid rerank.fused-sift.max_keypoints=250,500,1000 --run fused-sift
    """
    from bpcr.cli.display import pipeline_log, rich_progress, show_sweep
    from bpcr.pipeline.sweep import sweep

    show_sweep(sweep(config, grid, options, config_out=out, log=pipeline_log, progress=rich_progress))


@app.command("train", rich_help_panel="Pipeline")
@cli_command(TrainOptions)
def train_command(
    manifest: Path = typer.Argument(..., help="Database manifest from `bpcr prepare` (database.csv): the only training data."),
    out: Path = typer.Option(..., "--out", help="Folder for weights.pt (a state dict `extract --weights` loads) and train.json."),
    restart: bool = typer.Option(False, "--restart", help="Discard a checkpoint made with other settings."),
    options: TrainOptions = TrainOptions(),
) -> None:
    """Fine-tune a backbone on the database alone (images and descriptions; never queries).

    Pseudo-categories from the descriptions' TF-IDF (paper 002), positive pairs of
    near-identical descriptions and augmented copies, hard negatives mined each
    epoch (paper 004), the robust contrastive loss with a softmax (004 §3.2-3.3).
    Checkpoints every epoch; a re-run resumes.

    Example: bpcr train work/demo/prepared/database.csv --out work/train/lite0 --epochs 3
    then: bpcr extract ... --weights work/train/lite0/weights.pt
    """
    from bpcr.cli.display import pipeline_log, rich_progress
    from bpcr.training.train import train

    result = train(manifest, out, options, restart=restart, progress=rich_progress, log=pipeline_log)
    typer.echo(f"wrote {result.weights}")
    typer.echo(f"wrote {result.report}")
