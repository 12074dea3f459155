"""Feature stores (DESIGN.md, "Feature store").

A store is a folder: ``ids.txt`` (one ID per line, row order), ``features.npy``
(N x D, float16 by default, never pickled), ``meta.json`` and ``failed.csv``
(``id,reason``). A store is written into a hidden sibling folder and renamed
into place in one step, so a folder under the final name is always complete.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import BadInput
from .fileio import write_json_atomic
from .ids import check_id
from .textio import read_lines


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
    ids = [check_id(line, path / "ids.txt", i) for i, line in enumerate(read_lines(path / "ids.txt"), start=1)]
    if len(set(ids)) != len(ids):
        raise BadInput(path / "ids.txt", None, "an ID appears twice")
    try:
        meta = json.loads("\n".join(read_lines(path / "meta.json")))
    except json.JSONDecodeError as exc:
        raise BadInput(path / "meta.json", exc.lineno, f"invalid JSON: {exc.msg}") from None
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


def write_store(
    path: str | Path,
    ids: Sequence[str],
    features: np.ndarray,
    meta: Mapping,
    failed: Mapping[str, str] | None = None,
) -> FeatureStore:
    """Write a complete store atomically (hidden temp folder, then one rename)."""
    path = Path(path)
    if features.ndim != 2 or features.shape[0] != len(ids):
        raise ValueError(f"features {features.shape} do not match {len(ids)} IDs")
    tmp = path.with_name(f".{path.name}.writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    np.save(tmp / "features.npy", np.ascontiguousarray(features), allow_pickle=False)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "reason"])
    for image_id in sorted(failed or {}):
        writer.writerow([image_id, (failed or {})[image_id]])
    (tmp / "failed.csv").write_text(buf.getvalue(), encoding="utf-8")
    full_meta = dict(meta)
    full_meta.update(count=len(ids), dim=int(features.shape[1]), dtype=str(features.dtype))
    write_json_atomic(tmp / "meta.json", full_meta)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
    return open_store(path)
