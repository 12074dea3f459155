"""The options of ``bpcr index`` and ``bpcr search``, each declared once (:mod:`bpcr.options`): the CLI, a
config's ``[index]`` and ``[[search]]`` tables and the pipeline's stage keys are derived from
:class:`IndexOptions` and :class:`SearchOptions`.

It imports nothing heavy (the CLI reads it at start-up), so the names of the distances, index kinds and
similarity fusions are spelled here; tests/cli/test_cli.py proves each list equals its registry.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bpcr.errors import BadInput
from bpcr.options import check, fields_of, option
from bpcr.ranges import SEED_MAX, check_weights
from bpcr.io.runs import SUBMISSION_DEPTH

DISTANCES = ("cosine", "l2", "l1")  # the names of bpcr.retrieval.distances.DISTANCES (paper 000 eq 6-8)
KINDS = ("flat", "ivf", "hnsw")  # the index kinds bpcr.retrieval.index builds
SIMILARITY_FUSIONS = ("sum", "product")  # the names of bpcr.retrieval.fusion.SIMILARITY_FUSIONS


@dataclass(frozen=True)
class IndexOptions:
    """How ``bpcr index`` builds an index over a feature store (:mod:`bpcr.retrieval.index`).

    ``metric``: one of the three distances of paper 000 (eq 6-8). ``kind``: ``flat`` is exact and streams the
    store; ``ivf`` (IVF with float16 vectors, or IVF-PQ with ``pq`` sub-vectors) and ``hnsw`` are faiss indexes,
    with ``nlist`` lists (default sqrt(N)) or ``hnsw_m`` neighbours per node. Their search parameter (nprobe or
    efSearch) is raised until the recall@100 measured on ``recall_sample`` database rows reaches ``target_recall``;
    an IVF index is trained on ``train_size`` rows (default: 50 per list, at least 10,000, at most all) drawn with
    ``seed``. ``chunk_rows``: store rows read at once (default: set by the dimension). Every field's help says
    the rest.
    """

    metric: str = option("cosine", "Distance: {choices}.", choices=DISTANCES, paper="000 eq 6-8")
    kind: str = option("flat", "{choices}: flat is exact (streams the store), ivf is IVF (float16 vectors) / IVF-PQ.",
                       choices=KINDS)
    pq: int | None = option(None, "Product quantisation with M sub-vectors, dividing the dimension, for --kind ivf "
                                  "or hnsw with l2.", low=1, integer=True)
    nlist: int | None = option(None, "IVF lists with --kind ivf, default sqrt(N).", low=1, integer=True)
    hnsw_m: int = option(32, "HNSW neighbours per node.", low=2, integer=True)
    target_recall: float = option(0.95, "nprobe / efSearch is raised until recall@100 reaches this.", low=0, high=1,
                                  low_open=True)
    recall_sample: int = option(200, "Database rows used as queries to measure recall@100.", low=1, integer=True)
    train_size: int | None = option(None, "Rows an IVF index is trained on (default: 50 per list, at least 10,000, "
                                          "at most all).", low=1, integer=True, flag="train_size", cli=False)
    seed: int = option(0, "Seed of the training and recall samples.", low=0, high=SEED_MAX, integer=True)
    chunk_rows: int | None = option(None, "Store rows read at once (default: set by the dimension).", low=1,
                                    integer=True, flag="chunk_rows", cli=False)


def check_index_options(options: IndexOptions) -> None:
    """Refuse (BadInput) options out of their ranges or that do not go together, before any work."""
    if options.kind not in KINDS:
        raise BadInput(None, None, f"unknown index kind {options.kind!r}; choose one of {', '.join(KINDS)}")
    check(options)
    if options.pq is not None and options.kind == "flat":
        raise BadInput(None, None, "--pq applies to --kind ivf or hnsw; a flat index is exact and not quantised")
    if options.nlist is not None and options.kind != "ivf":
        raise BadInput(None, None, f"--nlist applies to --kind ivf, not {options.kind}")


@dataclass(frozen=True)
class SearchOptions:
    """How ``bpcr search`` ranks the database for each query (:mod:`bpcr.retrieval.search`).

    ``depth``: results per query in the run's .trec (its .csv holds the top 7). With several feature sets, their
    similarities are fused by ``fusion`` with ``weights`` (one per index, default all 1): ``sum`` is paper 003's
    eq 16, ``product`` paper 001's eq 8 (cosine indexes only). Each index proposes its best ``shortlist``
    images (default and at least ``depth`` + 16), re-scored exactly; ``exhaustive`` scores every database image
    instead, ``chunk_rows`` database rows at a time. ``device``: where flat indexes are scanned; the run is the
    same on each. Every field's help says the rest.
    """

    # The command line spells --depth itself: Typer refuses --depth 0 while parsing, and --k is its old name.
    depth: int = option(100, "Results per query in NAME.trec (the CSV holds the top 7, so at least 7).",
                        low=SUBMISSION_DEPTH, integer=True, cli=False)
    weights: Sequence[float] | None = option(None, "Weight of each index's similarity, one per index in their order "
                                                   "(comma-separated on the command line), finite, at least 0 and "
                                                   "not all 0 (default all 1).", cli=False)
    fusion: str = option("sum", "Similarity fusion, one of {choices}; product multiplies cosine similarities only.",
                         choices=SIMILARITY_FUSIONS, paper="003 eq 16 sum, 001 eq 8 product")
    exhaustive: bool = option(False, "Score every database image with every feature set (in chunks).")
    shortlist: int | None = option(None, "Candidates taken from each index before exact re-scoring; at least, and "
                                         "by default, the depth + 16.", low=1, integer=True)
    chunk_rows: int | None = option(None, "Database rows scored at once with exhaustive (default: set by the "
                                          "dimension).", low=1, integer=True, flag="chunk_rows", cli=False)
    device: str = option("auto", "Where flat indexes are scanned: auto (faiss's GPU, else CUDA through torch, else "
                                 "the CPU), cpu or cuda[:N].")


SEARCH_FIELDS = {f.name: f for f in fields_of(SearchOptions)}


def check_search_options(options: SearchOptions) -> list[float] | None:
    """Refuse (BadInput) options out of their ranges, before any work; returns the weights as floats (or None)."""
    check(options)
    return None if options.weights is None else check_weights(options.weights)
