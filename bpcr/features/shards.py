"""Shards of one extraction: which chunks a shard takes, and joining the shards' stores.

``bpcr extract --shard I/N`` runs the I-th of N contiguous runs of whole
chunks (:func:`shard_chunks`), each into its own part folder; :func:`merge`
joins the parts into exactly the bytes a single run writes (``ids.txt``,
``features.npy``), refusing parts whose settings differ, a shard given twice,
a missing shard, or a part that is not a shard. Writing a finished store
(optionally PCA-whitened) is shared with :func:`bpcr.features.extract.extract`.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.folders import FEATURE_STORE, UNFINISHED_EXTRACTION, check_output_folder
from bpcr.io.store import CROPS_FILE, crop_counts, crops_csv, iter_blocks, open_store, write_store_blocks
from bpcr.features.whitening import whiten_store

# Meta fields that may differ between the shards of one extraction (crop_counts: the merge counts its own).
_SHARD_FREE = frozenset({"created", "shard", "count", "compute", "crop_counts"})


def shard_chunks(rows: int, chunk_rows: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Chunk range [first, last) of a shard: the i-th of n contiguous runs of whole chunks."""
    n_chunks = -(-rows // chunk_rows)
    if shard is None:
        return 0, n_chunks
    i, n = shard
    return (i - 1) * n_chunks // n, i * n_chunks // n


def merge(
    parts: Sequence[str | Path],
    out: str | Path,
    pca_whiten: bool = False,
    pca_from: str | Path | None = None,
) -> dict[str, Path]:
    """Join shard outputs (each ``PART/<pooling>/``) into ``out/<pooling>/``.

    The result's ``ids.txt`` and ``features.npy`` equal a single run's byte for
    byte. Refuses (BadInput) parts whose settings differ, a shard given twice,
    a missing shard, or a part that is not a shard.
    """
    if not parts:
        raise BadInput(None, None, "--merge needs the shard folders to join")
    out = Path(out)
    layouts = [(Path(p), _stores_in(Path(p))) for p in parts]
    names = sorted(layouts[0][1])
    for path, stores in layouts:
        if sorted(stores) != names:
            raise BadInput(path, None, f"holds poolings {', '.join(sorted(stores)) or 'none'}, "
                                       f"{layouts[0][0]} holds {', '.join(names)}")
    out = check_outputs(out, names, pca_whiten or bool(pca_from), partial=False)
    result: dict[str, Path] = {}
    for name in names:
        opened = [open_store(stores[name]) for _, stores in layouts]
        ordered = _check_shards(opened)
        meta = {k: v for k, v in ordered[0].meta.items() if k not in ("count", "dim", "dtype")}
        computes = [s.meta.get("compute") for s in ordered]
        meta.update(shard=None, created=now(),
                    compute=computes[0] if all(c == computes[0] for c in computes) else {"mixed": computes})
        ids = [i for s in ordered for i in s.ids]
        failed = {k: v for s in ordered for k, v in s.failed.items()}
        extra = _merged_crops(ordered, ids, meta)
        blocks = (b for s in ordered for b in iter_blocks(s.features))
        dest = out / name
        finish_store(dest, ids, blocks, int(ordered[0].features.shape[1]), str(ordered[0].features.dtype), meta,
                      failed, pca_whiten, pca_from, name, extra)
        result[name] = dest
    return result


def _merged_crops(ordered: list, ids: list[str], meta: dict) -> dict[str, bytes]:
    """The merged store's ``crops.csv`` (and ``meta``'s ``crop_counts``, set here) when the shards were cropped."""
    if meta.get("crop", "none") == "none":
        return {}
    for s in ordered:
        if s.crops is None:
            raise BadInput(s.path, None, f"extracted with crop {meta['crop']!r} but holds no {CROPS_FILE}")
    crops = np.concatenate([s.crops for s in ordered])
    meta["crop_counts"] = crop_counts(crops)
    return {CROPS_FILE: crops_csv(ids, crops)}


def finish_store(dest: Path, ids: list[str], blocks, dim: int, dtype: str, meta: dict, failed: dict[str, str],
                  pca_whiten: bool, pca_from: str | Path | None, pooling: str,
                  extra_files: dict[str, bytes] | None = None) -> None:
    """Write the store ``dest`` (whitened as asked); ``extra_files`` (name -> bytes, e.g. ``crops.csv``) land in
    it with its rows, in the same rename."""
    if pca_whiten or pca_from:
        whiten_store(dest, ids, blocks, dim, dtype, meta, failed, None if pca_whiten else pca_from, pooling,
                     extra_files)
    else:
        write_store_blocks(dest, ids, blocks, dim, dtype, meta, failed, extra_files)


def check_outputs(out: Path, poolings: Sequence[str], whiten: bool, partial: bool) -> Path:
    """Refuse, before any work, an ``--out`` whose stores cannot be written or whose
    ``OUT/<pooling>`` is not a store (a user's file or folder is never replaced)."""
    out = check_output_folder(out, "--out")
    if partial:
        check_output_folder(out.with_name(f".{out.name}.partial"), "--out", UNFINISHED_EXTRACTION)
    for name in poolings:
        check_output_folder(out / name, "--out", FEATURE_STORE)
        if whiten:
            check_output_folder(out / f".{name}.raw", "--out", FEATURE_STORE)
    return out


def _stores_in(path: Path) -> dict[str, Path]:
    if not path.is_dir():
        raise BadInput(path, None, "not a folder of feature stores")
    stores = {p.name: p for p in sorted(path.iterdir()) if p.is_dir() and (p / "meta.json").is_file()}
    if not stores:
        raise BadInput(path, None, "holds no feature store (expected PART/<pooling>/meta.json)")
    return stores


def _check_shards(stores: list) -> list:
    """Order shard stores by index; BadInput on a non-shard, mismatched meta, or missing/overlapping shards."""
    for s in stores:
        if not isinstance(s.meta.get("shard"), dict):
            raise BadInput(s.path / "meta.json", None, "not a shard (made without --shard I/N)")
    count = stores[0].meta["shard"]["count"]
    base = {k: v for k, v in stores[0].meta.items() if k not in _SHARD_FREE}
    seen: dict[int, Path] = {}
    for s in stores:
        other = {k: v for k, v in s.meta.items() if k not in _SHARD_FREE}
        if other != base or s.meta["shard"]["count"] != count:
            changed = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k)) or ["shard count"]
            raise BadInput(s.path / "meta.json", None, f"differs from {stores[0].path} in {', '.join(changed)}")
        index = s.meta["shard"]["index"]
        if index in seen:
            raise BadInput(s.path, None, f"shard {index}/{count} given twice (also {seen[index]}): overlapping shards")
        seen[index] = s.path
    missing = [str(i) for i in range(1, count + 1) if i not in seen]
    if missing:
        raise BadInput(None, None, f"missing shard(s) {', '.join(missing)} of {count}")
    return sorted(stores, key=lambda s: s.meta["shard"]["index"])


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
