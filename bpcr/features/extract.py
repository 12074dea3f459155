"""`bpcr extract`: images of a manifest -> one feature store per pooling.

One forward pass of the backbone feeds every requested pooling; each pooling
gets its own store, ``OUT/<pooling>/`` (the same layout for one pooling or
several, so adding a pooling later never moves the others). Rows follow the
manifest's order; unreadable images go to ``failed.csv`` and are skipped.

How a descriptor is made (per image, never across a batch):

1. the image is decoded and resized ahead of the model (:mod:`bpcr.features.loader`),
   to ``size x size`` (``resize="square"``, the papers' 224 or 480) or
   with its longer side to ``size`` and the shorter side rounded to a
   multiple of the backbone's stride (``resize="aspect"``; images of equal
   resized shape are batched together, so no padding ever reaches a pooling);
2. the backbone's feature map goes through each pooling; a saliency mask is
   computed with the decoded image when a pooling needs one (SR-MAC always, VAMAC and
   GRMAAC with ``saliency=``);
3. with several views (``scales``, e.g. 1, 1/sqrt(2), 1/2, and ``flip``) each
   view's descriptor is L2-normalised, the views are summed and the sum is
   L2-normalised again (the multi-scale descriptor of the retrieval
   literature, e.g. Radenovic et al.'s cirtorch); one view is L2-normalised once;
4. optionally PCA-whitening (:mod:`bpcr.features.whitening`) learned on this store,
   or applied from a database store's ``pca.npz``, then L2 again.

Resuming and sharding. Rows are cut into chunks of ``batch_size *
chunk_batches`` rows, fixed by manifest position; a chunk's batches are
always the same images in the same order, because some backends' convolution
results depend on batch composition, and identical batches give identical
bytes. Finished chunks are files in a hidden ``.OUT.partial`` folder beside
``OUT``; a re-run with the same settings skips them, and the stores appear only
when every chunk is there, so an interrupted run (Ctrl-C, kill -9) never leaves
a store that looks complete. A damaged leftover never blocks a re-run: a
chunk file that is not exactly its rows' features is computed again, and an
unreadable ``plan.json`` starts the partial folder afresh, each with a warning
(:class:`bpcr.io.store.PartialStore`). ``shard=(i, n)`` (1-based) takes the i-th of n
contiguous runs of whole chunks; :func:`merge` (:mod:`bpcr.features.shards`) joins the
shards' stores into exactly the bytes a single run writes (``ids.txt``, ``features.npy``).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bpcr import __version__
from bpcr.features.backbones import Backbone, load_backbone
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file
from bpcr.device import cpu_threads, deterministic, resolve_device
from bpcr.features.loader import LAYOUT, MEMORY_FORMAT, RESIZE_MODES, batch_loader, batches_of_chunk, model_on, target_shape
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.features.pooling import MASK_OPTIONAL, MASK_REQUIRED, POOLINGS, check_params, l2n
from bpcr.progress import Advance, Progress, start
from bpcr.ranges import check_range
from bpcr.features.shards import check_outputs, finish_store, merge, now, shard_chunks
from bpcr.io.store import Chunk, PartialStore
from bpcr.features.whitening import read_whitening

__all__ = ["PoolingSpec", "extract", "merge", "MULTISCALE", "DTYPES", "SALIENCY"]

# merge and shard planning live in bpcr.features.shards; imported here so `from bpcr.features.extract import merge` keeps working.
_shard_chunks = shard_chunks

MULTISCALE = (1.0, 1.0 / math.sqrt(2.0), 0.5)
DTYPES = ("float16", "float32")
SALIENCY = ("spectral", "fine")



@dataclass(frozen=True)
class PoolingSpec:
    """A pooling as extracted: name, checked keyword parameters, saliency method or None."""

    name: str
    params: dict[str, Any]
    mask: str | None

    def meta(self) -> dict[str, Any]:
        return {"pooling": self.name, "pooling_params": _jsonable(self.params), "mask": self.mask}


def extract(
    manifest: str | Path,
    out: str | Path,
    backbone: str,
    poolings: Sequence[str],
    *,
    pooling_params: Mapping[str, Mapping[str, Any]] | None = None,
    weights: str | Path | None = None,
    layer: int | None = None,
    size: int = 224,
    resize: str = "square",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    saliency: str | None = None,
    dtype: str = "float16",
    batch_size: int = 32,
    chunk_batches: int = 16,
    workers: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    shard: tuple[int, int] | None = None,
    pca_whiten: bool = False,
    pca_from: str | Path | None = None,
    jpeg_draft: bool = False,
    restart: bool = False,
    progress: Progress | None = None,
    on_chunk: Callable[[int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Extract one store per pooling into ``out/<pooling>/``; returns pooling -> store folder.

    ``on_chunk(index)`` is called after each chunk file is safely written
    (progress reporting; an exception raised there interrupts the run exactly
    as Ctrl-C would). ``threads`` is torch's CPU thread count during the run
    (default: every core this process may use). ``restart`` discards an
    unfinished extraction made with other settings instead of refusing to mix
    the two. ``progress`` is told of every image done (:mod:`bpcr.progress`).
    ``on_warning(message)`` hears of damaged leftovers of an interrupted run
    that are computed again (default: :func:`warnings.warn`). ``jpeg_draft``
    decodes big JPEGs at a reduced scale (:func:`bpcr.features.loader.decode_resized`):
    faster, slightly different pixels; recorded in meta.json, and a store made
    with it is only compared with stores made with it.
    """
    out = Path(out)
    _check_options(size, resize, dtype, batch_size, chunk_batches, scales, saliency, shard, pca_whiten, pca_from,
                   workers=workers, threads=threads, poolings=poolings)
    specs = _pooling_specs(poolings, pooling_params or {}, saliency)
    out = check_outputs(out, [s.name for s in specs], pca_whiten or bool(pca_from), partial=True)
    man = read_manifest(manifest)
    dev = resolve_device(device)
    net = load_backbone(backbone, weights, layer)
    rows_total = len(man)
    chunk_rows = batch_size * chunk_batches
    first, last = shard_chunks(rows_total, chunk_rows, shard)
    shapes = [target_shape(w, h, size, resize, net.stride) for w, h in zip(man.widths, man.heights)]
    precision = "float16" if dev.type == "cuda" else "float32"
    config = {
        **net.meta(), "input_size": size, "resize": resize, "interpolation": "bicubic",
        "scales": [float(s) for s in scales], "flip": bool(flip), "normalisation": "l2",
        "manifest": {"file": man.path.name, "sha256": sha256_file(man.path), "rows": rows_total},
        "batch_size": batch_size, "chunk_rows": chunk_rows,
        # Only when on, so stores made before the option, or without it, stay comparable with each other.
        **({"jpeg_draft": True} if jpeg_draft else {}),
    }
    plan = {"config": config, "poolings": [s.meta() for s in specs], "shard": list(shard) if shard else None,
            "chunks": [first, last], "device": dev.type, "precision": precision, "layout": LAYOUT}
    partial = PartialStore(out.with_name(f".{out.name}.partial"), on_warning=on_warning)
    partial.start(plan, restart=restart)
    chunks = range(first, last)
    # A chunk file is trusted only when it holds exactly this chunk's rows; any other is done again.
    finished = partial.usable_chunks({c: man.ids[c * chunk_rows:(c + 1) * chunk_rows] for c in chunks},
                                     [s.name for s in specs], net.dim)
    todo = [c for c in chunks if c not in finished]
    if todo:
        shard_rows = _rows_in(chunks, chunk_rows, rows_total)
        try:
            with cpu_threads(dev, threads), start(progress, "extract", shard_rows,
                                                  shard_rows - _rows_in(todo, chunk_rows, rows_total)) as advance:
                _run_chunks(man, shapes, net, specs, todo, chunk_rows, batch_size, scales, flip, dev, precision,
                            partial, workers, advance, on_chunk, jpeg_draft)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"finished chunks are kept in {partial.path}; "
                                    "run the same command again to resume") from None
    rows = [min(first * chunk_rows, rows_total), min(last * chunk_rows, rows_total)]
    meta = {**config, "compute": {"device": dev.type, "precision": precision, "layout": LAYOUT,
                                  "torch": torch.__version__},
            "bpcr_version": __version__,
            "shard": None if shard is None else {"index": shard[0], "count": shard[1], "rows": rows}}
    ids: list[str] = []
    failed: dict[str, str] = {}
    for c in chunks:
        head = partial.read_chunk(c, [])
        ids += head.ids
        failed.update(head.failed)
    stores: dict[str, Path] = {}
    for spec in specs:
        blocks = (partial.read_chunk(c, [spec.name]).features[spec.name] for c in chunks)
        stores[spec.name] = out / spec.name
        finish_store(stores[spec.name], ids, blocks, net.dim, dtype, {**meta, **spec.meta(), "created": now()},
                      failed, pca_whiten, pca_from, spec.name)
    partial.remove()
    return stores


