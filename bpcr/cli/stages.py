"""The pipeline commands, one stage each, in pipeline order: prepare, extract, whiten, combine, index, search, text-index, refine,
dba, rerank, ensemble. The commands over a whole config (run, predict, sweep) and train are in :mod:`.chains`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bpcr.errors import BadInput
from bpcr.dataset.options import PRESIZE_FIELDS, DemoOptions, PrepareOptions, PresizeOptions, parse_presize
from bpcr.evaluation.options import ENSEMBLE_FIELDS, EnsembleOptions
from bpcr.features.options import EXTRACT_FIELDS, MULTISCALE, ExtractOptions, parse_pad_colour, pooling_choices
from bpcr.options import check, cli_command, flag_of, help_text, spec_of
from bpcr.postretrieval.options import DbaOptions, RefineOptions
from bpcr.reranking.options import DEFAULT_CACHE_DIR as RERANK_CACHE_DIR, RerankOptions
from bpcr.retrieval.options import SEARCH_FIELDS, IndexOptions, SearchOptions
from bpcr.text.options import TextIndexOptions
from bpcr.features.combine_options import COMBINE_FIELDS, CombineOptions
from bpcr.training.whiten_options import WhitenOptions
from bpcr.cli.options import (app, choices, parse_method_options,
                      parse_params, parse_shard, parse_weights, renamed)


def _presize_option(name: str):
    """A PresizeOptions field as prepare's Typer option: its flag, default, help and range (Typer refuses the rest)."""
    field, spec = PRESIZE_FIELDS[name], spec_of(PRESIZE_FIELDS[name])
    return typer.Option(field.default, flag_of(field), help=help_text(field), min=spec.low, max=spec.high)


