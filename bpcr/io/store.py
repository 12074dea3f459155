"""Feature stores (DESIGN.md, "Feature store").

A store is a folder: ``ids.txt`` (one ID per line, row order), ``features.npy``
(N x D, float16 by default, never pickled), ``meta.json`` and ``failed.csv``
(``id,reason``); a store extracted with ``crop="salient"`` also holds ``crops.csv``
(:data:`CROPS_FILE`: each row's salient box, ``id,x0,y0,x1,y1,fallback``), written
with the rest. A store is written into a hidden sibling folder and renamed
into place (:func:`bpcr.io.fileio.replace_dir`), so a folder under the final name
is always complete; only a store (or an empty folder) is ever replaced, and a
kill between the two renames of a replacement is undone by the next write or open.

Also here: the streaming writer (:func:`write_store_blocks`). The resumable
partial folder an extraction fills chunk by chunk is :mod:`bpcr.io.partial_store`'s,
the PCA-whitening file a store may carry (``pca.npz``) :mod:`bpcr.features.whitening`'s.
"""
from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.fileio import write_json_atomic
from bpcr.io.folders import FEATURE_STORE, check_output_folder, recover_dir, replace_dir, writing_dir
from bpcr.io.ids import check_id
from bpcr.io.npyio import load_npy
from bpcr.io.textio import exists_as_input, iter_lines, read_json, read_lines


@dataclass
class FeatureStore:
    path: Path
    ids: list[str]
    features: np.ndarray  # (N, D), memory-mapped read-only
    meta: dict
    failed: dict[str, str] = field(default_factory=dict)
    crops: np.ndarray | None = None  # (N, 5) int64 rows of crops.csv (x0, y0, x1, y1, fallback), when it has one

    def __len__(self) -> int:
        return len(self.ids)


FEATURE_DTYPES = ("float16", "float32", "float64")


def open_store(path: str | Path, role: str | None = None) -> FeatureStore:
    """Open a complete store read-only (features memory-mapped); a clear error otherwise.

    ``features.npy`` must be a 2-D float16, float32 or float64 array (never
    pickled) with one row per ID and at least one column, and ``meta.json``'s
    ``count``, ``dim`` and ``dtype``, where present, must describe it. ``role``
    ("query" or "database") names a store whose rows the caller needs: one
    without rows is refused, and a query store's rows must be finite (a
    database store's are checked when it is indexed).
    """
    path = recover_dir(path)  # a replacement cut short by a kill is undone first
    if not path.is_dir():
        raise BadInput(path, None, "no feature store here (expected a folder with ids.txt, features.npy, meta.json)")
    for name in ("ids.txt", "features.npy", "meta.json"):
        if not exists_as_input(path / name):
            raise BadInput(path / name, None, "missing: the feature store is incomplete")
    ids_path = path / "ids.txt"  # built once: a Path per line costs seconds on 500K IDs
    ids = [check_id(line, ids_path, i) for i, line in iter_lines(ids_path, "ids")]
    if len(set(ids)) != len(ids):
        raise BadInput(path / "ids.txt", None, "an ID appears twice")
    meta = read_json(path / "meta.json", "feature store meta")
    features = load_npy(path / "features.npy")
    _check_features(path, features, len(ids), meta)
    failed = _read_failed(path / "failed.csv", ids) if exists_as_input(path / "failed.csv") else {}
    crops = read_crops(path / CROPS_FILE, ids, meta) if exists_as_input(path / CROPS_FILE) else None
    store = FeatureStore(path=path, ids=ids, features=features, meta=meta, failed=failed, crops=crops)
    if role is not None:
        if len(ids) == 0:
            raise BadInput(path, None, f"the {role} feature store holds no rows")
        if role == "query":
            check_finite(store, role)
    return store