# --------------------------------------------------------------------------
# the forward loop
# --------------------------------------------------------------------------

def _run_chunks(man: Manifest, shapes: list[tuple[int, int]], net: Backbone, specs: list[PoolingSpec],
                todo: list[int], chunk_rows: int, batch_size: int, scales: Sequence[float], flip: bool,
                dev: torch.device, precision: str, partial: PartialStore, workers: int | None, advance: Advance,
                on_chunk: Callable[[int], None] | None, jpeg_draft: bool = False) -> None:
    batches: list[list[int]] = []
    owner: list[int] = []
    for c in todo:
        for batch in batches_of_chunk(c, chunk_rows, batch_size, len(man), shapes):
            batches.append(batch)
            owner.append(c)
    left = Counter(owner)
    mask_method = next((s.mask for s in specs if s.mask), None)
    loader = batch_loader(man.paths, shapes, batches, mask_method, workers, dev, jpeg_draft=jpeg_draft)
    net = model_on(net, dev)
    done: dict[int, list[tuple[list[int], dict[str, np.ndarray]]]] = {c: [] for c in todo}
    fails: dict[int, dict[int, str]] = {c: {} for c in todo}
    with deterministic(dev):
        for number, batch in enumerate(loader):
            c = owner[number]
            fails[c].update(batch.failed)
            if batch.images is not None:
                x = batch.images.to(dev, non_blocking=True)
                maps = torch.from_numpy(batch.maps).to(dev) if batch.maps is not None else None
                done[c].append((batch.rows, _describe(net, x, maps, specs, scales, flip, dev, precision)))
            advance(len(batch.rows) + len(batch.failed))
            left[c] -= 1
            if left[c] == 0:
                partial.write_chunk(_gather(c, done.pop(c), fails.pop(c), man, specs, net.dim))
                if on_chunk is not None:
                    on_chunk(c)


