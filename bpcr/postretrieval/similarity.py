"""The first search's similarity, for the methods that rank a run again (``bpcr refine``).

A run made by ``bpcr search`` ranks with one or more feature sets, each a
(database store, query store, distance) triple, and fuses their similarities
with a similarity fusion (``bpcr.retrieval.fusion``) and weights. Every refinement ranks
with that same similarity, read from the input run's provenance (following
refine/rerank provenance back to the search that made the list) unless given:
a product-fused run is refined with the fused similarity, never with one
network's cosine. Scores are the exact float64 scores of
:mod:`bpcr.retrieval.distances`.

Methods that need one vector per image (query expansion, diffusion's graph,
duplicate groups) work per feature set through :meth:`Similarity.set_scores`
and fuse the per-set results with :meth:`Similarity.combine`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bpcr.retrieval.distances import Distance, get_distance, rescore
from bpcr.errors import BadInput
from bpcr.retrieval.fusion import SimilarityFusion, get_similarity_fusion
from bpcr.io.runs import Run, read_provenance
from bpcr.io.store import FeatureStore, check_same_extraction, open_store

# S(x, x) of each distance's score: the cosine of a vector with itself, a zero distance.
SELF_SCORE = {"cosine": 1.0, "l2": 0.0, "l1": 0.0}


@dataclass
class Similarity:
    """The first search's similarity, to rank again with.

    One (database store, query store, distance) per feature set, fused by
    ``fusion`` with ``weights`` when there are several (``bpcr.retrieval.fusion``).
    ``indexes``: each set's index folder when the input run names it (None
    otherwise), so a second search proposes candidates as the first did.
    """

    db: list[FeatureStore]
    queries: list[FeatureStore]
    distances: list[Distance]
    weights: np.ndarray
    fusion: SimilarityFusion | None
    source: str  # "input run" or "given"
    indexes: list[Path | None] | None = None

    def __post_init__(self) -> None:
        self.db_rows = [{image_id: row for row, image_id in enumerate(s.ids)} for s in self.db]
        self.query_rows = [{image_id: row for row, image_id in enumerate(s.ids)} for s in self.queries]
        if self.indexes is None:
            self.indexes = [None] * len(self.db)

    @property
    def n_sets(self) -> int:
        return len(self.db)

    def has_query(self, query_id: str) -> bool:
        return all(query_id in rows for rows in self.query_rows)

    def has_image(self, image_id: str) -> bool:
        return all(image_id in rows for rows in self.db_rows)

    def query_vector(self, s: int, query_id: str) -> np.ndarray:
        """(D,) float64: the query's feature in set ``s``."""
        return np.asarray(self.queries[s].features[self.query_rows[s][query_id]], dtype=np.float64)

    def rows(self, s: int, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) int64: the images' rows in set ``s``'s database store."""
        return np.array([self.db_rows[s][i] for i in ids], dtype=np.int64)

    def set_scores(self, query_id: str, ids: Sequence[str]) -> np.ndarray:
        """(S, len(ids)) float64: each set's exact score of the images."""
        return np.stack([rescore(self.distances[s], self.query_vector(s, query_id), self.db[s].features,
                                 self.rows(s, ids)) for s in range(self.n_sets)])

    def combine(self, per_set: np.ndarray) -> np.ndarray:
        """(S, ...) per-set scores -> (...) fused as the first search fused them."""
        return per_set[0] if self.fusion is None else self.fusion.combine(per_set, self.weights)

    def scores(self, query_id: str, ids: Sequence[str]) -> np.ndarray:
        """(len(ids),) float64: each set's exact score of the images, fused as the first search fused them."""
        return self.combine(self.set_scores(query_id, ids))

    def self_scores(self) -> np.ndarray:
        """(S,) each set's score of an image with itself (1 for cosine, 0 for l1 and l2)."""
        return np.array([SELF_SCORE[d.name] for d in self.distances])

    def require_cosine(self, method: str) -> None:
        """Refuse a set ranked by a distance other than cosine, for a method defined on cosines."""
        for s, distance in enumerate(self.distances):
            if distance.name != "cosine":
                raise BadInput(self.db[s].path, None, f"{method} is defined on cosine similarities; feature set "
                                                      f"{s + 1} of the input run ranks by {distance.name}")

    def describe(self) -> dict:
        return {"source": self.source, "db": [str(s.path) for s in self.db],
                "queries": [str(s.path) for s in self.queries], "distances": [d.name for d in self.distances],
                "weights": self.weights.tolist(), "fusion": None if self.fusion is None else self.fusion.name}