def _check_features(path: Path, features: np.ndarray, n_ids: int, meta: dict) -> None:
    where = path / "features.npy"
    if features.dtype.name not in FEATURE_DTYPES or not features.dtype.isnative:
        raise BadInput(where, None, f"features.npy holds {features.dtype.str} values; a feature store holds "
                                    f"{', '.join(FEATURE_DTYPES)} (native byte order)")
    if features.ndim != 2 or features.shape[0] != n_ids:
        raise BadInput(where, None, f"shape {features.shape} does not match {n_ids} IDs")
    if features.shape[1] == 0:
        raise BadInput(where, None, "features.npy has 0 columns; a feature has at least one dimension")
    meta_path = path / "meta.json"
    for key, actual in (("count", features.shape[0]), ("dim", features.shape[1])):
        if key in meta:
            value = meta[key]
            if not isinstance(value, int) or isinstance(value, bool):
                raise BadInput(meta_path, None, f"{key} must be an integer, found {value!r}")
            if value != actual:
                held = "rows" if key == "count" else "columns"
                raise BadInput(meta_path, None, f"{key} {value} but features have {actual} {held}")
    if "dtype" in meta and meta["dtype"] != features.dtype.name:
        raise BadInput(meta_path, None, f"dtype {meta['dtype']!r} but features.npy holds {features.dtype.name}")


def check_finite(store: FeatureStore, role: str = "feature",
                 blocks: Iterable[tuple[int, np.ndarray]] | None = None) -> None:
    """Refuse a store with a NaN or infinite value, naming its features.npy, the row and its ID.

    ``blocks``: the store's rows as ``(first_row, block)``, by default read
    from the array itself; an indexer passes the stream it reads anyway.
    """
    if blocks is None:
        blocks = zip(range(0, len(store), 65536), iter_blocks(store.features, 65536))
    for start, block in blocks:
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise BadInput(store.path / "features.npy", None,
                           f"row {row + 1} (ID {store.ids[row]!r}) of the {role} store holds NaN or infinity")


# Meta fields that define what a feature means: two stores are comparable (a query store searched
# in an index, a store refined against another) only when they agree on every field present in
# either. Fields that legitimately differ (manifest, count, created, compute, batch size, shard)
# are not compared. `bpcr extract` writes backbone, weights, layer, mean, std, input_size, resize,
# interpolation, scales, flip, normalisation, pooling, pooling_params, mask (which names the
# saliency method) and whitening, and pad_colour, jpeg_draft and presize (read from prepare's pre-sized image cache,
# bpcr.dataset.presize: never mixed with a store read from the originals) when used; the other names are spellings
# a hand-made store may carry. Not compared: crop, crop_params and crop_counts. A salient crop is made
# on one side only (the 2020 runner-up cut the query photos to their foreground, never the catalogue's
# images), so a cropped query store searched in an uncropped index is the recipe, not a mix.
EXTRACTION_FIELDS = (
    "backbone", "weights", "weights_source", "weights_sha256", "layer", "mean", "std",
    "pooling", "pooling_params", "mask", "saliency", "input_size", "size", "image_size", "resize", "pad_colour",
    "interpolation", "scales", "flip", "dim", "normalisation", "normalization", "whitening", "pca", "jpeg_draft",
    "presize",
)


def _comparable(name: str, value):
    """A meta field as stores are compared: a PCA-whitening's ``learned_on`` (where the projection was learned:
    "this store" on the database side, the database's path on the query side) is provenance, not meaning; its
    sha256 names the projection."""
    if name == "whitening" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "learned_on"}
    return value


def check_same_extraction(reference: FeatureStore, other: FeatureStore, reference_label: str | None = None) -> None:
    """Refuse ``other`` when it was extracted with other settings than ``reference``.

    ``reference_label`` names the reference in the message (default: the store's path),
    e.g. "the index work/indexes/gem". Raises BadInput naming ``other``'s meta.json.
    """
    label = reference_label or f"the store {reference.path}"
    for name in EXTRACTION_FIELDS:
        if (name in reference.meta or name in other.meta) and \
                _comparable(name, reference.meta.get(name)) != _comparable(name, other.meta.get(name)):
            raise BadInput(
                other.path / "meta.json", None,
                f"{name} is {other.meta.get(name)!r} but {label} has {name} {reference.meta.get(name)!r}; "
                "query and database features must be extracted with the same options",
            )
    if other.features.shape[1] != reference.features.shape[1]:
        raise BadInput(other.path / "features.npy", None,
                       f"dim is {other.features.shape[1]} but {label} has dim {reference.features.shape[1]}")