@app.command(rich_help_panel="Pipeline")
@cli_command(DemoOptions)
def prepare(
    db: Optional[Path] = typer.Option(None, "--db", help="Folder of database images named <id>.<ext>."),
    descriptions: Optional[Path] = typer.Option(None, "--descriptions", help="CSV with a header row: image ID, description."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Folder of query images named <id>.<ext>."),
    gt: Optional[Path] = typer.Option(None, "--gt", help="Ground truth in the challenge format (optional)."),
    out: Path = typer.Option(..., "--out", help="Output folder (with --demo: the demo folder; manifests go to OUT/prepared)."),
    demo: bool = typer.Option(False, "--demo", help="Generate the synthetic demo dataset into OUT, then prepare it."),
    # The pre-sized image cache (bpcr.dataset.options.PresizeOptions): --presize is spelled here (a comma list),
    # the rest are its fields' flags, defaults, help and ranges.
    presize: Optional[str] = typer.Option(None, "--presize", metavar="SIZE[,SIZE...]",
                                          help=help_text(PRESIZE_FIELDS["presize"])),
    presize_sift_side: int = _presize_option("presize_sift_side"),
    presize_format: str = typer.Option(PresizeOptions.presize_format, flag_of(PRESIZE_FIELDS["presize_format"]),
                                       help=help_text(PRESIZE_FIELDS["presize_format"])),
    presize_quality: int = _presize_option("presize_quality"),
    # The demo's options (bpcr.dataset.options.DemoOptions) are derived whole; --workers is PrepareOptions' too.
    options: DemoOptions = DemoOptions(),
) -> None:
    """Check every image, write manifests (database.csv, queries.csv), rejected.csv and summary.json.

    Example: bpcr prepare --db data/train --descriptions data/train.csv --queries data/val --gt data/val_gt.csv --out work/prepared

    With a pre-sized image cache for networks of input 224-260 px (every image decoded once more now, then
    never in full again by bpcr extract): ... --out work/prepared --presize 224,240,260

    Demo: bpcr prepare --demo --out work/demo
    """
    from bpcr.cli.display import rich_progress, show_prepare

    check(options)  # the demo's options are refused out of range with or without --demo, before any work
    # --presize and its options are refused (one line) before anything is read or written.
    sizes = parse_presize(presize) if presize is not None else ()
    presize_options = PresizeOptions(sizes, presize_sift_side, presize_format, presize_quality)
    check(presize_options)
    if not sizes and presize_options != PresizeOptions():
        raise BadInput(None, None, "--presize-sift-side, --presize-format and --presize-quality need --presize SIZE")
    if demo:
        given = [name for name, value in (("--db", db), ("--descriptions", descriptions), ("--queries", queries),
                                          ("--gt", gt), ("--presize", presize)) if value is not None]
        if given:
            raise BadInput(None, None, f"--demo makes its own dataset; drop {', '.join(given)}")
        from bpcr.demo import prepare_demo

        summary = prepare_demo(out, options, progress=rich_progress)
    else:
        if db is None or queries is None:
            raise BadInput(None, None, "prepare needs --db and --queries (or --demo)")
        from bpcr.dataset.prepare import prepare as run_prepare

        summary = run_prepare(db, descriptions, queries, gt, out, PrepareOptions(workers=options.workers),
                              presize=presize_options, progress=rich_progress)
    show_prepare(summary)


@app.command("extract", rich_help_panel="Pipeline")
@cli_command(ExtractOptions)
def extract_command(
    inputs: List[Path] = typer.Argument(..., help="The manifest CSV; with --merge, the shard folders to join."),
    out: Path = typer.Option(..., "--out", help="Output folder: one feature store per pooling, OUT/<pooling>/."),
    # The options the command line spells its own way (a comma list, POOLING.KEY=VALUE, a switch, R,G,B, I/N); their help
    # and default are the fields' (bpcr.features.options.ExtractOptions), the rest are derived whole.
    pooling: Optional[str] = typer.Option(None, "--pooling", help=help_text(EXTRACT_FIELDS["poolings"])),
    param: List[str] = typer.Option([], "--param", help=help_text(EXTRACT_FIELDS["pooling_params"])),
    multiscale: bool = typer.Option(False, "--multiscale", help=help_text(EXTRACT_FIELDS["scales"])),
    pad_colour: Optional[str] = typer.Option(None, "--pad-colour", metavar="R,G,B",
                                             help=help_text(EXTRACT_FIELDS["pad_colour"])),
    shard: Optional[str] = typer.Option(EXTRACT_FIELDS["shard"].default, "--shard",
                                        help=help_text(EXTRACT_FIELDS["shard"])),
    merge: bool = typer.Option(False, "--merge", help="Join shard outputs given as INPUTS into OUT."),
    restart: bool = typer.Option(False, "--restart", help="Discard an unfinished extraction made with other settings."),
    options: ExtractOptions = ExtractOptions(),
) -> None:
    """Extract CNN/ViT descriptors of every manifest image, one store per pooling.

    Interrupted runs resume where they stopped when re-run with the same options.

    Examples:

      bpcr extract work/demo/db.csv --pooling gem,grmac --out work/features/db

      bpcr extract work/demo/db.csv --pooling gem --shard 1/4 --out work/features/db-1

      bpcr extract work/demo/queries.csv --pooling grmac --size 480 --resize pad --crop salient --out work/features/queries

      bpcr extract --merge work/features/db-1 work/features/db-2 work/features/db-3 work/features/db-4 --out work/features/db
    """
    from dataclasses import replace

    from bpcr.cli.display import rich_progress, show_stores, warn

    if merge:
        from bpcr.features.extract import merge as merge_parts

        stores = merge_parts(inputs, out, pca_whiten=options.pca_whiten, pca_from=options.pca_from)
    else:
        if len(inputs) != 1:
            raise BadInput(None, None, "give one manifest (or --merge with shard folders)")
        if not pooling:
            raise BadInput(None, None, f"--pooling is required: {choices(pooling_choices())}")
        from bpcr.features.extract import extract

        options = replace(options, poolings=tuple(p.strip() for p in pooling.split(",") if p.strip()),
                          pooling_params=parse_params(param), scales=MULTISCALE if multiscale else options.scales,
                          shard=parse_shard(shard) if shard else None,
                          pad_colour=parse_pad_colour(pad_colour) if pad_colour is not None else options.pad_colour)
        try:
            stores = extract(inputs[0], out, options, restart=restart, progress=rich_progress, on_warning=warn)
        except KeyboardInterrupt as exc:
            typer.echo(str(exc), err=True)
            raise
    show_stores(stores)


@app.command("whiten", rich_help_panel="Pipeline")
@cli_command(WhitenOptions)
def whiten_command(
    store: Path = typer.Argument(..., help="Feature store to whiten: the database's to learn on, or any store with --from."),
    out: Path = typer.Option(..., "--out", help="The whitened store to write (a new feature store; the projection beside its rows: whitening.npz for learned, pca.npz for pca)."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Database manifest (database.csv) whose positive pairs --method learned learns from; never the queries'."),
    source: Optional[Path] = typer.Option(None, "--from", "--apply", help="Apply the whitening learned on this store (its whitening.npz or pca.npz) or in this file, unchanged, instead of learning one (e.g. the database's, to the queries)."),
    options: WhitenOptions = WhitenOptions(),
) -> None:
    """Whiten a feature store: learned whitening (Lw, Radenovic et al. TPAMI 2018) from the database's own positive pairs, or PCA-whitening; apply it to the queries with --from.

    Examples:

      bpcr whiten work/features/lite0/database/gem --manifest work/prepared/database.csv --out work/features/lite0-lw/database/gem

      bpcr whiten work/features/lite0/queries/gem --from work/features/lite0-lw/database/gem --out work/features/lite0-lw/queries/gem
    """
    from bpcr.training.whiten import whiten

    whiten(store, out, options, manifest=manifest, source=source, log=typer.echo)


@app.command("combine", rich_help_panel="Pipeline")
@cli_command(CombineOptions)
def combine_command(
    stores: List[Path] = typer.Argument(..., help="Database feature stores to combine, matched row by row by ID (each must hold the same IDs); with --from, the query stores made as its inputs were, in the same order."),
    out: Path = typer.Option(..., "--out", help="The combined store to write (a new feature store; its combination.npz beside its rows)."),
    weights: Optional[str] = typer.Option(None, "--weights", help=help_text(COMBINE_FIELDS["weights"])),
    queries: List[Path] = typer.Option([], "--queries", help="A query store to combine with the parameters learned on the database, one per database store in the same order (repeat the option); needs --queries-out."),
    queries_out: Optional[Path] = typer.Option(None, "--queries-out", help="The combined query store to write (with --queries)."),
    source: Optional[Path] = typer.Option(None, "--from", help="Combine STORES (query stores) with the parameters of this combined database store, unchanged, instead of learning them."),
    options: CombineOptions = CombineOptions(),
) -> None:
    """Concatenate feature stores, each L2-normalised and weighted, optionally z-normalised and PCA-reduced (learned on the database only), then L2-normalised: one store to index and search.

    Without --znorm and --pca, the ranking equals `bpcr search`'s sum fusion of the separate stores with the weights squared (weight 10 on the features is 100 on the cosines).

    Examples:

      bpcr combine work/features/a/database/grmac work/features/b/database/mac --weights 10,8.95 --out work/features/ab/database/combined --queries work/features/a/queries/grmac --queries work/features/b/queries/mac --queries-out work/features/ab/queries/combined

      bpcr combine DB1 DB2 DB3 DB4 --znorm --pca 2048 --out work/features/four/database/combined

      bpcr combine Q1 Q2 Q3 Q4 --from work/features/four/database/combined --out work/features/four/queries/combined
    """
    from dataclasses import replace

    from bpcr.features.combine import combine

    options = replace(options, weights=parse_weights(weights))
    if queries and queries_out is None:
        raise BadInput(None, None, "--queries needs --queries-out QDIR (where the combined query store goes)")
    if queries_out is not None and not queries:
        raise BadInput(None, None, "--queries-out writes the combined --queries stores; give --queries")
    if queries and source is not None:
        raise BadInput(None, None, "--from applies a database's combination to STORES; drop --queries")
    if queries and len(queries) != len(stores):
        raise BadInput(None, None, f"give one --queries store per database store: {len(stores)} database stores, "
                                   f"{len(queries)} query stores")
    if queries:
        from bpcr.io.folders import FEATURE_STORE, check_output_folder

        check_output_folder(queries_out, "--queries-out", FEATURE_STORE)  # before the database's work
        if Path(queries_out).resolve() == Path(out).resolve():
            raise BadInput(queries_out, None, "is --out too; the combined query store needs a folder of its own")
    combine(stores, out, options, source=source, log=typer.echo)
    if queries:
        combine(queries, queries_out, CombineOptions(dtype=options.dtype), source=out, log=typer.echo)


@app.command("index", rich_help_panel="Pipeline")
@cli_command(IndexOptions)
def index_command(
    store: Path = typer.Argument(..., help="Feature store folder from `bpcr extract`."),
    out: Path = typer.Option(..., "--out", help="Index folder to write (index.json, plus index.faiss for ivf/hnsw)."),
    options: IndexOptions = IndexOptions(),
) -> None:
    """Build an exact or approximate index over a feature store.

    Examples:

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem-ivf --kind ivf

      bpcr index work/features/db-resnet50-gem --out work/index/resnet50-gem-ivfpq --kind ivf --pq 64 --metric l2
    """
    from bpcr.cli.display import show_index
    from bpcr.retrieval.index import build_index

    show_index(build_index(store, out, options, log=typer.echo))


def _parsed_depth(depth: int) -> int:
    """--depth within the range SearchOptions declares, refused while parsing (before a missing --index is)."""
    try:
        check(SearchOptions(depth=depth))
    except BadInput as exc:
        raise typer.BadParameter(exc.reason) from None
    return depth


@app.command("search", rich_help_panel="Pipeline")
@cli_command(SearchOptions)
def search_command(
    index: List[Path] = typer.Option(..., "--index", help="Index folder from `bpcr index`; repeat to fuse several feature sets."),
    queries: List[Path] = typer.Option(..., "--queries", help="Query feature store; one per --index, in the same order."),
    name: str = typer.Option(..., "--name", help="Run name: writes NAME.csv, NAME.trec and NAME.json."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for the run files."),
    depth: int = typer.Option(SearchOptions.depth, "--depth", callback=_parsed_depth,
                              help=help_text(SEARCH_FIELDS["depth"])),
    k_old: Optional[int] = typer.Option(None, "--k", min=1, hidden=True, help="Deprecated name of --depth."),
    weights: Optional[str] = typer.Option(None, "--weights", help=help_text(SEARCH_FIELDS["weights"])),
    options: SearchOptions = SearchOptions(),
) -> None:
    """Search query features in one or more indexes and write a run.

    Examples:

      bpcr search --index work/index/resnet50-gem --queries work/features/q-resnet50-gem --name resnet50-gem

      bpcr search --index work/index/A --queries work/features/qA --index work/index/B --queries work/features/qB
      --weights 0.6,0.4 --fusion sum --name fused
    """
    from dataclasses import replace

    from bpcr.cli.display import show_run
    from bpcr.retrieval.search import search

    depth = renamed("--k", "--depth", k_old, depth, SearchOptions.depth)
    options = replace(options, depth=depth, weights=parse_weights(weights))
    show_run(search(index, queries, name, out, options, log=typer.echo))


@app.command("text-index", rich_help_panel="Pipeline")
@cli_command(TextIndexOptions)
def text_index_command(
    manifest: Path = typer.Argument(..., help="Database manifest from `bpcr prepare` (its description column is indexed)."),
    out: Path = typer.Option(..., "--out", help="Text index folder to write (ids.txt, neighbours.npz, meta.json)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the folder already holds an index of the same manifest and options."),
    options: TextIndexOptions = TextIndexOptions(),
) -> None:
    """Build the textual index of database descriptions (paper 001 §2.2): TF-IDF neighbours with cosine > tau.

    An index already in --out is reused when the manifest and options match.

    Example: bpcr text-index work/prepared/database.csv --out work/text-index --tau 0.6
    """
    from bpcr.text.index import build_text_index, describe

    typer.echo(describe(build_text_index(manifest, out, options, force=force)))


@app.command("refine", rich_help_panel="Pipeline")
@cli_command(RefineOptions)
def refine_command(
    run: Path = typer.Argument(..., help="Input run (NAME.trec for depth, or NAME.csv, or the stem)."),
    text_index: Optional[Path] = typer.Option(None, "--text-index", help="Text index folder from `bpcr text-index` (needed by text; dupgroup's description links)."),
    db_features: Optional[List[Path]] = typer.Option(None, "--db-features", help="Database feature store(s) to rank with; default: those the input run was searched with, with its distances, weights and fusion (from its provenance). Repeat to fuse."),
    query_features: Optional[List[Path]] = typer.Option(None, "--query-features", help="Query feature store(s), one per --db-features (same extraction options)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="With --db-features: comma-separated weight per feature set (default all 1)."),
    k_old: Optional[int] = typer.Option(None, "--k", min=1, max=7, hidden=True, help="Deprecated name of --k-keep."),
    graph_dir: Path = typer.Option(Path("work/cache/graphs"), "--graph-dir", help="Where the database's k-NN graphs are kept and reused (kreciprocal, diffusion, dupgroup)."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    method_option: List[str] = typer.Option([], "--method-option", help="An option of a plugin's --method, KEY=VALUE (repeatable; the value read as JSON, else as text), as a config's refine table sets it (docs/plugins.md)."),
    options: RefineOptions = RefineOptions(),
) -> None:
    """Rank a run again after the first search: textual two-stage search, query expansion, k-reciprocal or diffusion re-ranking, or duplicate groups.

    Every method ranks with the input run's own similarity (a fused run with its
    fused similarity) and writes a run whose JSON holds every parameter. A
    method's options are refused with another --method.

    Examples:

      bpcr refine submissions/fused.trec --text-index work/text-index --k-keep 3 --name fused-refined

      bpcr refine submissions/fused.trec --method aqe --name fused-aqe

      bpcr refine submissions/fused.trec --method diffusion --kq 7 --kd 50 --name fused-diffusion

      bpcr refine submissions/grmac.trec --method dupgroup --text-index work/text-index --dup-by either --name grmac-dup
    """
    from dataclasses import replace

    from bpcr.cli.display import show_run
    from bpcr.postretrieval.refine import refine

    options = replace(options, k_keep=renamed("--k", "--k-keep", k_old, options.k_keep, None),
                      weights=parse_weights(weights))
    show_run(refine(run, text_index, db_features or None, query_features or None, name, out, options,
                    parse_method_options(method_option), graph_dir=graph_dir, log=typer.echo))


@app.command("dba", rich_help_panel="Pipeline")
@cli_command(DbaOptions)
def dba_command(
    store: Path = typer.Argument(..., help="Database feature store to augment."),
    out: Path = typer.Option(..., "--out", help="The augmented store to write (a new feature store)."),
    index: Optional[Path] = typer.Option(None, "--index", help="An approximate bpcr index of STORE to find neighbours with (default: exact scan)."),
    graph_dir: Path = typer.Option(Path("work/cache/graphs"), "--graph-dir", help="Where the store's k-NN graph is kept and reused."),
    options: DbaOptions = DbaOptions(),
) -> None:
    """Database-side augmentation (DBA): each database vector plus its n nearest, as a new feature store.

    Index and search the new store as any other; the query side is unchanged.

    Example: bpcr dba work/features/lite0/database/grmac --out work/features/lite0-dba/database/grmac --n 1
    """
    from bpcr.postretrieval.dba import dba
    from bpcr.cli.display import show_stores

    show_stores({f"dba n={options.n} alpha={options.alpha:g}": dba(store, out, options, index=index,
                                                                   graph_dir=graph_dir, log=typer.echo).path})


@app.command("rerank", rich_help_panel="Pipeline")
@cli_command(RerankOptions)
def rerank_command(
    run: Path = typer.Argument(..., help="Input run (NAME.trec for a deep shortlist; NAME.csv gives only 7)."),
    db_manifest: Path = typer.Option(..., "--db-manifest", help="Database manifest from `bpcr prepare` (database.csv)."),
    query_manifest: Path = typer.Option(..., "--query-manifest", help="Query manifest from `bpcr prepare` (queries.csv)."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    cache_dir: Path = typer.Option(RERANK_CACHE_DIR, "--cache-dir", help="Cache of SIFT descriptors (.npz)."),
    options: RerankOptions = RerankOptions(),
) -> None:
    """Re-rank each query's shortlist by SIFT matching (paper 000 §3.1.1, §3.4.2).

    Example: bpcr rerank submissions/mac.trec --db-manifest work/demo/prepared/database.csv
    --query-manifest work/demo/prepared/queries.csv --top 100 --name mac-sift
    """
    from bpcr.cli.display import rich_progress, show_run
    from bpcr.reranking.rerank import rerank

    show_run(rerank(run, db_manifest, query_manifest, name, out, options, cache_dir=cache_dir, progress=rich_progress))


@app.command(rich_help_panel="Pipeline")
@cli_command(EnsembleOptions)
def ensemble(
    runs: List[Path] = typer.Argument(..., help="Runs to fuse (NAME.csv ranks only / NAME.trec with scores) or folders of runs; weights follow this order."),
    name: str = typer.Option(..., "--name", help="Name of the output run."),
    out: Path = typer.Option(Path("submissions"), "--out", help="Folder for NAME.csv, NAME.trec and NAME.json."),
    # --weights is a comma list here, an array in a config; its help is the field's (bpcr.evaluation.options).
    weights: Optional[str] = typer.Option(None, "--weights", help=help_text(ENSEMBLE_FIELDS["weights"])),
    k_old: Optional[float] = typer.Option(None, "--k", min=0.0, hidden=True, help="Deprecated name of --rrf-k."),
    tune_on: Optional[Path] = typer.Option(None, "--tune-on", help="Ground truth to tune the weights (and RRF's constant) on, with cross-validation; only its public half (as `bpcr score` splits it) unless --tune-half says otherwise."),
    *,
    options: EnsembleOptions,
) -> None:
    """Fuse several runs into one (RRF, Borda, CombSUM, CombMNZ), optionally with weights tuned by cross-validation.

    Example: bpcr ensemble submissions/mac.trec submissions/grmac.trec --method rrf --name fused
    --tune-on work/demo/ground_truth.csv
    """
    from dataclasses import replace

    from bpcr.cli.display import show_run
    from bpcr.evaluation.ensemble import ensemble as run_ensemble

    rrf_k = renamed("--k", "--rrf-k", k_old, options.rrf_k, None)
    options = replace(options, weights=parse_weights(weights), rrf_k=rrf_k)
    show_run(run_ensemble(runs, name, options, out, tune_on=tune_on))
