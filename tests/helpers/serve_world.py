"""A small world for the team board's tests: manifests, a ground truth split into halves, runs of chosen quality.

40 queries (``v001``..``v040``) and 80 database images (``n001``..``n080``), each query with 1 to 3 relevant
images. :func:`make_world` writes the manifests (images too, when asked: small JPEGs) and the ground truth;
``private_twist`` changes the relevant images of the private queries only (the public half as before), for
tests that prove nothing the board shows while hidden depends on them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bpcr.dataset.gt import write_ground_truth
from bpcr.dataset.manifest import write_manifest
from bpcr.evaluation.split import QuerySplit

QUERIES = [f"v{i:03d}" for i in range(1, 41)]
DB = [f"n{i:03d}" for i in range(1, 81)]
SPLIT = QuerySplit()
PUBLIC = [q for q in QUERIES if SPLIT.is_public(q)]
PRIVATE = [q for q in QUERIES if not SPLIT.is_public(q)]


@dataclass
class World:
    root: Path
    gt: Path
    db: Path
    queries: Path
    relevant: dict[str, list[str]]


def ground_truth(private_twist: int = 0) -> dict[str, list[str]]:
    """Query -> relevant images; ``private_twist`` > 0 moves the private queries' to other images."""
    relevant = {}
    for i, query in enumerate(QUERIES):
        shift = private_twist * 17 if query in PRIVATE else 0
        relevant[query] = [DB[(2 * i + shift + k) % len(DB)] for k in range(1 + i % 3)]
    return relevant


def make_world(root: Path, private_twist: int = 0, images: bool = False) -> World:
    root.mkdir(parents=True, exist_ok=True)
    prepared = root / "prepared"
    prepared.mkdir(exist_ok=True)
    folder = root / "images"
    folder.mkdir(exist_ok=True)
    for name, ids in (("database.csv", DB), ("queries.csv", QUERIES)):
        paths = [folder / f"{i}.jpg" for i in ids]
        if images:
            from PIL import Image

            for number, path in enumerate(paths):
                if not path.exists():
                    Image.new("RGB", (40, 30), ((37 * number) % 256, (91 * number) % 256, 120)).save(path, "JPEG")
        write_manifest(prepared / name, ids, paths, [40] * len(ids), [30] * len(ids), [""] * len(ids))
    relevant = ground_truth(private_twist)
    gt = root / "gt.csv"
    write_ground_truth(gt, relevant)
    return World(root, gt, prepared / "database.csv", prepared / "queries.csv", relevant)


def run_text(relevant: dict[str, list[str]], hit_rate: float, seed: int, queries: list[str] | None = None) -> str:
    """A submission: for a share ``hit_rate`` of the queries the first relevant image at rank 1 (drawn with
    ``seed``), the rest of each line other images; every line has 7 distinct known IDs, sorted by query."""
    rng = random.Random(seed)
    lines = []
    for query in sorted(queries or QUERIES):
        others = [d for d in DB if d not in relevant[query]]
        picks = rng.sample(others, 7)
        if rng.random() < hit_rate:
            picks = [relevant[query][0], *picks[:6]]
        lines.append(",".join([query, *picks]))
    return "\n".join(lines) + "\n"