def _read_failed(path: Path, ids: Sequence[str]) -> dict[str, str]:
    """``failed.csv``: the header ``id,reason``, then one image that could not be used per row, strictly."""
    reader = csv.reader(io.StringIO("\n".join(read_lines(path, "failed"))), strict=True)
    failed: dict[str, str] = {}
    stored = set(ids)
    try:
        header = next(reader, None)
        if header != ["id", "reason"]:
            raise BadInput(path, 1, f"expected the header id,reason, got {header!r}")
        for row in reader:
            line = reader.line_num
            if len(row) != 2:
                raise BadInput(path, line, f"expected 2 cells (id,reason), got {len(row)}")
            image_id = check_id(row[0], path, line)
            if image_id in failed or image_id in stored:
                raise BadInput(path, line, f"{image_id} is listed twice" if image_id in failed else
                               f"{image_id} is both stored and listed as failed")
            failed[image_id] = row[1]
    except csv.Error as exc:
        raise BadInput(path, reader.line_num, f"not a valid CSV: {exc}") from None
    return failed


# A salient-cropped store's boxes (bpcr.features.preprocess): one row per stored row, in ids.txt's order; the box
# in the upright image's full-resolution pixels as PIL's crop box (columns x0..x1-1, rows y0..y1-1); fallback
# 1 when nothing stood out and the box is the whole image. meta.json's crop_counts sums them.
CROPS_FILE = "crops.csv"
CROPS_HEADER = ("id", "x0", "y0", "x1", "y1", "fallback")


def crops_csv(ids: Sequence[str], crops: np.ndarray) -> bytes:
    """The bytes of ``crops.csv`` for rows ``ids`` and their boxes ``crops`` ((N, 5) integers)."""
    crops = np.asarray(crops, dtype=np.int64).reshape(-1, 5)
    if crops.shape[0] != len(ids):
        raise ValueError(f"{crops.shape[0]} crop boxes for {len(ids)} IDs")
    lines = [",".join(CROPS_HEADER)] + [f"{i},{x0},{y0},{x1},{y1},{f}" for i, (x0, y0, x1, y1, f)
                                         in zip(ids, crops.tolist())]
    return ("\n".join(lines) + "\n").encode("utf-8")


def crop_counts(crops: np.ndarray) -> dict[str, int]:
    """meta.json's ``crop_counts`` of boxes ``crops`` ((N, 5)): how many were cut, how many fell back."""
    fallback = int(np.asarray(crops).reshape(-1, 5)[:, 4].sum())
    return {"cropped": int(len(crops)) - fallback, "fallback": fallback}


def read_crops(path: Path, ids: Sequence[str], meta: Mapping | None = None) -> np.ndarray:
    """``crops.csv`` as (N, 5) int64, strictly: the header, then row k of the store (``ids[k]``) with
    0 <= x0 < x1, 0 <= y0 < y1 and fallback 0 or 1; its counts must be ``meta``'s ``crop_counts`` when given."""
    lines = read_lines(path, "crops")
    if not lines or lines[0] != ",".join(CROPS_HEADER):
        raise BadInput(path, 1, f"expected the header {','.join(CROPS_HEADER)}, got {lines[0] if lines else ''!r}")
    if len(lines) - 1 != len(ids):
        raise BadInput(path, None, f"holds {len(lines) - 1} boxes for the store's {len(ids)} rows")
    crops = np.zeros((len(ids), 5), dtype=np.int64)
    for k, (image_id, line) in enumerate(zip(ids, lines[1:])):
        cells = line.split(",")
        if len(cells) != 6:
            raise BadInput(path, k + 2, f"expected 6 cells ({','.join(CROPS_HEADER)}), got {len(cells)}")
        if cells[0] != image_id:
            raise BadInput(path, k + 2, f"box of {cells[0]!r} where ids.txt's row {k + 1} is {image_id!r}")
        if not all(c.isdecimal() and c.isascii() for c in cells[1:]):
            raise BadInput(path, k + 2, f"x0,y0,x1,y1,fallback must be integers at least 0, got {line!r}")
        x0, y0, x1, y1, fallback = (int(c) for c in cells[1:])
        if not (x0 < x1 and y0 < y1) or fallback not in (0, 1):
            raise BadInput(path, k + 2, f"not a box (x0 < x1, y0 < y1, fallback 0 or 1): {line!r}")
        crops[k] = (x0, y0, x1, y1, fallback)
    counts = (meta or {}).get("crop_counts")
    if counts is not None and counts != crop_counts(crops):
        raise BadInput(path.with_name("meta.json"), None,
                       f"crop_counts {counts!r} but {CROPS_FILE} holds {crop_counts(crops)!r}")
    return crops


