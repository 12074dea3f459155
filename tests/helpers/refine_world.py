"""Hand-made feature geometries for the refine methods' tests: stores, a flat index and a searched run."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bpcr.retrieval.index import build_index
from bpcr.retrieval.search import search
from bpcr.retrieval.options import SearchOptions
from bpcr.io.store import write_store

META = {"backbone": "hand", "pooling": "none"}


def unit(*values: float) -> list[float]:
    v = np.array(values, dtype=np.float64)
    return (v / np.linalg.norm(v)).tolist()


def angle(degrees: float) -> list[float]:
    """A unit vector in the plane at ``degrees``: the cosine of two is the cosine of their angle."""
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def make_world(folder: Path, db: Mapping[str, Sequence[float]], queries: Mapping[str, Sequence[float]],
               name: str = "base", depth: int | None = None, meta: Mapping | None = None,
               dtype=np.float32) -> Path:
    """Write the stores, a flat cosine index and search them; returns the run's .trec path."""
    meta = dict(meta or META)
    db_ids = sorted(db)
    write_store(folder / f"db-{name}", db_ids, np.array([db[i] for i in db_ids], dtype=dtype), meta)
    q_ids = sorted(queries)
    write_store(folder / f"q-{name}", q_ids, np.array([queries[q] for q in q_ids], dtype=dtype), meta)
    build_index(folder / f"db-{name}", folder / f"index-{name}", log=lambda m: None)
    search(folder / f"index-{name}", folder / f"q-{name}", name, folder / "runs",
           SearchOptions(depth=max(depth or len(db_ids), 7)), log=lambda m: None)  # a CSV needs 7
    return folder / "runs" / f"{name}.trec"


def rotate(base: Sequence[float], towards: Sequence[float], degrees: float) -> list[float]:
    """``base`` (unit) turned by ``degrees`` towards ``towards`` in the plane they span."""
    base_v, toward_v = np.array(base, dtype=np.float64), np.array(towards, dtype=np.float64)
    toward_v = toward_v - (toward_v @ base_v) * base_v
    toward_v /= np.linalg.norm(toward_v)
    r = math.radians(degrees)
    return (math.cos(r) * base_v + math.sin(r) * toward_v).tolist()


def chain_world() -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The query q = e0 and six database images in 4 dimensions (angles to q in degrees):

    a 5, b 15, t 25 in the (e0, e1) plane: a chain a-b-t, 10 degrees apart;
    d 14 in the (e0, e2) plane, with f1 (27) and f2 (26.3) 13 degrees beyond it, a
    cluster of its own. The search ranks a, d, b, t, f2, f1. With 2 neighbours per
    image the mutual pairs are a-b, b-t, d-f1, d-f2, f1-f2: b and t are reached from
    a, d is not (a is not among d's two nearest, f1 and f2 at 13 degrees).
    """
    e = np.eye(4)

    def plane(degrees: float) -> list[float]:
        return (math.cos(math.radians(degrees)) * e[0] + math.sin(math.radians(degrees)) * e[1]).tolist()

    d = math.cos(math.radians(14)) * e[0] + math.sin(math.radians(14)) * e[2]
    away = math.cos(math.radians(14)) * e[2] - math.sin(math.radians(14)) * e[0]
    db = {"a": plane(5), "b": plane(15), "t": plane(25), "d": d.tolist(), "f1": rotate(d, away, 13),
          "f2": rotate(d, 2 * away + e[3], 13)}
    return db, {"v1": e[0].tolist()}


def clustered_world(seed: int, clusters: int = 5, per: int = 6, dim: int = 12, queries: int = 3
                    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Unit vectors in ``clusters`` groups of ``per`` around random centres, and queries near some centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = np.repeat(centres, per, axis=0) + 0.6 * rng.standard_normal((clusters * per, dim))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    asked = centres[rng.permutation(clusters)[:queries]] + 0.8 * rng.standard_normal((queries, dim))
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    return ({f"g{i:02d}": p.tolist() for i, p in enumerate(points)},
            {f"v{i + 1}": p.tolist() for i, p in enumerate(asked)})
