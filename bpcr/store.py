"""Feature stores (DESIGN.md, "Feature store").

A store is a folder: ``ids.txt`` (one ID per line, row order), ``features.npy``
(N x D, float16 by default, never pickled), ``meta.json`` and ``failed.csv``
(``id,reason``). A store is written into a hidden sibling folder and renamed
into place in one step, so a folder under the final name is always complete.

Also here: the streaming writer (:func:`write_store_blocks`) and the resumable
partial folder an extraction fills chunk by chunk (:class:`PartialStore`). The
PCA-whitening file a store may carry (``pca.npz``) is :mod:`bpcr.whitening`'s.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .errors import BadInput
from .fileio import atomic_path, replace_dir, write_json_atomic
from .ids import check_id
from .textio import read_json, read_lines


@dataclass
class FeatureStore:
    path: Path
    ids: list[str]
    features: np.ndarray  # (N, D), memory-mapped read-only
    meta: dict
    failed: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def open_store(path: str | Path) -> FeatureStore:
    """Open a complete store read-only (features memory-mapped); a clear error otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(path, None, "no feature store here (expected a folder with ids.txt, features.npy, meta.json)")
    for name in ("ids.txt", "features.npy", "meta.json"):
        if not (path / name).is_file():
            raise BadInput(path / name, None, "missing: the feature store is incomplete")
    ids_path = path / "ids.txt"  # built once: a Path per line costs seconds on 500K IDs
    ids = [check_id(line, ids_path, i) for i, line in enumerate(read_lines(ids_path), start=1)]
    if len(set(ids)) != len(ids):
        raise BadInput(path / "ids.txt", None, "an ID appears twice")
    meta = read_json(path / "meta.json", "feature store meta")
    try:
        features = np.load(path / "features.npy", mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise BadInput(path / "features.npy", None, f"not a plain .npy array: {exc}") from None
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise BadInput(path / "features.npy", None, f"shape {features.shape} does not match {len(ids)} IDs")
    if meta.get("dim") not in (None, features.shape[1]):
        raise BadInput(path / "meta.json", None, f"dim {meta.get('dim')} but features have {features.shape[1]} columns")
    failed: dict[str, str] = {}
    if (path / "failed.csv").is_file():
        rows = list(csv.reader(io.StringIO("\n".join(read_lines(path / "failed.csv")))))
        failed = {row[0]: row[1] if len(row) > 1 else "" for row in rows[1:] if row}
    return FeatureStore(path=path, ids=ids, features=features, meta=meta, failed=failed)


# Meta fields that define what a feature means: two stores are comparable (a query store searched
# in an index, a store refined against another) only when they agree on every field present in
# either. Fields that legitimately differ (manifest, count, created, compute, batch size, shard)
# are not compared. `bpcr extract` writes backbone, weights, layer, mean, std, input_size, resize,
# interpolation, scales, flip, normalisation, pooling, pooling_params, mask (which names the
# saliency method) and whitening; the other names are spellings a hand-made store may carry.
EXTRACTION_FIELDS = (
    "backbone", "weights", "weights_source", "weights_sha256", "layer", "mean", "std",
    "pooling", "pooling_params", "mask", "saliency", "input_size", "size", "image_size", "resize", "interpolation",
    "scales", "flip", "dim", "normalisation", "normalization", "whitening", "pca",
)


def check_same_extraction(reference: FeatureStore, other: FeatureStore, reference_label: str | None = None) -> None:
    """Refuse ``other`` when it was extracted with other settings than ``reference``.

    ``reference_label`` names the reference in the message (default: the store's path),
    e.g. "the index work/indexes/gem". Raises BadInput naming ``other``'s meta.json.
    """
    label = reference_label or f"the store {reference.path}"
    for name in EXTRACTION_FIELDS:
        if (name in reference.meta or name in other.meta) and reference.meta.get(name) != other.meta.get(name):
            raise BadInput(
                other.path / "meta.json", None,
                f"{name} is {other.meta.get(name)!r} but {label} has {name} {reference.meta.get(name)!r}; "
                "query and database features must be extracted with the same options",
            )
    if other.features.shape[1] != reference.features.shape[1]:
        raise BadInput(other.path / "features.npy", None,
                       f"dim is {other.features.shape[1]} but {label} has dim {reference.features.shape[1]}")


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
    path = Path(path)
    dtype = np.dtype(dtype)
    tmp = path.with_name(f".{path.name}.writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
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


@dataclass
class Chunk:
    """One chunk of an extraction: rows in manifest order, per-pooling features."""

    index: int
    ids: list[str]
    features: dict[str, np.ndarray]  # pooling -> (len(ids), D) float32
    failed: dict[str, str]


class PartialStore:
    """The hidden folder an extraction writes into before its stores exist.

    It holds ``plan.json`` (everything that determines the result) and one
    ``chunk-NNNNNN.npz`` per finished chunk, each written to a temporary name
    and renamed, so a chunk file is whole or absent whatever kills the
    process. Re-running with the same plan skips the finished chunks.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def start(self, plan: Mapping, restart: bool = False) -> None:
        """Create the folder, or check that an existing one was made with this ``plan``."""
        plan_file = self.path / PLAN_FILE
        if self.path.exists() and restart:
            shutil.rmtree(self.path)
        if plan_file.is_file():
            old = json.loads(plan_file.read_text(encoding="utf-8"))
            wanted = json.loads(json.dumps(dict(plan), sort_keys=True))
            if old != wanted:
                changed = sorted(k for k in set(old) | set(wanted) if old.get(k) != wanted.get(k))
                raise BadInput(self.path, None, f"an unfinished extraction with other settings ({', '.join(changed)}) "
                                                "is here; re-run with the same settings to resume, or pass --restart")
            return
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(plan_file, dict(plan))

    def chunk_file(self, index: int) -> Path:
        return self.path / f"chunk-{index:06d}.npz"

    def done(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.path.glob("chunk-*.npz")}

    def write_chunk(self, chunk: Chunk) -> None:
        arrays: dict[str, np.ndarray] = {
            "ids": np.array(chunk.ids, dtype=str),
            "failed_ids": np.array(sorted(chunk.failed), dtype=str),
            "failed_reasons": np.array([chunk.failed[k] for k in sorted(chunk.failed)], dtype=str),
        }
        for name, feats in chunk.features.items():
            arrays[f"f_{name}"] = np.ascontiguousarray(feats, dtype=np.float32)
        with atomic_path(self.chunk_file(chunk.index)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def read_chunk(self, index: int, poolings: Sequence[str]) -> Chunk:
        with np.load(self.chunk_file(index), allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            failed = {str(k): str(v) for k, v in zip(data["failed_ids"], data["failed_reasons"])}
            features = {name: np.asarray(data[f"f_{name}"]) for name in poolings}
        return Chunk(index, ids, features, failed)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
