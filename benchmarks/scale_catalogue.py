"""A Perfect-500K-sized catalogue for ``scale_rehearsal.py``: shop JPEGs at real sizes, descriptions, query photos.

Cheaper than :mod:`bpcr.demo` (whose renders are 256-512 px and carefully calibrated for accuracy) and
sized like a shop's images, which is what the stages' costs depend on:

- database images: 800-1600 px on the long side (square, 4:3 or 3:4), JPEG quality 88-92; a product drawn
  with OpenCV (bottle, jar, tube, compact, palette or box; cylinder shading, a cap, a label with the brand,
  line and shade printed on it, a logo) on a white, grey, gradient or studio background, photo noise;
- products come in families (a brand's line in 1-8 shades: look-alikes with the same label and another
  colour), each product listed in 1-6 images (the challenge's 1-6 relevant), views differing in scale,
  position and background, with a close-up of the label now and then;
- descriptions: brand, line, type, shade, size and marketing words from ``text_index_scale``'s vocabulary,
  reworded per listing (case, order, separators), 2% empty, 5% in Chinese or Korean;
- query photos: 1,000 per catalogue size, each a product of that catalogue photographed in clutter
  (perspective, rotation, a crop, colour cast, blur, stronger noise), 1000-1600 px, JPEG quality 60-85;
  the ground truth of a query is every image of its product.

The pixels are drawn by ``scale_drawing``; this module plans the catalogue, writes its texts and files.

Deterministic and prefix-stable: image ``i`` depends only on the seed and ``i`` (its product from the
family plan, walked in order, and its pixels from ``default_rng([seed, KIND_DB, i])``), so the catalogue of
N images is the first N of any larger one. Images are rendered once into ``ROOT/pool`` (in parallel, one
process per core, each file written atomically, so an interrupted generation resumes); a catalogue of size N
is ``ROOT/n<N>/``: ``database/`` (hard links to the first N pool images), ``descriptions.csv``, ``queries/``
and ``ground_truth.csv``.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scale_drawing import KIND_BRANDS, KIND_DB, KIND_FAMILY, KIND_PICK, query_jpeg, shop_jpeg
from text_index_scale import COLOURS, SIZES, SYLLABLES, TYPES, native_title, reworded

GENERATOR_VERSION = 1  # raise when a change to this file changes a byte of what it writes
SHADES_PER_FAMILY = ((1, 2, 3, 4, 6, 8), (0.55, 0.15, 0.1, 0.08, 0.07, 0.05))
IMAGES_PER_PRODUCT = ((1, 2, 3, 4, 5, 6), (0.2, 0.25, 0.2, 0.15, 0.1, 0.1))  # the demo's, the challenge's 1-6
N_BRANDS = 3000
SHAPES = ("bottle", "jar", "tube", "compact", "palette", "box")
ID_PRIME = 9_999_991  # IDs n0000000-n9999990: image i gets (i * ID_STEP + ID_OFFSET) mod ID_PRIME, a bijection
ID_STEP, ID_OFFSET = 7_368_787, 1_234_567
QUERIES = 1000


def db_id(i: int) -> str:
    """Image ``i``'s ID, shuffled so that neighbouring IDs reveal nothing (ties in a ranking break by ID)."""
    return f"n{(i * ID_STEP + ID_OFFSET) % ID_PRIME:07d}"


def _pick(rng: np.random.Generator, table: tuple) -> int:
    values, weights = table
    return int(values[int(rng.choice(len(values), p=np.asarray(weights) / sum(weights)))])


def _word(rng: np.random.Generator, lo: int = 2, hi: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES, size=int(rng.integers(lo, hi + 1))))


# ------------------------------------------------------------------ plan: which product each image shows


@dataclass(frozen=True)
class Plan:
    """Image ``i`` shows shade ``shade[i]`` of family ``family[i]``; ``view[i]`` numbers its listings."""

    family: np.ndarray
    shade: np.ndarray
    view: np.ndarray

    def product(self, i: int) -> tuple[int, int]:
        return int(self.family[i]), int(self.shade[i])


def family_layout(seed: int, f: int) -> list[int]:
    """Images of each shade of family ``f`` (drawn first from the family's stream, whatever N is)."""
    rng = np.random.default_rng([seed, KIND_FAMILY, f])
    return [_pick(rng, IMAGES_PER_PRODUCT) for _ in range(_pick(rng, SHADES_PER_FAMILY))]


