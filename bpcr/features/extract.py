"""`bpcr extract`: images of a manifest -> one feature store per pooling.

One forward pass of the backbone feeds every requested pooling; each pooling
gets its own store, ``OUT/<pooling>/`` (the same layout for one pooling or
several, so adding a pooling later never moves the others). Rows follow the
manifest's order; unreadable images go to ``failed.csv`` and are skipped.
The options named below are the fields of :class:`bpcr.features.options.ExtractOptions`.

How a descriptor is made (per image, never across a batch):

1. the image is decoded (from ``prepare``'s pre-sized cache when the manifest has one,
   :mod:`bpcr.dataset.presize`, recorded as ``presize`` in ``meta.json``) and resized ahead of the model
   (:mod:`bpcr.features.loader`),
   to ``size x size`` (``resize="square"``, the papers' 224 or 480), centred on a
   square of ``pad_colour`` first (``resize="pad"``, the 2019 winner's letterbox), or
   with its longer side to ``size`` and the shorter side rounded to a
   multiple of the backbone's stride (``resize="aspect"``; images of equal
   resized shape are batched together, so no padding ever reaches a pooling);
   with ``crop="salient"`` it is cut to its salient object before
   (:mod:`bpcr.features.preprocess`), and each store records the boxes in
   ``crops.csv`` (:data:`bpcr.io.store.CROPS_FILE`) and their counts in
   ``meta.json``'s ``crop_counts``;
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
(:class:`bpcr.io.partial_store.PartialStore`). ``shard=(i, n)`` (1-based) takes the i-th of n
contiguous runs of whole chunks; :func:`merge` (:mod:`bpcr.features.shards`) joins the
shards' stores into exactly the bytes a single run writes (``ids.txt``, ``features.npy``).
"""
from __future__ import annotations

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
from bpcr.features.loader import LAYOUT, MEMORY_FORMAT, batch_loader, batches_of_chunk, model_on, target_shape
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.dataset.presize import PresizedManifest, presized
from bpcr.features.options import DTYPES, MULTISCALE, SALIENCY, ExtractOptions, check_extract_options
from bpcr.features.preprocess import CROP_PARAMS, Preprocess
from bpcr.features.pooling import check_params, l2n, mask_use, plugin_provenance, pooling_function, pooling_names
from bpcr.progress import Advance, Progress, start
from bpcr.features.shards import check_outputs, finish_store, merge, now, shard_chunks
from bpcr.io.partial_store import Chunk, PartialStore
from bpcr.io.store import CROPS_FILE, crop_counts, crops_csv
from bpcr.features.whitening import read_whitening

__all__ = ["ExtractOptions", "PoolingSpec", "extract", "merge", "MULTISCALE", "DTYPES", "SALIENCY"]

# merge and shard planning live in bpcr.features.shards; imported here so `from bpcr.features.extract import merge` keeps working.
_shard_chunks = shard_chunks


@dataclass(frozen=True)
class PoolingSpec:
    """A pooling as extracted: name, checked keyword parameters, saliency method or None."""

    name: str
    params: dict[str, Any]
    mask: str | None

    def meta(self) -> dict[str, Any]:
        meta = {"pooling": self.name, "pooling_params": _jsonable(self.params), "mask": self.mask}
        plugin = plugin_provenance(self.name)  # a plugin pooling (bpcr.plugins): which distribution, which version
        return meta if plugin is None else {**meta, "plugin": plugin}


@dataclass(frozen=True)
class _Plan:
    """One extraction as planned: the manifest, the network, the chunks of this shard and the settings recorded."""

    man: Manifest
    net: Backbone
    dev: torch.device
    specs: list[PoolingSpec]
    chunk_rows: int
    first: int
    last: int
    shapes: list[tuple[int, int]]
    precision: str
    config: dict[str, Any]  # the settings meta.json and plan.json record
    cache: PresizedManifest | None = None  # the manifest's pre-sized images (bpcr.dataset.presize), when it has them

    @property
    def chunks(self) -> range:
        return range(self.first, self.last)