def write_store(
    path: str | Path,
    ids: Sequence[str],
    features: np.ndarray,
    meta: Mapping,
    failed: Mapping[str, str] | None = None,
) -> FeatureStore:
    """Write a complete store atomically (hidden temp folder, then one rename)."""
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise ValueError(f"features {features.shape} do not match {len(ids)} IDs")
    return write_store_blocks(path, ids, [features], int(features.shape[1]), features.dtype, meta, failed)


def write_store_blocks(
    path: str | Path,
    ids: Sequence[str],
    blocks: Iterable[np.ndarray],
    dim: int,
    dtype: str | np.dtype,
    meta: Mapping,
    failed: Mapping[str, str] | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> FeatureStore:
    """Write a store whose rows arrive as consecutive blocks (each (n_i, dim)).

    ``features.npy`` is filled through ``np.lib.format.open_memmap``, so at most
    one block is in memory besides the page cache: a 500K x 1280 float16 store
    (1.3 GB) is assembled from chunk files without holding it. Blocks are cast
    to ``dtype``. The header is the one ``np.save`` writes for the same shape
    and dtype, so both writers give identical bytes. ``extra_files`` (name ->
    bytes, e.g. ``pca.npz``) land in the folder before it is renamed into place.
    """
    path = check_output_folder(path, None, FEATURE_STORE)  # before any work: only a store is replaced
    dtype = np.dtype(dtype)
    tmp = writing_dir(path)  # a killed writer's own is removed first
    try:
        _fill(tmp, ids, blocks, int(dim), dtype, meta, failed, extra_files)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)
    return open_store(path)


def _fill(tmp: Path, ids: Sequence[str], blocks: Iterable[np.ndarray], dim: int, dtype: np.dtype, meta: Mapping,
          failed: Mapping[str, str] | None, extra_files: Mapping[str, bytes] | None) -> None:
    (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    out = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=dtype, shape=(len(ids), int(dim)))
    row = 0
    for block in blocks:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != dim or row + block.shape[0] > len(ids):
            raise ValueError(f"block {block.shape} does not fit rows {row}.. of a {len(ids)} x {dim} store")
        out[row:row + block.shape[0]] = block.astype(dtype, copy=False)
        row += block.shape[0]
    if row != len(ids):
        raise ValueError(f"blocks hold {row} rows for {len(ids)} IDs")
    out.flush()
    del out
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "reason"])
    for image_id in sorted(failed or {}):
        writer.writerow([image_id, (failed or {})[image_id]])
    (tmp / "failed.csv").write_text(buf.getvalue(), encoding="utf-8")
    for name, data in (extra_files or {}).items():
        (tmp / name).write_bytes(data)
    full_meta = dict(meta)
    full_meta.update(count=len(ids), dim=int(dim), dtype=str(dtype))
    write_json_atomic(tmp / "meta.json", full_meta)


def iter_blocks(features: np.ndarray, rows: int = 65536) -> Iterator[np.ndarray]:
    """Consecutive row blocks of a (memory-mapped) matrix, each as float32."""
    for start in range(0, features.shape[0], rows):
        yield np.asarray(features[start:start + rows], dtype=np.float32)
