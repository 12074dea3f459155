"""Generating the demo dataset: which images exist (the plan), rendering them in parallel, writing the files.

Image ``i`` of kind ``k`` draws from ``numpy.random.default_rng([seed, k, i])``, so the worker count and
scheduling never change a byte.
"""
from __future__ import annotations

import csv
import io
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bpcr.errors import BadInput
from bpcr.io.fileio import atomic_path, write_text_atomic
from bpcr.dataset.gt import write_ground_truth
from bpcr.demo.catalogue import (STREAM_DISTRACTOR, STREAM_HANDHELD, STREAM_MESSY, STREAM_PLAN, STREAM_QUERY, STREAM_SHOP, STREAM_TEXT, DISTRACTOR_IMAGES_PER_PRODUCT,
                        EMPTY_DESCRIPTION_SHARE, EXIF_ROTATED_SHARE, HARD_NEGATIVE_SHARE, LANGS,
                        MISSING_DESCRIPTION_SHARE, NON_ENGLISH_SHARE, QUERY_JPEG_QUALITY, SHOP_IMAGES_PER_PRODUCT,
                        TARGETS_PER_FAMILY, describe_listing, pick, product_spec, seeded_rng, weighted_pick)
from bpcr.demo.messy import MESSY_KINDS, messy_bytes
from bpcr.demo.photo import encode_jpeg, query_image, shop_image


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote."""

    out: Path
    database_dir: Path
    queries_dir: Path
    descriptions_csv: Path
    ground_truth_csv: Path
    seed: int
    n_products: int  # target products (each with shop images; at most one query each)
    n_database: int  # database files, messy ones included
    n_target_images: int  # database images relevant to some query
    n_distractor_images: int  # the rest, messy ones included
    n_hard_negative_images: int  # distractor images of a target's family sibling
    n_queries: int
    exif_rotated_queries: tuple[str, ...]
    messy: dict[str, str] = field(default_factory=dict)  # database ID -> MESSY_KINDS name
    unusable: tuple[str, ...] = ()  # messy IDs that a careful reader must reject
    missing_descriptions: tuple[str, ...] = ()
    bytes_on_disk: int = 0
    seconds: float = 0.0


@dataclass
class _Image:
    role: str  # "shop", "distractor", "messy"
    product: tuple[int, int]  # (family, member)
    messy: str | None = None
    sibling: bool = False


def _plan(seed: int, n_products: int, n_distractors: int, n_queries: int) -> tuple[list, list]:
    """Which products exist and which images show them; no pixels yet."""
    if seed < 0 or n_products < 0 or n_distractors < 0 or n_queries < 0:
        raise BadInput(None, None, "demo seed and sizes must be non-negative")
    rng = seeded_rng(seed, STREAM_PLAN)
    images: list[_Image] = []
    targets: list[tuple[int, int]] = []
    target_families: list[int] = []
    family = 0
    while len(targets) < n_products:
        k = min(weighted_pick(rng, TARGETS_PER_FAMILY), n_products - len(targets))
        targets.extend((family, m) for m in range(k))
        target_families.append(family)
        family += 1
    for product in targets:
        images.extend(_Image("shop", product) for _ in range(weighted_pick(rng, SHOP_IMAGES_PER_PRODUCT)))
    messy = list(MESSY_KINDS)[: max(0, min(len(MESSY_KINDS), n_distractors // 2))]
    regular = n_distractors - len(messy)
    n_hard = int(round(regular * HARD_NEGATIVE_SHARE)) if target_families else 0
    members = {f: sum(1 for t in targets if t[0] == f) for f in target_families}
    order = [target_families[i] for i in rng.permutation(len(target_families))] if target_families else []
    hard = siblings = 0
    while hard < n_hard:
        f = order[siblings] if siblings < len(order) else pick(rng, order)  # every target family first
        siblings += 1
        product = (f, members[f])
        members[f] += 1
        for _ in range(min(int(rng.integers(DISTRACTOR_IMAGES_PER_PRODUCT[0], DISTRACTOR_IMAGES_PER_PRODUCT[1] + 1)),
                           n_hard - hard)):
            images.append(_Image("distractor", product, sibling=True))
            hard += 1
    placed = 0
    while placed < regular - n_hard:
        size = int(rng.integers(1, 4))
        for m in range(size):
            for _ in range(int(rng.integers(DISTRACTOR_IMAGES_PER_PRODUCT[0], DISTRACTOR_IMAGES_PER_PRODUCT[1] + 1))):
                if placed < regular - n_hard:
                    images.append(_Image("distractor", (family, m)))
                    placed += 1
        family += 1
    for kind in messy:
        images.append(_Image("messy", (family, 0), messy=kind))
        family += 1
    if n_queries > 0 and not targets:
        raise BadInput(None, None, "the demo needs at least one product to have queries")
    picks = [targets[i] for i in rng.permutation(len(targets))[: min(n_queries, len(targets))]]
    while len(picks) < n_queries:
        picks.append(pick(rng, targets))
    return images, picks


def _identities(seed: int, n_images: int, n_queries: int) -> tuple[list[str], list[str], dict[int, int]]:
    """Database IDs, query IDs and the EXIF-rotated queries (index -> orientation); no pixels."""
    rng = seeded_rng(seed, STREAM_PLAN, 1)
    db_numbers = rng.choice(10_000_000, size=n_images, replace=False)
    db_order = rng.permutation(n_images)  # IDs in a shuffled order, so ID ranges reveal nothing
    db_ids = [f"n{int(db_numbers[db_order[i]]):07d}" for i in range(n_images)]
    query_ids = [f"v{int(n):06d}" for n in rng.choice(1_000_000, size=n_queries, replace=False)]
    n_rotated = min(n_queries, max(1, int(round(n_queries * EXIF_ROTATED_SHARE)))) if n_queries else 0
    rotated = {int(i): int(pick(rng, (6, 6, 8, 8, 3))) for i in rng.permutation(n_queries)[:n_rotated]}
    return db_ids, query_ids, rotated


def _relevant(images: list, picks: list, db_ids: list[str], query_ids: list[str]) -> dict[str, list[str]]:
    """Each query's relevant database IDs: every shop image of the product it shows."""
    shop: dict[tuple[int, int], list[str]] = {}
    for i, im in enumerate(images):
        if im.role == "shop":
            shop.setdefault(im.product, []).append(db_ids[i])
    return {query_ids[i]: sorted(shop[p]) for i, p in enumerate(picks)}