def extract(
    manifest: str | Path,
    out: str | Path,
    options: ExtractOptions = ExtractOptions(),
    *,
    restart: bool = False,
    progress: Progress | None = None,
    on_chunk: Callable[[int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Extract one store per pooling of ``options.poolings`` from the images of ``manifest`` into
    ``out/<pooling>/``; returns pooling -> store folder.

    The options (backbone, poolings, size, scales, whitening, shard, ...) are declared, with their defaults,
    ranges and papers, in :class:`bpcr.features.options.ExtractOptions`; out-of-range ones are refused before
    any work. ``restart`` discards an unfinished extraction made with other settings instead of refusing to
    mix the two. ``progress`` is told of every image done (:mod:`bpcr.progress`). ``on_chunk(index)`` is
    called after each chunk file is safely written (an exception raised there interrupts the run exactly as
    Ctrl-C would). ``on_warning(message)`` hears of damaged leftovers of an interrupted run that are computed
    again (default: :func:`warnings.warn`).
    """
    specs, out = _checked(options, Path(out))
    plan = _plan(manifest, options, specs)
    partial = PartialStore(out.with_name(f".{out.name}.partial"), on_warning=on_warning)
    partial.start(_partial_plan(plan, options), restart=restart)
    _compute(plan, options, partial, progress, on_chunk)
    stores = _finish(plan, options, partial, out)
    partial.remove()
    return stores


def _checked(options: ExtractOptions, out: Path) -> tuple[list[PoolingSpec], Path]:
    """Refuse bad options, poolings, a damaged ``pca_from`` whitening or an unusable ``out``, before any work."""
    check_extract_options(options)
    if options.pca_from:
        _read_pca_from(Path(options.pca_from), options.poolings)
    specs = _pooling_specs(options.poolings, options.pooling_params or {}, options.saliency)
    return specs, check_outputs(out, [s.name for s in specs], options.pca_whiten or bool(options.pca_from),
                                partial=True)


def _plan(manifest: str | Path, options: ExtractOptions, specs: list[PoolingSpec]) -> _Plan:
    """Read the manifest, load the network, choose this shard's chunks and the settings the stores record."""
    man = read_manifest(manifest)
    if len(man) == 0:
        raise BadInput(man.path, None, "lists no image: nothing to extract")
    digest = sha256_file(man.path)
    cache = presized(man, digest)  # a damaged cache is refused here, before the network loads
    dev = resolve_device(options.device)
    net = load_backbone(options.backbone, options.weights, options.layer)
    chunk_rows = options.batch_size * options.chunk_batches
    first, last = shard_chunks(len(man), chunk_rows, options.shard)
    shapes = [target_shape(w, h, options.size, options.resize, net.stride) for w, h in zip(man.widths, man.heights)]
    config = {
        **net.meta(), "input_size": options.size, "resize": options.resize, "interpolation": "bicubic",
        "scales": [float(s) for s in options.scales], "flip": bool(options.flip), "normalisation": "l2",
        "manifest": {"file": man.path.name, "sha256": digest, "rows": len(man)},
        "batch_size": options.batch_size, "chunk_rows": chunk_rows,
        # Only when on, so stores made before the option, or without it, stay comparable with each other
        # (and an unfinished extraction made before it still resumes).
        **({"jpeg_draft": True} if options.jpeg_draft else {}),
        **({"pad_colour": list(options.pad_colour)} if options.resize == "pad" else {}),
        **({"crop": options.crop, "crop_params": CROP_PARAMS} if options.crop != "none" else {}),
        # Read from prepare's pre-sized cache: what it is, so that such a store is never mixed with one read from
        # the originals (bpcr.io.store.EXTRACTION_FIELDS); absent without a cache, as before it existed.
        **({"presize": cache.spec} if cache is not None else {}),
    }
    precision = "float16" if dev.type == "cuda" else "float32"
    return _Plan(man, net, dev, specs, chunk_rows, first, last, shapes, precision, config, cache)


def _partial_plan(plan: _Plan, options: ExtractOptions) -> dict[str, Any]:
    """What the partial folder's plan.json records: a re-run resumes only an extraction of the same plan."""
    return {"config": plan.config, "poolings": [s.meta() for s in plan.specs],
            "shard": list(options.shard) if options.shard else None, "chunks": [plan.first, plan.last],
            "device": plan.dev.type, "precision": plan.precision, "layout": LAYOUT}


def preprocess_of(options: ExtractOptions) -> Preprocess:
    """What ``options`` do to an image between decoding and resizing."""
    return Preprocess(options.resize, tuple(options.pad_colour), options.crop)


def _compute(plan: _Plan, options: ExtractOptions, partial: PartialStore, progress: Progress | None,
             on_chunk: Callable[[int], None] | None) -> None:
    """Compute every chunk of this shard that the partial folder does not hold yet."""
    man, chunk_rows, rows_total = plan.man, plan.chunk_rows, len(plan.man)
    # A chunk file is trusted only when it holds exactly this chunk's rows; any other is done again.
    finished = partial.usable_chunks({c: man.ids[c * chunk_rows:(c + 1) * chunk_rows] for c in plan.chunks},
                                     [s.name for s in plan.specs], plan.net.dim, crops=options.crop != "none")
    todo = [c for c in plan.chunks if c not in finished]
    if not todo:
        return
    shard_rows = _rows_in(plan.chunks, chunk_rows, rows_total)
    try:
        with cpu_threads(plan.dev, options.threads), start(progress, "extract", shard_rows,
                                                           shard_rows - _rows_in(todo, chunk_rows, rows_total)) as advance:
            _run_chunks(plan, options, todo, partial, advance, on_chunk)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"finished chunks are kept in {partial.path}; "
                                "run the same command again to resume") from None


def _finish(plan: _Plan, options: ExtractOptions, partial: PartialStore, out: Path) -> dict[str, Path]:
    """Write one store per pooling from the chunk files (whitened as asked); returns pooling -> store folder."""
    rows_total, shard = len(plan.man), options.shard
    rows = [min(plan.first * plan.chunk_rows, rows_total), min(plan.last * plan.chunk_rows, rows_total)]
    meta = {"crop": "none", **plan.config,
            "compute": {"device": plan.dev.type, "precision": plan.precision, "layout": LAYOUT,
                        "torch": torch.__version__},
            "bpcr_version": __version__,
            "shard": None if shard is None else {"index": shard[0], "count": shard[1], "rows": rows}}
    ids: list[str] = []
    failed: dict[str, str] = {}
    boxes: list[np.ndarray] = []
    for c in plan.chunks:
        head = partial.read_chunk(c, [])
        ids += head.ids
        failed.update(head.failed)
        if head.crops is not None:
            boxes.append(head.crops)
    extra: dict[str, bytes] = {}
    if options.crop != "none":
        crops = np.concatenate(boxes) if boxes else np.zeros((0, 5), np.int64)
        meta["crop_counts"] = crop_counts(crops)
        extra[CROPS_FILE] = crops_csv(ids, crops)
    stores: dict[str, Path] = {}
    for spec in plan.specs:
        blocks = (partial.read_chunk(c, [spec.name]).features[spec.name] for c in plan.chunks)
        stores[spec.name] = out / spec.name
        finish_store(stores[spec.name], ids, blocks, plan.net.dim, options.dtype,
                     {**meta, **spec.meta(), "created": now()}, failed, options.pca_whiten, options.pca_from,
                     spec.name, extra)
    return stores


# --------------------------------------------------------------------------
# the forward loop
# --------------------------------------------------------------------------

def _run_chunks(plan: _Plan, options: ExtractOptions, todo: list[int], partial: PartialStore, advance: Advance,
                on_chunk: Callable[[int], None] | None) -> None:
    man, specs, dev, precision = plan.man, plan.specs, plan.dev, plan.precision
    scales, flip = options.scales, options.flip
    batches: list[list[int]] = []
    owner: list[int] = []
    for c in todo:
        for batch in batches_of_chunk(c, plan.chunk_rows, options.batch_size, len(man), plan.shapes):
            batches.append(batch)
            owner.append(c)
    left = Counter(owner)
    mask_method = next((s.mask for s in specs if s.mask), None)
    loader = batch_loader(man.paths, plan.shapes, batches, mask_method, options.workers, dev,
                          jpeg_draft=options.jpeg_draft, preprocess=preprocess_of(options),
                          cached=plan.cache.images if plan.cache is not None else None)
    net = model_on(plan.net, dev)
    done: dict[int, list[tuple[list[int], dict[str, np.ndarray], np.ndarray | None]]] = {c: [] for c in todo}
    fails: dict[int, dict[int, str]] = {c: {} for c in todo}
    with deterministic(dev):
        for number, batch in enumerate(loader):
            if batch.error is not None:  # a damaged pre-sized cache entry
                raise batch.error
            c = owner[number]
            fails[c].update(batch.failed)
            if batch.images is not None:
                x = batch.images.to(dev, non_blocking=True)
                maps = torch.from_numpy(batch.maps).to(dev) if batch.maps is not None else None
                done[c].append((batch.rows, describe_batch(net, x, maps, specs, scales, flip, dev, precision),
                                batch.crops))
            advance(len(batch.rows) + len(batch.failed))
            left[c] -= 1
            if left[c] == 0:
                partial.write_chunk(_gather(c, done.pop(c), fails.pop(c), man, specs, net.dim,
                                            cropped=options.crop != "none"))
                if on_chunk is not None:
                    on_chunk(c)


def describe_batch(net: Backbone, images: torch.Tensor, maps: torch.Tensor | None, specs: list[PoolingSpec],
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
                d = l2n(pooling_function(spec.name)(fmap, **kwargs).float())
                sums[spec.name] = d if spec.name not in sums else sums[spec.name] + d
    return {name: (l2n(v) if views > 1 else v).cpu().numpy() for name, v in sums.items()}


def _gather(c: int, parts: list[tuple[list[int], dict[str, np.ndarray], np.ndarray | None]],
            failed_rows: dict[int, str], man: Manifest, specs: list[PoolingSpec], dim: int,
            cropped: bool = False) -> Chunk:
    rows = [r for rs, _, _ in parts for r in rs]
    order = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable")
    features = {}
    for spec in specs:
        stacked = np.concatenate([f[spec.name] for _, f, _ in parts]) if parts else np.zeros((0, dim), np.float32)
        if stacked.shape[1] != dim:
            raise ValueError(f"pooling {spec.name} gave {stacked.shape[1]} values, the backbone has {dim} channels")
        features[spec.name] = stacked[order]
    crops = None
    if cropped:
        crops = (np.concatenate([b for _, _, b in parts]) if parts else np.zeros((0, 5), np.int64))[order]
    return Chunk(c, [man.ids[rows[i]] for i in order], features, {man.ids[r]: why for r, why in failed_rows.items()},
                 crops)


# --------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------

def _rows_in(chunks: Sequence[int] | range, chunk_rows: int, rows: int) -> int:
    return sum(max(0, min((c + 1) * chunk_rows, rows) - c * chunk_rows) for c in chunks)


def _pooling_specs(names: Sequence[str], params: Mapping[str, Mapping[str, Any]],
                   saliency: str | None) -> list[PoolingSpec]:
    if not names:
        raise BadInput(None, None, f"give at least one pooling; choose from {', '.join(sorted(pooling_names()))}")
    if len(set(names)) != len(names):
        raise BadInput(None, None, "a pooling is listed twice")
    for key in params:
        if key not in names:
            raise BadInput(None, None, f"parameters given for pooling {key!r}, which is not extracted")
    specs = []
    for name in names:
        kwargs = check_params(name, params.get(name))
        use = mask_use(name)
        mask = (saliency or "spectral") if use == "required" else (saliency if use == "optional" else None)
        specs.append(PoolingSpec(name, kwargs, mask))
    methods = {s.mask for s in specs if s.mask}
    if len(methods) > 1:
        raise BadInput(None, None, "poolings need different saliency methods in one run")
    return specs


def _read_pca_from(source: Path, poolings: Sequence[str]) -> None:
    """Read a ``pca_from`` whitening now, as the finished store will (its ``<pooling>/`` when present), not after
    the whole extraction."""
    for pooling in poolings or [""]:
        read_whitening(source / pooling if pooling and (source / pooling).is_dir() else source)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