def plan(seed: int, n: int) -> Plan:
    family, shade, view = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    i, f = 0, 0
    while i < n:
        for s, count in enumerate(family_layout(seed, f)):
            for v in range(count):
                if i < n:
                    family[i], shade[i], view[i] = f, s, v
                    i += 1
        f += 1
    return Plan(family, shade, view)


_BRANDS: dict[int, tuple[list[str], np.ndarray]] = {}


def _brands(seed: int) -> tuple[list[str], np.ndarray]:
    """The brand names and their popularity, a power law as ``text_index_scale``'s (drawn once per seed)."""
    if seed not in _BRANDS:
        rng = np.random.default_rng([seed, KIND_BRANDS])
        names = [" ".join(_word(rng) for _ in range(int(rng.integers(1, 3)))) for _ in range(N_BRANDS)]
        popularity = 1.0 / (np.arange(N_BRANDS) + 10.0) ** 1.1
        _BRANDS[seed] = (names, popularity / popularity.sum())
    return _BRANDS[seed]


def family_spec(seed: int, f: int) -> dict:
    """Everything the images and titles of family ``f`` share, and each shade's colour and name."""
    rng = np.random.default_rng([seed, KIND_FAMILY, f, 1])
    names, popularity = _brands(seed)
    brand = names[int(rng.choice(N_BRANDS, p=popularity))]
    n_shades = len(family_layout(seed, f))
    hue = float(rng.uniform(0, 180))
    shades = []
    for s in range(n_shades):
        h = (hue + (s * float(rng.uniform(8, 25)) if n_shades > 1 else 0)) % 180
        shades.append({"hsv": (h, float(rng.uniform(60, 230)), float(rng.uniform(90, 240))),
                       "name": f"{int(rng.integers(1, 100)):02d} {rng.choice(COLOURS)}" if n_shades > 1 else ""})
    return {
        "brand": brand, "line": " ".join(_word(rng) for _ in range(int(rng.integers(1, 3)))),
        "type": str(rng.choice(TYPES)), "size": f"{int(rng.choice([5, 10, 15, 30, 50, 100, 150, 200]))}{rng.choice(SIZES)}",
        "shape": str(rng.choice(SHAPES)), "aspect": float(rng.uniform(0.3, 0.8)), "cap": float(rng.uniform(0.1, 0.3)),
        "cap_colour": tuple(int(c) for c in rng.integers(0, 256, 3)),
        "label_colour": tuple(int(c) for c in rng.integers(180, 256, 3)) if rng.random() < 0.6
        else tuple(int(c) for c in rng.integers(0, 90, 3)),
        "label_top": float(rng.uniform(0.3, 0.5)), "label_height": float(rng.uniform(0.25, 0.45)),
        "font": int(rng.choice([0, 2, 3, 4, 6])), "logo": int(rng.integers(0, 4)),
        "logo_colour": tuple(int(c) for c in rng.integers(0, 256, 3)),
        "stripes": int(rng.integers(0, 4)), "shades": shades,
    }


def describe(spec: dict, shade: int, rng: np.random.Generator) -> str:
    """One listing's title: the product's words, reworded as sellers do."""
    roll = rng.random()
    if roll < 0.02:
        return ""
    if roll < 0.07:
        return native_title(spec["brand"], spec["size"], rng)
    return reworded([spec["brand"], spec["line"], spec["type"], spec["shades"][shade]["name"], spec["size"]], rng,
                    max_marketing=3)


# ------------------------------------------------------------------ files


def _write(path: Path, data: bytes) -> int:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a file under its own name is always complete: a rerun skips it
    return len(data)


_SPECS: dict[tuple[int, int], dict] = {}


def _spec(seed: int, f: int) -> dict:
    if (seed, f) not in _SPECS:
        if len(_SPECS) > 4096:
            _SPECS.clear()
        _SPECS[(seed, f)] = family_spec(seed, f)
    return _SPECS[(seed, f)]


def _render(task: tuple) -> int:
    """One file, from its task tuple alone; returns its size in bytes."""
    kind, seed, index, f, shade, view, n, path = task
    spec = _spec(seed, f)
    data = shop_jpeg(seed, index, spec, shade, view) if kind == "db" else query_jpeg(seed, n, index, spec, shade)
    return _write(Path(path), data)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism


def _render_all(tasks: list[tuple], workers: int) -> list[int]:
    if workers <= 1 or len(tasks) < 16:
        _init_worker()
        return [_render(t) for t in tasks]
    # Contiguous chunks: neighbouring images share a family, whose spec each worker keeps.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        return list(pool.imap(_render, tasks, chunksize=32))


