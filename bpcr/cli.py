"""The `bpcr` command line: a thin Typer layer over the library.

Each command only parses its options, calls one public library function and
prints. A :class:`bpcr.errors.BadInput` raised anywhere becomes one line on
stderr and exit code 2; anything else is an internal error (exit 1).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import __version__
from .errors import BadInput

app = typer.Typer(
    name="bpcr",
    help=(
        "Submission and leaderboard kit for beauty and personal-care product retrieval "
        "(AI Meets Beauty / Perfect-500K).\n\n"
        "Pipeline: prepare -> extract -> index -> search -> refine -> rerank -> ensemble -> score."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bpcr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    pass


def _parse_weights(weights: Optional[str]) -> Optional[List[float]]:
    """``--weights 0.6,0.4`` -> [0.6, 0.4]; None stays None."""
    if weights is None:
        return None
    try:
        return [float(w) for w in weights.split(",")]
    except ValueError:
        raise BadInput(None, None, f"--weights {weights!r}: expected comma-separated numbers such as 0.6,0.4") from None


def _not_built(command: str) -> None:
    raise BadInput(None, None, f"`bpcr {command}` is not built yet in bpcr {__version__}")


@app.command(rich_help_panel="Pipeline")
def prepare(
    db: Optional[Path] = typer.Option(None, "--db", help="Folder of database images named <id>.<ext>."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="CSV with a header row: image ID, description."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Folder of query images named <id>.<ext>."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground truth in the challenge format (optional)."),
    out: Path = typer.Option(..., "--out", help="Output folder (with --demo: the demo folder; manifests go to OUT/prepared)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding processes (default: one per CPU)."),
    demo: bool = typer.Option(False, "--demo", help="Generate the synthetic demo dataset into OUT, then prepare it."),
    seed: int = typer.Option(0, "--seed", help="Seed of the demo dataset (with --demo)."),
    n_products: int = typer.Option(200, "--n-products", help="Demo: target products (1-6 shop images each)."),
    n_distractors: int = typer.Option(2500, "--n-distractors", help="Demo: distractor database images."),
    n_queries: int = typer.Option(100, "--n-queries", help="Demo: query photos."),
) -> None:
    """Check every image, write manifests (database.csv, queries.csv), rejected.csv and summary.json.

    Example: bpcr prepare --db data/train --descriptions data/train.csv --queries data/val --gt data/val_gt.csv --out work/prepared

    Demo: bpcr prepare --demo --out work/demo
    """
    from rich.console import Console

    from .prepare import prepare as run_prepare, render_summary

    if demo:
        given = [name for name, value in (("--db", db), ("--descriptions", descriptions), ("--queries", queries),
                                          ("--gt", gt)) if value is not None]
        if given:
            raise BadInput(None, None, f"--demo makes its own dataset; drop {', '.join(given)}")
        from .demo import generate_demo

        generate_demo(out, seed=seed, n_products=n_products, n_distractors=n_distractors, n_queries=n_queries,
                      workers=workers)
        summary = run_prepare(out / "database", out / "descriptions.csv", out / "queries", out / "ground_truth.csv",
                              out / "prepared", workers=workers)
    else:
        if db is None or queries is None:
            raise BadInput(None, None, "prepare needs --db and --queries (or --demo)")
        summary = run_prepare(db, descriptions, queries, gt, out, workers=workers)
    console = Console()
    for renderable in render_summary(summary):
        console.print(renderable, highlight=False)
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command("extract", rich_help_panel="Pipeline")
def extract_command(
    inputs: List[Path] = typer.Argument(..., help="The manifest CSV; with --merge, the shard folders to join."),
    out: Path = typer.Option(..., "--out", help="Output folder: one feature store per pooling, OUT/<pooling>/."),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help="Backbone: a name from bpcr.backbones.BACKBONES or any timm model name."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help="Pooling(s), comma-separated: mac, spoc, gem, rmac, ramac, grmac, vamac, grmaac, srmac."),
    size: int = typer.Option(224, "--size", help="Input size in pixels (the papers use 224 and 480)."),
    resize: str = typer.Option("square", "--resize", help="square (stretch to SIZE x SIZE) or aspect (longer side to SIZE)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="FILE (a state dict), hub (download), none (random; tests only). Default: the bundled EfficientNet-Lite weights."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Feature stage to pool (0 first, -1 last stage) instead of the final map; 003 §3.4 middle features."),
    param: List[str] = typer.Option([], "--param", help="Pooling parameter POOLING.KEY=VALUE, e.g. gem.p=4 (repeatable)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: one per core with a GPU, a quarter of the cores on the CPU; 0 decodes in the main process)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the model (default: every core)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: extract the I-th of N contiguous slices (1-based); join them with --merge."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 or float32 features."),
    multiscale: bool = typer.Option(False, "--multiscale", help="Sum descriptors at scales 1, 1/sqrt(2), 1/2."),
    flip: bool = typer.Option(False, "--flip", help="Also describe the mirrored image and sum."),
    saliency: Optional[str] = typer.Option(None, "--saliency", help="Saliency mask for vamac/grmaac (srmac always uses one): spectral or fine."),
    pca_whiten: bool = typer.Option(False, "--pca-whiten", help="Learn PCA-whitening on this (database) store; saved as pca.npz."),
    pca_from: Optional[Path] = typer.Option(None, "--pca-from", help="Apply the whitening learned on this database output (e.g. to queries)."),
    merge: bool = typer.Option(False, "--merge", help="Join shard outputs given as INPUTS into OUT."),
    restart: bool = typer.Option(False, "--restart", help="Discard an unfinished extraction made with other settings."),
) -> None:
    """Extract CNN/ViT descriptors of every manifest image, one store per pooling.

    Interrupted runs resume where they stopped when re-run with the same options.

    Examples:

      bpcr extract work/demo/db.csv --pooling gem,grmac --out work/features/db

      bpcr extract work/demo/db.csv --pooling gem --shard 1/4 --out work/features/db-1

      bpcr extract --merge work/features/db-1 work/features/db-2 work/features/db-3 work/features/db-4 --out work/features/db
    """
    if merge:
        from .extract import merge as merge_parts

        stores = merge_parts(inputs, out, pca_whiten=pca_whiten, pca_from=pca_from)
    else:
        if len(inputs) != 1:
            raise BadInput(None, None, "give one manifest (or --merge with shard folders)")
        if not pooling:
            raise BadInput(None, None, "--pooling is required: mac, spoc, gem, rmac, ramac, grmac, vamac, grmaac, srmac")
        from .extract import MULTISCALE, extract, parse_params, parse_shard

        try:
            stores = extract(inputs[0], out, backbone, [p.strip() for p in pooling.split(",") if p.strip()],
                             pooling_params=parse_params(param), weights=weights, layer=layer, size=size,
                             resize=resize, scales=MULTISCALE if multiscale else (1.0,), flip=flip, saliency=saliency,
                             dtype=dtype, batch_size=batch_size, workers=workers, device=device, threads=threads,
                             shard=parse_shard(shard) if shard else None, pca_whiten=pca_whiten, pca_from=pca_from,
                             restart=restart, progress=True)
        except KeyboardInterrupt as exc:
            typer.echo(str(exc), err=True)
            raise
    from .store import open_store

    for name, path in stores.items():
        store = open_store(path)
        typer.echo(f"wrote {path}: {len(store)} x {store.features.shape[1]} {store.features.dtype} ({name}), "
                   f"{len(store.failed)} failed")


@app.command("index", rich_help_panel="Pipeline")
def index_command(
    store: Path = typer.Argument(..., help="Feature store folder from `bpcr extract`."),
    out: Path = typer.Option(..., "--out", help="Index folder to write (index.json, plus index.faiss for ivf/hnsw)."),
    metric: str = typer.Option("cosine", "--metric", help="Distance (paper 000 eq 6-8): cosine, l2 or l1."),
    kind: str = typer.Option("flat", "--kind", help="flat (exact, streams the store), ivf (IVF-Flat / IVF-PQ) or hnsw."),
    pq: Optional[int] = typer.Option(None, "--pq", min=1, help="Product quantisation with M sub-vectors (ivf; hnsw with l2)."),
    nlist: Optional[int] = typer.Option(None, "--nlist", min=1, help="IVF lists (default sqrt(N))."),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=2, help="HNSW neighbours per node."),
    target_recall: float = typer.Option(0.95, "--target-recall", help="nprobe / efSearch is raised until recall@100 reaches this."),
    recall_sample: int = typer.Option(200, "--recall-sample", min=1, help="Database rows used as queries to measure recall@100."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training and recall samples."),
) -> None:
    """Build an exact or approximate index over a feature store.

    Examples:

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem-ivf --kind ivf

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem-ivfpq --kind ivf --pq 64 --metric l2
    """
    from .index import build_index

    info = build_index(store, out, metric=metric, kind=kind, pq=pq, nlist=nlist, hnsw_m=hnsw_m,
                       target_recall=target_recall, recall_sample=recall_sample, seed=seed, log=typer.echo)
    recall = "exact" if info.kind == "flat" else f"recall@100 {info.recall_at_100:.4f}"
    typer.echo(f"wrote {info.path}: {info.kind} {info.distance} index of {info.count} x {info.dim} ({recall}, {info.seconds:.1f} s)")


@app.command("search", rich_help_panel="Pipeline")
def search_command(
    index: List[Path] = typer.Option(..., "--index", help="Index folder from `bpcr index`; repeat to fuse several feature sets."),
    queries: List[Path] = typer.Option(..., "--queries", help="Query feature store; one per --index, in the same order."),
    name: str = typer.Option(..., "--name", help="Run name: writes NAME.csv, NAME.trec and NAME.json."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for the run files."),
    k: int = typer.Option(100, "--k", min=1, help="Depth of the TREC run (the CSV holds the top 7)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weight per --index (default all 1)."),
    fusion: str = typer.Option("sum", "--fusion", help="sum (paper 003 eq 16) or product (paper 001 eq 8, cosine only)."),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="Score every database image with every feature set (in chunks)."),
    shortlist: Optional[int] = typer.Option(None, "--shortlist", min=1, help="Candidates taken from each index before exact re-scoring (default k+16)."),
) -> None:
    """Search query features in one or more indexes and write a run.

    Examples:

      bpcr search --index work/index/resnet50-gem --queries work/features/q-resnet50-gem --name resnet50-gem

      bpcr search --index work/index/A --queries work/features/qA --index work/index/B --queries work/features/qB
      --weights 0.6,0.4 --fusion sum --name fused
    """
    from .search import search

    parsed = _parse_weights(weights)
    csv_path = search(index, queries, name, out_dir=out, k=k, weights=parsed, fusion=fusion, exhaustive=exhaustive,
                      shortlist=shortlist, log=typer.echo)
    for suffix in (".csv", ".trec", ".json"):
        typer.echo(f"wrote {csv_path.with_suffix(suffix)}")


@app.command("text-index", rich_help_panel="Pipeline")
def text_index_command(
    manifest: Path = typer.Argument(..., help="Database manifest from `bpcr prepare` (its description column is indexed)."),
    out: Path = typer.Option(..., "--out", help="Text index folder to write (ids.txt, neighbours.npz, meta.json)."),
    tau: float = typer.Option(0.6, "--tau", help="Neighbours have TF-IDF cosine strictly above tau (paper 001 eq 7)."),
    max_non_latin: float = typer.Option(0.2, "--max-non-latin", help="A description with more than this share of non-Latin letters counts as non-English and is dropped."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the folder already holds an index of the same manifest and options."),
) -> None:
    """Build the textual index of database descriptions (paper 001 §2.2): TF-IDF neighbours with cosine > tau.

    An index already in --out is reused when the manifest and options match.

    Example: bpcr text-index work/prepared/database.csv --out work/text-index --tau 0.6
    """
    from .textindex import build_text_index, describe

    typer.echo(describe(build_text_index(manifest, out, tau=tau, max_non_latin=max_non_latin, force=force)))


@app.command("refine", rich_help_panel="Pipeline")
def refine_command(
    run: Path = typer.Argument(..., help="Input run (NAME.trec for depth, or NAME.csv, or the stem)."),
    text_index: Path = typer.Option(..., "--text-index", help="Text index folder from `bpcr text-index`."),
    db_features: Path = typer.Option(..., "--db-features", help="Database feature store the run was searched in."),
    query_features: Path = typer.Option(..., "--query-features", help="Query feature store (same extraction options)."),
    k: int = typer.Option(3, "--k", help="Results kept from the input run (1-7; paper 001 finds 3 best)."),
    mode: str = typer.Option("fill", "--mode", help="fill: ranks k+1..7 from the second search (Algorithm 1); "
                             "rerank-union: re-rank the first k together with their textual neighbours."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
) -> None:
    """Refine a run with the textual index: two-stage search (paper 001 Algorithm 1).

    Keeps each query's first k results and fills ranks k+1..7 with the images
    visually closest to the query among the textual neighbours of those k;
    when too few, the input run's next results fill the rest.

    Examples:

      bpcr text-index work/prepared/database.csv --out work/text-index

      bpcr refine submissions/grmac.trec --text-index work/text-index --db-features work/features/db-grmac --query-features work/features/q-grmac --k 3 --name grmac-refined

      bpcr refine submissions/grmac.trec --text-index work/text-index --db-features work/features/db-grmac --query-features work/features/q-grmac --mode rerank-union --name grmac-union
    """
    import json

    from .refine import refine

    csv_path = refine(run, text_index, db_features, query_features, name, out_dir=out, k=k, mode=mode)
    counts = json.loads(csv_path.with_suffix(".json").read_text(encoding="utf-8"))["counts"]
    typer.echo(f"refined {counts['queries']} queries (k={k}, {mode}): {counts['changed']} changed, "
               f"{counts['with_fallback']} filled partly from the input run, "
               f"{counts['mean_subset']:.1f} textual neighbours per query on average")
    for suffix in (".csv", ".trec", ".json"):
        typer.echo(f"wrote {csv_path.with_suffix(suffix)}")


@app.command(rich_help_panel="Pipeline")
def rerank(
    run: Path = typer.Argument(..., help="Input run (NAME.trec for a deep shortlist; NAME.csv gives only 7)."),
    db_manifest: Path = typer.Option(..., "--db-manifest", help="Database manifest from `bpcr prepare` (database.csv)."),
    query_manifest: Path = typer.Option(..., "--query-manifest", help="Query manifest from `bpcr prepare` (queries.csv)."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    top: int = typer.Option(100, "--top", help="Re-rank the top N of each query; the rest keep the input order."),
    scorer: str = typer.Option("matches", "--scorer", help="matches (ratio-test match count), inliers (RANSAC homography inliers) or blend (with the input score)."),
    blend_weight: float = typer.Option(0.5, "--blend-weight", help="λ of blend: (1-λ)·input + λ·SIFT score, both min-max normalised per query."),
    blend_of: str = typer.Option("matches", "--blend-of", help="SIFT score that blend mixes in: matches or inliers."),
    ratio: float = typer.Option(0.8, "--ratio", help="Lowe's ratio test threshold (paper 000: 0.8)."),
    max_keypoints: int = typer.Option(250, "--max-keypoints", help="SIFT keypoints kept per image (strongest first)."),
    max_side: int = typer.Option(512, "--max-side", help="Images are shrunk so their long side is at most this many pixels."),
    matcher: str = typer.Option("flann", "--matcher", help="flann (k-d forest, 5 trees, 50 checks; paper 000) or bf (exact)."),
    seed: int = typer.Option(0, "--seed", help="Seed of FLANN's random trees and of RANSAC."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes (default: one per CPU)."),
    cache_dir: Path = typer.Option(Path("work/cache/sift"), "--cache-dir", help="Cache of database SIFT descriptors (.npz)."),
) -> None:
    """Re-rank each query's shortlist by SIFT matching (paper 000 §3.1.1, §3.4.2).

    Example: bpcr rerank submissions/mac.trec --db-manifest work/demo/prepared/database.csv
    --query-manifest work/demo/prepared/queries.csv --top 100 --name mac-sift
    """
    import json

    from .rerank import rerank as run_rerank

    trec = run_rerank(run, db_manifest, query_manifest, name, out_dir=out, top=top, scorer=scorer, ratio=ratio,
                      max_keypoints=max_keypoints, max_side=max_side, blend_weight=blend_weight, blend_of=blend_of,
                      matcher=matcher, seed=seed, workers=workers, cache_dir=cache_dir)
    prov = json.loads(trec.with_suffix(".json").read_text(encoding="utf-8"))
    for example in prov["warnings"]["examples"]:
        typer.echo(f"warning: {example}", err=True)
    shown = len(prov["warnings"]["examples"])
    total = sum(v for k, v in prov["warnings"].items() if k != "examples")
    if total > shown:
        typer.echo(f"warning: {total - shown} more warnings counted in {trec.with_suffix('.json')}", err=True)
    cache = prov["sift_cache"]
    typer.echo(f"re-ranked {prov['queries']['reranked']}/{prov['queries']['total']} queries "
               f"(database descriptors: {cache['computed']} computed, {cache['reused']} cached)")
    for suffix in (".csv", ".trec", ".json"):
        typer.echo(f"wrote {trec.with_suffix(suffix)}")


@app.command(rich_help_panel="Pipeline")
def ensemble(
    runs: List[Path] = typer.Argument(..., help="Runs to fuse (NAME.csv ranks only / NAME.trec with scores) or folders of runs; weights follow this order."),
    method: str = typer.Option(..., "--method", help="rrf (sum w/(k+rank)), borda, combsum or combmnz (normalised scores)."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weights, one per run (scaled to sum 1). Default: equal."),
    k: Optional[float] = typer.Option(None, "--k", help="RRF's k (default 60)."),
    norm: str = typer.Option("minmax", "--norm", help="Per-query score normalisation for combsum/combmnz: minmax or zscore."),
    rank_score: str = typer.Option("linear", "--rank-score", help="Scores of a ranks-only input for combsum/combmnz: linear ((n-rank+1)/n) or reciprocal (1/rank)."),
    depth: int = typer.Option(100, "--depth", help="Results per query in NAME.trec."),
    strict: bool = typer.Option(False, "--strict", help="Runs answering different queries, repeated IDs and tolerated lines become errors."),
    tune_on: Optional[Path] = typer.Option(None, "--tune-on", help="Ground truth to tune the weights (and RRF's k) on, with cross-validation."),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds over queries (with --tune-on)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment and the bootstrap (with --tune-on)."),
    steps: int = typer.Option(10, "--steps", help="Weight lattice resolution: weights are multiples of 1/steps (with --tune-on)."),
) -> None:
    """Fuse several runs into one (RRF, Borda, CombSUM, CombMNZ), optionally with weights tuned by cross-validation.

    Example: bpcr ensemble submissions/mac.trec submissions/grmac.trec --method rrf --name fused
    --tune-on work/demo/ground_truth.csv
    """
    from .ensemble import ensemble as run_ensemble

    given = _parse_weights(weights)
    result = run_ensemble(runs, method, name, out_dir=out, weights=given, k=k, norm=norm, rank_score=rank_score,
                          depth=depth, strict=strict, tune_on=tune_on, folds=folds, seed=seed, steps=steps)
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    params = "".join(f", {key}={value:g}" for key, value in sorted(result.params.items()))
    typer.echo(f"fused {len(result.weights)} runs with {method}{params} over {result.n_queries} queries:")
    for run_name, weight in result.weights:
        typer.echo(f"  {weight:.4f}  {run_name}")
    t = result.tuning
    if t is not None:
        typer.echo(f"tuned mAP@7     {t.tuned_map7:.4f}  (weights chosen on all {t.n_queries} queries and scored "
                   f"on them: optimistic)")
        typer.echo(f"cross-val mAP@7 {t.cv_map7:.4f}  95% CI [{t.cv_ci95[0]:.4f}, {t.cv_ci95[1]:.4f}]  "
                   f"({len(t.folds)} folds, seed {t.seed}; each fold scored with weights chosen on the others)")
        typer.echo(f"equal weights   {t.equal_weights_map7:.4f};  inputs: "
                   + ", ".join(f"{n} {v:.4f}" for n, v in t.input_map7.items()))
    for path in result.written.values():
        typer.echo(f"wrote {path}")


@app.command("run", rich_help_panel="Pipeline")
def run_command(
    config: Path = typer.Argument(..., help="TOML config naming every stage's options (see configs/demo.toml)."),
    force: bool = typer.Option(False, "--force", help="Re-run every stage even when its outputs are up to date."),
) -> None:
    """Run the whole chain from one TOML config; stages whose inputs and options are unchanged are skipped.

    Example: bpcr run configs/demo.toml
    """
    from rich.console import Console
    from rich.table import Table

    from .pipeline import run_pipeline

    console = Console()
    result = run_pipeline(config, force=force, log=lambda message: console.print(message, highlight=False, markup=False))
    table = Table(title="time per stage")
    for column in ("stage", "name", "seconds", ""):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for t in result.times:
        table.add_row(t.stage, t.name, f"{t.seconds:.1f}", "skipped (up to date)" if t.skipped else "")
    table.add_row("total", "", f"{sum(t.seconds for t in result.times):.1f}", "")
    console.print(table)
    if result.leaderboard is not None:
        console.print(f"leaderboard: {result.leaderboard}")


@app.command(rich_help_panel="Evaluate")
def score(
    runs: List[Path] = typer.Argument(..., help="Run files (NAME.csv / NAME.trec / NAME.json) or folders of runs."),
    gt: Path = typer.Option(..., "--gt", help="Ground truth in the challenge format."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Compare every run with this one (improved / impaired, paired test). Default: each run with the input run its JSON names, when scored too."),
    leaderboard: Path = typer.Option(Path("leaderboard.md"), "--leaderboard", help="Where to write the Markdown leaderboard (its chart goes beside it as .svg)."),
    no_leaderboard: bool = typer.Option(False, "--no-leaderboard", help="Do not write the leaderboard."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write scores as JSON: {runs: {name: {map7, p_at_1, hit_at_7, n_queries, ci95}}}."),
    per_query: Optional[Path] = typer.Option(None, "--per-query", help="Write per-query AP rows: run,query_id,ap."),
    variant: str = typer.Option("challenge", "--variant", help="Headline metric: challenge (default), nrel or cutoff-mean (variants printed in papers)."),
    strict: bool = typer.Option(False, "--strict", help="Missing or unknown queries and malformed-but-tolerated lines become errors."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the randomisation test."),
    resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap / randomisation resamples."),
) -> None:
    """Score runs with the challenge's mAP@7 and write leaderboard.md.

    Example: bpcr score submissions/ --gt work/demo/ground_truth.csv --json scores.json
    """
    from rich.console import Console
    from rich.table import Table

    from .score import score_runs, write_outputs

    scores = score_runs(runs, gt, baseline=baseline, strict=strict, seed=seed, n_resamples=resamples, variant=variant)
    console = Console(stderr=True)
    for s in scores:
        for warning in s.warnings:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    table = Table(title=f"mAP@7 ({variant}) against {gt.name}")
    for column in ("run", "mAP@7", "95% CI", "P@1", "hit@7", "acc@100", "vs baseline"):
        table.add_column(column, justify="left" if column in ("run", "vs baseline") else "right",
                         no_wrap=column != "vs baseline")
    for s in scores:
        c = s.comparison
        versus = f"{c.delta:+.4f} vs {c.baseline} (p={c.p_holm:.3g})" if c else ""
        acc100 = "—" if s.top_k[100] is None else f"{s.top_k[100]:.4f}"
        table.add_row(s.name, f"{s.map7:.4f}", f"[{s.ci95[0]:.3f}, {s.ci95[1]:.3f}]", f"{s.p_at_1:.4f}",
                      f"{s.hit_at_7:.4f}", acc100, versus)
    Console(width=max(Console().width, 140)).print(table)
    written = write_outputs(scores, gt, None if no_leaderboard else leaderboard, json_out, per_query)
    for kind, path in written.items():
        typer.echo(f"wrote {kind}: {path}")


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
    from .check import check_submission, first_error

    report = check_submission(submission, manifest, queries)
    for line, reason in report.warnings[:50]:
        typer.echo(f"warning: {submission}{'' if line is None else f':{line}'}: {reason}", err=True)
    for line, reason in report.errors[:50]:
        typer.echo(f"{submission}{'' if line is None else f':{line}'}: {reason}", err=True)
    if not report.ok:
        raise first_error(report)
    typer.echo(f"{submission}: OK, {report.n_lines} queries, {len(report.warnings)} warnings")


@app.command(rich_help_panel="Not built yet", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """Not built yet: fine-tuning with the robust contrastive loss of paper 004. Exits 2."""
    _not_built("train")


@app.command(rich_help_panel="Not built yet", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def report() -> None:
    """Not built yet: per-query visual reports of runs. Exits 2."""
    _not_built("report")


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the console script; ``argv`` lets tests run it in-process."""
    try:
        app(args=argv, prog_name="bpcr")
    except BadInput as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