def demo_ground_truth(seed: int = 0, n_products: int = 200, n_distractors: int = 2500,
                      n_queries: int = 200) -> dict[str, list[str]]:
    """The ground truth :func:`generate_demo` writes for these arguments, without rendering an image.

    ``ground_truth/demo.csv`` is this for the defaults; a test holds the two byte-identical.
    """
    images, picks = _plan(seed, n_products, n_distractors, n_queries)
    db_ids, query_ids, _ = _identities(seed, len(images), n_queries)
    return _relevant(images, picks, db_ids, query_ids)


def _render(task: tuple) -> int:
    """Render and write one file; returns its size in bytes. Depends only on the task tuple."""
    kind, seed, index, path, spec, extra = task
    if kind == "shop" or kind == "distractor":
        rng = seeded_rng(seed, STREAM_SHOP if kind == "shop" else STREAM_DISTRACTOR, index)
        data = encode_jpeg(shop_image(spec, rng), int(rng.integers(82, 96)))
    elif kind == "query":
        rng = seeded_rng(seed, STREAM_QUERY, index)
        pixels = query_image(spec, seed, rng, seeded_rng(seed, STREAM_HANDHELD, index))
        data = encode_jpeg(pixels, int(rng.integers(QUERY_JPEG_QUALITY[0], QUERY_JPEG_QUALITY[1] + 1)), extra)
    else:
        data = messy_bytes(extra, spec, seeded_rng(seed, STREAM_MESSY, index))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism; nested threads only contend


