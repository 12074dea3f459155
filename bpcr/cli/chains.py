"""The commands over a whole config -- run, predict, sweep -- and train, which makes weights a config extracts with."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..ranges import SEED_MAX
from .options import app


@app.command("run", rich_help_panel="Pipeline")
def run_command(
    config: Path = typer.Argument(..., help="TOML config naming every stage's options (see configs/demo.toml)."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage even when its outputs are up to date."),
) -> None:
    """Run the whole chain from one TOML config; stages whose inputs and options are unchanged are skipped.

    Stages, in order: prepare, train, extract, index, text index, search, refine,
    rerank, ensemble, score, report; each table's keys are the keyword arguments
    of that stage's library function.

    Example: bpcr run configs/demo.toml
    """
    from ..display import pipeline_log, rich_progress, show_pipeline
    from ..pipeline import run_pipeline

    show_pipeline(run_pipeline(config, force=force, log=pipeline_log, progress=rich_progress))


@app.command("predict", rich_help_panel="Pipeline")
def predict_command(
    config: Path = typer.Argument(..., help="TOML config already run with `bpcr run CONFIG`: its database side is reused."),
    test_dir: Path = typer.Argument(..., help="Folder of new query images named <id>.<ext>."),
    out_csv: Path = typer.Argument(..., help="Submission to write, 7 answers per query; files that could not be used are listed in OUT.rejected.csv beside it."),
    run: Optional[str] = typer.Option(None, "--run", help="The run whose answers are written (default: the config's last run)."),
) -> None:
    """Answer new query photos with a config's frozen pipeline: the challenge's `predict <test_dir> <out_csv>`.

    The database's stores, indexes, text index and SIFT cache are those `bpcr run CONFIG` made, reused as they are; the query images are checked, described with the same extraction settings and sent through the config's chain. A query whose image cannot be used is answered by the fallback (the final run's 7 most common answers).

    Example: bpcr predict configs/demo.toml photos/ answers.csv
    """
    from ..display import pipeline_log, rich_progress, show_predict
    from ..predict import predict

    show_predict(predict(config, test_dir, out_csv, run=run, log=pipeline_log, progress=rich_progress))


@app.command("sweep", rich_help_panel="Pipeline")
def sweep_command(
    config: Path = typer.Argument(..., help="TOML config (see configs/demo.toml)."),
    grid: List[str] = typer.Option(..., "--grid", help="STAGE.KEY=V1,V2,... or STAGE.NAME.KEY=V1,V2,... (repeatable: the product of the axes). List the current default first: ties go to the earlier point."),
    run: Optional[str] = typer.Option(None, "--run", help="The run the choice is made on (default: the config's last run)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the chosen config (default WORK/sweep/chosen.toml)."),
    split_seed: int = typer.Option(0, "--split-seed", min=0, max=SEED_MAX, help="Seed of the public/private split (as `bpcr score`)."),
    public_share: float = typer.Option(0.5, "--public-share", min=0.0, max=1.0, help="Share of queries in the public half, in (0, 1)."),
) -> None:
    """Run a config over a grid of options and choose on the public half of the queries.

    Every point's public, private and all-queries mAP@7 goes into one table
    (WORK/sweep/sweep.md); the private half is reported, never chosen on.

    Example: bpcr sweep configs/demo.toml --grid rerank.fused-sift.max_keypoints=250,500,1000 --run fused-sift
    """
    from ..display import pipeline_log, rich_progress, show_sweep
    from ..sweep import sweep

    show_sweep(sweep(config, grid, target=run, config_out=out, split_seed=split_seed, public_share=public_share,
                     log=pipeline_log, progress=rich_progress))


@app.command("train", rich_help_panel="Pipeline")
def train_command(
    manifest: Path = typer.Argument(..., help="Database manifest from `bpcr prepare` (database.csv): the only training data."),
    out: Path = typer.Option(..., "--out", help="Folder for weights.pt (a state dict `extract --weights` loads) and train.json."),
    backbone: str = typer.Option("tf_efficientnet_lite0", "--backbone", help="Any timm backbone `extract` takes."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Starting weights: FILE, hub or none (default: the bundled ImageNet weights)."),
    epochs: int = typer.Option(4, "--epochs", min=1, max=1000, help="Epochs (early stopping on a held-out share of the database may stop sooner)."),
    loss: str = typer.Option("robust-contrastive+softmax", "--loss", help="robust-contrastive+softmax, robust-contrastive, contrastive+softmax, contrastive or softmax (papers 004, 002, 003)."),
    margin: float = typer.Option(1.0, "--margin", min=0.0, max=4.0, help="Contrastive margin m (004 §3.2)."),
    softmax_weight: float = typer.Option(0.1, "--softmax-weight", min=0.0, max=100.0, help="Weight of the pseudo-category softmax in the multi-task sum."),
    distill_weight: float = typer.Option(0.0, "--distill-weight", min=0.0, max=100.0, help="Weight of distillation towards the starting model's ImageNet predictions."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd or adamw (cosine-decayed learning rate)."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, max=10.0, help="Learning rate (default: 0.001 for sgd, 0.0001 for adamw)."),
    batch_size: int = typer.Option(16, "--batch-size", min=2, max=4096, help="Images per step."),
    size: int = typer.Option(224, "--size", min=32, max=1024, help="Input size in pixels."),
    images_per_epoch: Optional[int] = typer.Option(None, "--images-per-epoch", min=1, max=10_000_000, help="Training images drawn per epoch (default: all)."),
    pool_size: Optional[int] = typer.Option(None, "--pool-size", min=1, max=10_000_000, help="Images searched for each epoch's hard negatives (default: twice the images per epoch)."),
    categories: int = typer.Option(44, "--categories", min=2, max=10_000, help="Pseudo-categories mined from the descriptions (002 App. A: 44)."),
    min_category_size: int = typer.Option(20, "--min-category-size", min=1, max=1_000_000, help="Images a pseudo-category needs; smaller ones are merged or dropped."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**31 - 1, help="Seed of sampling, augmentation and initialisation."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    restart: bool = typer.Option(False, "--restart", help="Discard a checkpoint made with other settings."),
) -> None:
    """Fine-tune a backbone on the database alone (images and descriptions; never queries).

    Pseudo-categories from the descriptions' TF-IDF (paper 002), positive pairs of
    near-identical descriptions and augmented copies, hard negatives mined each
    epoch (paper 004), the robust contrastive loss with a softmax (004 §3.2-3.3).
    Checkpoints every epoch; a re-run resumes.

    Example: bpcr train work/demo/prepared/database.csv --out work/train/lite0 --epochs 3
    then: bpcr extract ... --weights work/train/lite0/weights.pt
    """
    from ..display import pipeline_log, rich_progress
    from ..train import train

    result = train(manifest, out, backbone, weights, epochs=epochs, loss=loss, margin=margin,
                   softmax_weight=softmax_weight, distill_weight=distill_weight, optimizer=optimizer, lr=lr,
                   batch_size=batch_size, size=size, images_per_epoch=images_per_epoch, pool_size=pool_size,
                   categories=categories,
                   min_category_size=min_category_size, seed=seed, device=device, restart=restart, progress=rich_progress, log=pipeline_log)
    typer.echo(f"wrote {result.weights}")
    typer.echo(f"wrote {result.report}")
