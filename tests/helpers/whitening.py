"""A hand-made database for learned whitening: a feature store, its manifest with near-identical descriptions
for the positive pairs, and a query store; the pairs share a direction, a few nuisance directions dominate."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpcr.io.store import write_store


def word(k: int) -> str:
    """A distinct letters-only word for each k (descriptions' terms)."""
    letters = "bcdfghjklmnpqrstvwxz"
    out = ""
    for _ in range(3):
        out += letters[k % len(letters)]
        k //= len(letters)
    return "o" + out


@dataclass
class World:
    db: Path  # the database store
    queries: Path  # a query store (other IDs, same kind of rows)
    manifest: Path  # database.csv: the database's IDs and descriptions
    pairs: np.ndarray  # (P, 2) store rows of the positive pairs, lower row first
    x: np.ndarray  # (N, D) float32 database rows as stored


def vectors(rng: np.random.Generator, products: np.ndarray, nuisance: float, noise: float) -> np.ndarray:
    """One image per product row: its direction, large nuisance on the first 4 dimensions, small noise elsewhere;
    L2-normalised."""
    n, d = products.shape
    scale = np.full(d, noise)
    scale[:4] = nuisance
    x = products + rng.normal(size=(n, d)) * scale
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_world(folder: Path, n_pairs: int = 40, n_single: int = 20, dim: int = 12, seed: int = 0,
               dtype: str = "float32") -> World:
    """``n_pairs`` products listed twice (identical descriptions) and ``n_single`` listed once, in a store of
    ``dim``-d rows; a query store of 10 more photos of the first products."""
    rng = np.random.default_rng(seed)
    n_products = n_pairs + n_single
    products = rng.normal(size=(n_products, dim))
    first = vectors(rng, products, 2.0, 0.15)
    second = vectors(rng, products[:n_pairs], 2.0, 0.15)
    x = np.concatenate([first, second])
    ids = [f"n{i:04d}" for i in range(len(x))]
    descriptions = [f"{word(k)} {word(k + 500)} lipstick" for k in range(n_products)] + \
                   [f"{word(k)} {word(k + 500)} lipstick" for k in range(n_pairs)]
    manifest = folder / "prepared" / "database.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "path", "width", "height", "description"])
        for image_id, text in sorted(zip(ids, descriptions)):
            writer.writerow([image_id, f"../database/{image_id}.jpg", 64, 64, text])
    db = folder / "features" / "database"
    write_store(db, ids, x.astype(dtype), {"backbone": "hand-made", "pooling": "gem", "normalisation": "l2"})
    q = vectors(rng, products[:10], 2.0, 0.15)
    queries = folder / "features" / "queries"
    write_store(queries, [f"v{i:04d}" for i in range(10)], q.astype(dtype),
                {"backbone": "hand-made", "pooling": "gem", "normalisation": "l2"})
    pairs = np.array([[k, n_products + k] for k in range(n_pairs)], dtype=np.int64)
    return World(db, queries, manifest, pairs, x.astype(dtype).astype(np.float32))