def generate_demo(out: Path, seed: int = 0, n_products: int = 200, n_distractors: int = 2500,
                  n_queries: int = 200, workers: int | None = None) -> DemoSummary:
    """Write the demo dataset under ``out`` (database/, queries/, descriptions.csv, ground_truth.csv).

    Files depend only on the arguments other than ``workers``: the same seed gives byte-identical files.
    ``out`` may be new, empty, or hold an earlier generation with the same seed and sizes (rewritten in place);
    anything else in ``out/database`` or ``out/queries`` is refused rather than mixed in.
    """
    started = time.perf_counter()
    out = Path(out)
    images, picks = _plan(seed, n_products, n_distractors, n_queries)
    db_ids, query_ids, rotated = _identities(seed, len(images), n_queries)
    database_dir, queries_dir = out / "database", out / "queries"
    _check_folders(database_dir, queries_dir, images, db_ids, query_ids)
    specs = _Specs(seed)
    tasks = [(im.role, seed, i, str(database_dir / f"{db_ids[i]}{_extension(im)}"), specs[im.product], im.messy)
             for i, im in enumerate(images)]
    tasks += [("query", seed, i, str(queries_dir / f"{query_ids[i]}.jpg"), specs[product], rotated.get(i))
              for i, product in enumerate(picks)]
    sizes = _render_all(tasks, workers)
    missing = _write_descriptions(out / "descriptions.csv", seed, images, db_ids, specs)
    gt = _relevant(images, picks, db_ids, query_ids)
    if gt:
        with atomic_path(out / "ground_truth.csv") as tmp:
            write_ground_truth(tmp, gt)

    messy_ids = {db_ids[i]: im.messy for i, im in enumerate(images) if im.messy}
    n_db = len(images)
    on_disk = sum(sizes) + sum(p.stat().st_size for p in (out / "descriptions.csv", out / "ground_truth.csv")
                               if p.exists())
    return DemoSummary(
        out=out, database_dir=database_dir, queries_dir=queries_dir, descriptions_csv=out / "descriptions.csv",
        ground_truth_csv=out / "ground_truth.csv", seed=seed, n_products=n_products, n_database=n_db,
        n_target_images=sum(im.role == "shop" for im in images),
        n_distractor_images=sum(im.role != "shop" for im in images),
        n_hard_negative_images=sum(im.sibling for im in images), n_queries=n_queries,
        exif_rotated_queries=tuple(sorted(query_ids[i] for i in rotated)),
        messy=dict(sorted(messy_ids.items())),
        unusable=tuple(sorted(i for i, k in messy_ids.items() if not MESSY_KINDS[k][1])),
        missing_descriptions=tuple(sorted(db_ids[i] for i in missing)),
        bytes_on_disk=on_disk, seconds=time.perf_counter() - started,
    )


def _extension(im: "_Image") -> str:
    return MESSY_KINDS[im.messy][0] if im.messy else ".jpg"


def _check_folders(database_dir: Path, queries_dir: Path, images: list, db_ids: list[str],
                   query_ids: list[str]) -> None:
    """Create the two image folders; refuse one holding files of another dataset rather than mix them."""
    names = {f"{db_ids[i]}{_extension(im)}" for i, im in enumerate(images)}
    query_names = {f"{q}.jpg" for q in query_ids}
    for folder, expected in ((database_dir, names), (queries_dir, query_names)):
        if folder.is_dir():
            stale = sorted(p.name for p in folder.iterdir() if p.name not in expected and not p.name.startswith("."))
            if stale:
                raise BadInput(folder / stale[0], None, "folder holds files of another dataset; "
                                                        "generate the demo into an empty folder")
        folder.mkdir(parents=True, exist_ok=True)


class _Specs(dict):
    """(family, member) -> its product spec, drawn once per generation."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def __missing__(self, key: tuple[int, int]) -> dict:
        self[key] = product_spec(self.seed, *key)
        return self[key]


def _render_all(tasks: list[tuple], workers: int | None) -> list[int]:
    """Render every image task (in worker processes when there are several); each file's size in bytes."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(workers or available, 32))
    if workers == 1 or len(tasks) < 8:
        return [_render(t) for t in tasks]
    # spawn, not fork: the caller may already hold threads (torch, BLAS) that fork would copy mid-lock
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        return list(pool.imap(_render, tasks, chunksize=8))


def _write_descriptions(path: Path, seed: int, images: list, db_ids: list[str], specs: "_Specs") -> set[int]:
    """descriptions.csv: one row per database image except a few, sorted by ID; returns the rows left out."""
    text_rng = seeded_rng(seed, STREAM_TEXT)
    n_db = len(images)
    n_lang = max(1, int(round(n_db * NON_ENGLISH_SHARE))) if n_db >= 10 else 0
    n_missing = max(1, int(round(n_db * MISSING_DESCRIPTION_SHARE))) if n_db >= 10 else 0
    n_empty = int(round(n_db * EMPTY_DESCRIPTION_SHARE))
    # messy files keep their descriptions so that a reader can tell "unreadable" from "unlisted"
    chosen = [int(i) for i in text_rng.permutation(n_db) if images[int(i)].messy is None]
    foreign = {i: LANGS[1 + rank % (len(LANGS) - 1)] for rank, i in enumerate(chosen[:n_lang])}
    missing = {int(i) for i in chosen[n_lang:n_lang + n_missing]}
    empty = {int(i) for i in chosen[n_lang + n_missing:n_lang + n_missing + n_empty]}
    comma = chosen[-1] if chosen else -1
    rows = []
    for i, im in enumerate(images):
        if i in missing:
            continue
        r = seeded_rng(seed, STREAM_TEXT, i)
        lang = foreign.get(i, "en")
        rows.append((db_ids[i], "" if i in empty else describe_listing(specs[im.product], r, lang, i == comma)))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "description"])
    writer.writerows(sorted(rows))
    write_text_atomic(path, buffer.getvalue())
    return missing