def similarity_order(ids: Sequence[str], scores: np.ndarray) -> list[str]:
    """``ids`` best first by ``scores``, equal scores by ID."""
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))]


def _recorded(value, source: Path | None):
    """A path a run's provenance records, relative to the folder the run was made in (or absolute).

    Found from the current folder first; else from the run file's folder and up to three folders above it
    (a run kept in ``PROJECT/submissions`` names ``work/...`` relative to ``PROJECT``), so a run can be
    refined from another working folder.
    """
    if not isinstance(value, str):
        return value
    path = Path(value)
    if path.is_absolute() or path.exists() or source is None:
        return path
    folder = Path(source).resolve().parent
    for base in [folder, *folder.parents][:4]:
        if (base / path).exists():
            return base / path
    return path


def _open(value, opener):
    return opener(value) if isinstance(value, (str, Path)) else value


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def search_params(run: Run, files: dict[str, Path]) -> tuple[dict, Path]:
    """The parameters of the search that made ``run``'s lists, following input runs back (at most 8 steps)."""
    prov, source = run.provenance, files.get(".json")
    for _ in range(8):
        if str(prov.get("method", "")).startswith("search"):
            return prov.get("params", {}), source
        inputs = prov.get("input_run", {}).get("files", [])
        json_files = [Path(f["path"]) for f in inputs if str(f.get("path", "")).endswith(".json")]
        if not json_files or not json_files[0].is_file():
            break
        source = json_files[0]
        prov = read_provenance(source)
    raise BadInput(source or run.name, None, "cannot tell which features the input run was searched with "
                   "(its provenance leads to no search); give --db-features and --query-features")


def load_similarity(run: Run, files: dict[str, Path], db_store=None, query_store=None,
                    weights: Sequence[float] | None = None, fusion: str | None = None) -> Similarity:
    """The similarity of the input run's search, or the one given (stores, weights, fusion)."""
    if (db_store is None) != (query_store is None):
        raise BadInput(None, None, "give both --db-features and --query-features, or neither (to use the input "
                                   "run's own features)")
    index_paths: list[Path | None] | None = None
    if db_store is None:
        params, source = search_params(run, files)
        db_paths, query_paths = params.get("stores"), params.get("queries")
        if not isinstance(db_paths, list) or not isinstance(query_paths, list) or len(db_paths) != len(query_paths):
            raise BadInput(source, None, "the search's provenance names no feature stores; give --db-features and "
                                         "--query-features")
        distance_names = params.get("distances") or ["cosine"] * len(db_paths)
        weights = params.get("weights") if weights is None else weights
        fusion = params.get("fusion") if fusion is None else fusion
        named = params.get("indexes")
        if isinstance(named, list) and len(named) == len(db_paths) and all(isinstance(p, str) for p in named):
            index_paths = [_recorded(p, source) for p in named]
        db_paths = [_recorded(p, source) for p in db_paths]
        query_paths = [_recorded(p, source) for p in query_paths]
        origin = "input run"
    else:
        db_paths, query_paths = _as_list(db_store), _as_list(query_store)
        if len(db_paths) != len(query_paths):
            raise BadInput(None, None, f"give one query store per database store: {len(db_paths)} and "
                                       f"{len(query_paths)}")
        distance_names, origin = ["cosine"] * len(db_paths), "given"
    db = [_open(d, open_store) for d in db_paths]
    queries = [_open(q, lambda p: open_store(p, role="query")) for q in query_paths]
    for d, q in zip(db, queries):
        check_same_extraction(d, q, f"the database store {d.path}")
    n_sets = len(db)
    weights_arr = np.ones(n_sets) if weights is None else np.asarray(list(weights), dtype=np.float64)
    if weights_arr.shape != (n_sets,) or not np.all(np.isfinite(weights_arr)):
        raise BadInput(None, None, f"weights needs {n_sets} finite numbers, one per feature set")
    fuse = get_similarity_fusion(fusion or "sum") if n_sets > 1 else None
    return Similarity(db, queries, [get_distance(n) for n in distance_names], weights_arr, fuse, origin, index_paths)