def _describe(net: Backbone, images: torch.Tensor, maps: torch.Tensor | None, specs: list[PoolingSpec],
              scales: Sequence[float], flip: bool, dev: torch.device, precision: str) -> dict[str, np.ndarray]:
    """uint8 (B, 3, H, W) [+ saliency (B, H, W)] -> pooling -> (B, D) float32, L2-normalised."""
    x = net.normalise(images)
    h, w = x.shape[-2:]
    sums: dict[str, torch.Tensor] = {}
    views = 0
    for scale in scales:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        xs = x if scale == 1.0 else F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        for flipped in ((False, True) if flip else (False,)):
            xv = xs.flip(-1) if flipped else xs
            xv = xv.contiguous(memory_format=MEMORY_FORMAT)  # a view already, unless scaled or flipped
            with torch.autocast(dev.type, dtype=torch.float16, enabled=precision == "float16"):
                fmap = net(xv)
            fmap = fmap.float()
            views += 1
            for spec in specs:
                kwargs = dict(spec.params)
                if spec.mask is not None:
                    from bpcr.features.saliency import mask_for_features

                    mask = mask_for_features(maps, size=tuple(fmap.shape[-2:])).to(dev)
                    kwargs["mask"] = mask.flip(-1) if flipped else mask
                d = l2n(POOLINGS[spec.name](fmap, **kwargs).float())
                sums[spec.name] = d if spec.name not in sums else sums[spec.name] + d
    return {name: (l2n(v) if views > 1 else v).cpu().numpy() for name, v in sums.items()}


