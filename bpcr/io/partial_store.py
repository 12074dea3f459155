"""The resumable partial folder an extraction fills chunk by chunk (DESIGN.md, "Feature store"): a plan
(``plan.json``) and fixed-size chunk files (``chunk-NNNNNN.npz``), each written whole or not at all, so an
interrupted extraction resumes from its last complete chunk; :func:`bpcr.io.store.write_store_blocks` then
turns the chunks into the store."""
from __future__ import annotations

import json
import re
import shutil
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from bpcr.errors import BadInput
from bpcr.io.fileio import atomic_path, write_json_atomic

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