@dataclass
class Catalogue:
    """A catalogue of ``n`` database images and its queries, ready for ``bpcr prepare``."""

    n: int
    database: Path
    descriptions: Path
    queries: Path
    ground_truth: Path
    rendered: dict[str, tuple[int, float]]  # "database", "query": images rendered in this call, seconds
    bytes_db: int  # the n database JPEGs on disk
    bytes_queries: int

    @property
    def generated(self) -> int:
        return sum(count for count, _ in self.rendered.values())


def _check_root(root: Path, seed: int, fresh: bool) -> None:
    stamp = root / "catalogue.json"
    want = {"generator_version": GENERATOR_VERSION, "seed": seed}
    if fresh and root.exists():
        shutil.rmtree(root)
    if stamp.is_file() and json.loads(stamp.read_text()) != want:
        raise SystemExit(f"{root} holds another catalogue ({stamp.read_text().strip()}); use --fresh or another --scratch")
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(want, sort_keys=True) + "\n")


def make_catalogue(root: Path, n: int, seed: int = 0, workers: int | None = None, fresh: bool = False,
                   n_queries: int = QUERIES, log=print) -> Catalogue:
    """The catalogue of the first ``n`` images of seed ``seed`` under ``root``, rendering what is missing."""
    root = Path(root)
    _check_root(root, seed, fresh)
    workers = workers or len(os.sched_getaffinity(0))
    layout = plan(seed, n)
    pool, folder = root / "pool", root / f"n{n}"
    pool.mkdir(exist_ok=True)
    ids = [db_id(i) for i in range(n)]
    have = {e.name for e in os.scandir(pool)}
    db_tasks = [("db", seed, i, int(layout.family[i]), int(layout.shade[i]), int(layout.view[i]), n, str(pool / f"{ids[i]}.jpg"))
             for i in range(n) if f"{ids[i]}.jpg" not in have]
    # Queries: products drawn over the whole catalogue (each query's product has at least one image in it).
    pick = np.random.default_rng([seed, KIND_PICK, n])
    products = sorted({layout.product(i) for i in range(n)})
    chosen = [products[int(k)] for k in pick.integers(0, len(products), n_queries)]
    query_dir = folder / "queries"
    query_dir.mkdir(parents=True, exist_ok=True)
    query_ids = [f"v{q:06d}" for q in range(n_queries)]
    have_q = {e.name for e in os.scandir(query_dir)}
    query_tasks = [("query", seed, q, f, s, 0, n, str(query_dir / f"{query_ids[q]}.jpg"))
                   for q, (f, s) in enumerate(chosen) if f"{query_ids[q]}.jpg" not in have_q]
    rendered = {}
    for name, tasks in (("database", db_tasks), ("query", query_tasks)):
        started = time.perf_counter()
        if tasks:
            log(f"rendering {len(tasks):,} {name} images ({workers} processes) into {root}")
            _render_all(tasks, workers)
        rendered[name] = (len(tasks), time.perf_counter() - started)

    database = folder / "database"
    database.mkdir(exist_ok=True)
    linked = {e.name for e in os.scandir(database)}
    for image_id in ids:
        name = f"{image_id}.jpg"
        if name not in linked:
            try:
                os.link(pool / name, database / name)
            except OSError:  # another file system: a copy
                shutil.copyfile(pool / name, database / name)
    by_product: dict[tuple[int, int], list[str]] = {}
    for i in range(n):
        by_product.setdefault(layout.product(i), []).append(ids[i])
    gt = {query_ids[q]: sorted(by_product[p]) for q, p in enumerate(chosen)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "description"])
    rows = [(ids[i], describe(_spec(seed, int(layout.family[i])), int(layout.shade[i]),
                              np.random.default_rng([seed, KIND_DB, i, 1]))) for i in range(n)]
    writer.writerows(sorted(rows))
    _write(folder / "descriptions.csv", buffer.getvalue().encode("utf-8"))
    lines = ["Validation Image ID,Training Image ID"] + [",".join([q, *gt[q]]) for q in sorted(gt)]
    _write(folder / "ground_truth.csv", ("\n".join(lines) + "\n").encode("utf-8"))
    return Catalogue(n=n, database=database, descriptions=folder / "descriptions.csv", queries=query_dir,
                     ground_truth=folder / "ground_truth.csv", rendered=rendered,
                     bytes_db=sum(e.stat().st_size for e in os.scandir(database)),
                     bytes_queries=sum(e.stat().st_size for e in os.scandir(query_dir)))