def _gather(c: int, parts: list[tuple[list[int], dict[str, np.ndarray]]], failed_rows: dict[int, str],
            man: Manifest, specs: list[PoolingSpec], dim: int) -> Chunk:
    rows = [r for rs, _ in parts for r in rs]
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    features = {}
    for spec in specs:
        stacked = np.concatenate([f[spec.name] for _, f in parts]) if parts else np.zeros((0, dim), np.float32)
        if stacked.shape[1] != dim:
            raise ValueError(f"pooling {spec.name} gave {stacked.shape[1]} values, the backbone has {dim} channels")
        features[spec.name] = stacked[order]
    return Chunk(c, [man.ids[rows[i]] for i in order], features, {man.ids[r]: why for r, why in failed_rows.items()})


# --------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------

def _rows_in(chunks: Sequence[int] | range, chunk_rows: int, rows: int) -> int:
    return sum(max(0, min((c + 1) * chunk_rows, rows) - c * chunk_rows) for c in chunks)


def _pooling_specs(names: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                   saliency: str | None) -> list[PoolingSpec]:
    if not names:
        raise BadInput(None, None, f"give at least one pooling; choose from {', '.join(sorted(POOLINGS))}")
    if len(set(names)) != len(names):
        raise BadInput(None, None, "a pooling is listed twice")
    for key in params:
        if key not in names:
            raise BadInput(None, None, f"parameters given for pooling {key!r}, which is not extracted")
    specs = []
    for name in names:
        kwargs = check_params(name, params.get(name))
        mask = (saliency or "spectral") if name in MASK_REQUIRED else (saliency if name in MASK_OPTIONAL else None)
        specs.append(PoolingSpec(name, kwargs, mask))
    methods = {s.mask for s in specs if s.mask}
    if len(methods) > 1:
        raise BadInput(None, None, "poolings need different saliency methods in one run")
    return specs


def _check_options(size: int, resize: str, dtype: str, batch_size: int, chunk_batches: int, scales: Sequence[float],
                   saliency: str | None, shard: tuple[int, int] | None, pca_whiten: bool,
                   pca_from: str | Path | None, workers: int | None = None, threads: int | None = None,
                   poolings: Sequence[str] = ()) -> None:
    if not 16 <= size <= 4096:
        raise BadInput(None, None, f"--size must be between 16 and 4096, got {size}")
    if resize not in RESIZE_MODES:
        raise BadInput(None, None, f"unknown resize mode {resize!r}; choose from {', '.join(RESIZE_MODES)}")
    if dtype not in DTYPES:
        raise BadInput(None, None, f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if batch_size < 1 or chunk_batches < 1:
        raise BadInput(None, None, "--batch-size and the chunk size must be at least 1")
    if not scales or any(not 0 < s <= 4 for s in scales) or len(set(scales)) != len(scales):
        raise BadInput(None, None, f"scales must be distinct numbers in (0, 4], got {list(scales)}")
    if saliency is not None and saliency not in SALIENCY:
        raise BadInput(None, None, f"unknown saliency method {saliency!r}; choose from {', '.join(SALIENCY)}")
    if shard is not None and not (1 <= shard[0] <= shard[1]):
        raise BadInput(None, None, f"--shard I/N needs 1 <= I <= N, got {shard[0]}/{shard[1]}")
    if shard is not None and (pca_whiten or pca_from):
        raise BadInput(None, None, "PCA-whitening applies to the whole store: pass --pca-whiten/--pca-from to --merge")
    if pca_whiten and pca_from:
        raise BadInput(None, None, "--pca-whiten learns a whitening, --pca-from applies one: choose one")
    check_range("--workers", workers, 0, integer=True, optional=True)
    check_range("--threads", threads, 1, integer=True, optional=True)
    if pca_from:
        # Read now, as _finish_store will (its <pooling>/ when present), not after the whole extraction.
        source = Path(pca_from)
        for pooling in poolings or [""]:
            read_whitening(source / pooling if pooling and (source / pooling).is_dir() else source)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
