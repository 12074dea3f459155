"""Feature stores (DESIGN.md, "Feature store").

A store is a folder: ``ids.txt`` (one ID per line, row order), ``features.npy``
(N x D, float16 by default, never pickled), ``meta.json`` and ``failed.csv``
(``id,reason``); a store extracted with ``crop="salient"`` also holds ``crops.csv``
(:data:`CROPS_FILE`: each row's salient box, ``id,x0,y0,x1,y1,fallback``), written
with the rest. A store is written into a hidden sibling folder and renamed
into place (:func:`bpcr.io.fileio.replace_dir`), so a folder under the final name
is always complete; only a store (or an empty folder) is ever replaced, and a
kill between the two renames of a replacement is undone by the next write or open.

Also here: the streaming writer (:func:`write_store_blocks`) and the resumable
partial folder an extraction fills chunk by chunk (:class:`PartialStore`). The
PCA-whitening file a store may carry (``pca.npz``) is :mod:`bpcr.features.whitening`'s.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.fileio import atomic_path, write_json_atomic
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


# --------------------------------------------------------------------------
# Resumable writing: a hidden partial folder of fixed-size chunk files
# --------------------------------------------------------------------------

PLAN_FILE = "plan.json"
_CHUNK_NAME = re.compile(r"chunk-(\d{6,})\.npz")
# What reading a damaged .npz can raise: a torn or foreign zip, a bad member, a pickle refused.
_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)


@dataclass
class Chunk:
    """One chunk of an extraction: rows in manifest order, per-pooling features."""

    index: int
    ids: list[str]
    features: dict[str, np.ndarray]  # pooling -> (len(ids), D) float32
    failed: dict[str, str]
    crops: np.ndarray | None = None  # (len(ids), 5) int64 salient boxes (CROPS_HEADER's), when cropped


class PartialStore:
    """The hidden folder an extraction writes into before its stores exist.

    It holds ``plan.json`` (everything that determines the result) and one
    ``chunk-NNNNNN.npz`` per finished chunk, each written to a temporary name
    and renamed, so a chunk file is whole or absent whatever kills the
    process. Re-running with the same plan skips the finished chunks.

    What a kill, a full disk or a stray hand leaves behind never blocks a
    re-run: a ``plan.json`` that cannot be read starts the folder afresh, and a
    chunk file that is not exactly what :meth:`write_chunk` writes for its rows
    is deleted and computed again (:meth:`usable_chunks`), each with a warning
    to ``on_warning`` (default: :func:`warnings.warn`). Only a readable plan
    made with other settings is refused.
    """

    def __init__(self, path: str | Path, on_warning: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.on_warning = on_warning

    def _warn(self, message: str) -> None:
        if self.on_warning is None:
            warnings.warn(message, stacklevel=3)
        else:
            self.on_warning(message)

    def start(self, plan: Mapping, restart: bool = False) -> None:
        """Create the folder, or check that an existing one was made with this ``plan``.

        Raises BadInput when the folder holds a readable plan with other
        settings (unless ``restart``) or when its path is taken by something
        that is not a folder.
        """
        if (self.path.exists() or self.path.is_symlink()) and not self.path.is_dir():
            raise BadInput(self.path, None, "is in the way of the unfinished extraction's folder (not a folder); "
                                            "move it away")
        if self.path.exists() and restart:
            shutil.rmtree(self.path)
        if self.path.is_dir():
            old, why = self._read_plan()
            if old is not None:
                wanted = json.loads(json.dumps(dict(plan), sort_keys=True))
                if old != wanted:
                    changed = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
                    raise BadInput(self.path, None,
                                   f"an unfinished extraction with other settings ({', '.join(changed)}) "
                                   "is here; re-run with the same settings to resume, or pass --restart")
                return
            if why is not None:
                self._warn(f"{self.path / PLAN_FILE}: {why}; the unfinished extraction in {self.path} "
                           "starts afresh")
            # Without a plan nothing tells which settings the chunks here were made with.
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / PLAN_FILE, dict(plan))

    def _read_plan(self) -> tuple[dict | None, str | None]:
        """(the plan, None), or (None, why it is unusable); (None, None) when there is none and no chunk."""
        plan_file = self.path / PLAN_FILE
        if not (plan_file.exists() or plan_file.is_symlink()):
            found = len(self.done())
            return None, (f"missing beside {found} finished chunk(s)" if found else None)
        if not plan_file.is_file():
            return None, "not a regular file"
        try:
            plan = json.loads(plan_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            return None, f"unreadable ({type(exc).__name__}: {exc})"
        if not isinstance(plan, dict):
            return None, f"holds a JSON {type(plan).__name__}, not an object"
        return plan, None

    def chunk_file(self, index: int) -> Path:
        return self.path / f"chunk-{index:06d}.npz"

    def done(self) -> set[int]:
        """Indexes of the chunk files present (whole or not: see :meth:`usable_chunks`)."""
        found = (_CHUNK_NAME.fullmatch(p.name) for p in self.path.glob("chunk-*.npz"))
        return {int(m.group(1)) for m in found if m}

    def usable_chunks(self, rows: Mapping[int, Sequence[str]], poolings: Sequence[str], dim: int,
                      crops: bool = False) -> set[int]:
        """The chunks among ``rows`` (chunk index -> the IDs of its rows, in manifest order) that need no work.

        A chunk file counts only when it loads without pickle and holds what
        :meth:`write_chunk` writes for exactly those rows: ``ids`` (the rows
        not failed, in order), ``failed_ids`` (sorted, the others) with one
        reason each, a float32 (len(ids), ``dim``) array per pooling and, with
        ``crops``, the int64 (len(ids), 5) salient boxes. Any
        other file under a chunk's name (truncated, overwritten, made from
        another manifest) is deleted with a warning, to be computed again.
        """
        usable: set[int] = set()
        for index in sorted(self.done() & set(rows)):
            why = self._check_chunk(self.chunk_file(index), rows[index], poolings, dim, crops)
            if why is None:
                usable.add(index)
                continue
            self._warn(f"{self.chunk_file(index)}: {why}; this chunk is computed again")
            if self.chunk_file(index).is_dir() and not self.chunk_file(index).is_symlink():
                shutil.rmtree(self.chunk_file(index))
            else:
                self.chunk_file(index).unlink(missing_ok=True)
        return usable

    @staticmethod
    def _check_chunk(path: Path, row_ids: Sequence[str], poolings: Sequence[str], dim: int,
                     crops: bool = False) -> str | None:
        """Why the chunk file at ``path`` cannot stand for ``row_ids`` (None when it can)."""
        wanted = ["ids", "failed_ids", "failed_reasons", *(f"f_{name}" for name in poolings),
                  *(["crops"] if crops else [])]
        # Each member is bounded before it is read, so a torn header cannot claim gigabytes.
        limit = (1 << 20) + len(row_ids) * (4 * dim + 4096)
        try:
            with np.load(path, allow_pickle=False) as data:
                if not isinstance(data, np.lib.npyio.NpzFile):
                    return "not an .npz archive"
                missing = [name for name in wanted if name not in data.files]
                if missing:
                    return f"arrays missing: {', '.join(missing)}"
                for name in wanted:
                    if data.zip.getinfo(f"{name}.npy").file_size > limit:
                        return f"array {name} is too large for {len(row_ids)} rows"
                arrays = {name: data[name] for name in wanted}
        except _NPZ_ERRORS as exc:
            return f"unreadable ({type(exc).__name__}: {exc})"
        for name in ("ids", "failed_ids", "failed_reasons"):
            if arrays[name].dtype.kind != "U" or arrays[name].ndim != 1:
                return f"{name} is {arrays[name].dtype} {arrays[name].shape}, expected a list of strings"
        ids, failed = arrays["ids"].tolist(), arrays["failed_ids"].tolist()
        if arrays["failed_reasons"].shape != arrays["failed_ids"].shape:
            return "failed_ids and failed_reasons differ in length"
        failed_set = set(failed)
        if (failed != sorted(failed_set) or not failed_set <= set(row_ids)
                or ids != [i for i in row_ids if i not in failed_set]):
            return f"holds other rows than this chunk's {len(row_ids)} images"
        for name in poolings:
            feats = arrays[f"f_{name}"]
            if feats.dtype != np.float32 or feats.shape != (len(ids), dim):
                return f"f_{name} is {feats.dtype} {feats.shape}, expected float32 ({len(ids)}, {dim})"
        if crops and (arrays["crops"].dtype != np.int64 or arrays["crops"].shape != (len(ids), 5)):
            return f"crops is {arrays['crops'].dtype} {arrays['crops'].shape}, expected int64 ({len(ids)}, 5)"
        return None

    def write_chunk(self, chunk: Chunk) -> None:
        arrays: dict[str, np.ndarray] = {
            "ids": np.array(chunk.ids, dtype=str),
            "failed_ids": np.array(sorted(chunk.failed), dtype=str),
            "failed_reasons": np.array([chunk.failed[k] for k in sorted(chunk.failed)], dtype=str),
        }
        for name, feats in chunk.features.items():
            arrays[f"f_{name}"] = np.ascontiguousarray(feats, dtype=np.float32)
        if chunk.crops is not None:
            arrays["crops"] = np.ascontiguousarray(chunk.crops, dtype=np.int64).reshape(-1, 5)
        with atomic_path(self.chunk_file(chunk.index)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def read_chunk(self, index: int, poolings: Sequence[str]) -> Chunk:
        with np.load(self.chunk_file(index), allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            failed = {str(k): str(v) for k, v in zip(data["failed_ids"], data["failed_reasons"])}
            features = {name: np.asarray(data[f"f_{name}"]) for name in poolings}
            crops = np.asarray(data["crops"]) if "crops" in data.files else None
        return Chunk(index, ids, features, failed, crops)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
