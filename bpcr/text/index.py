"""The textual index (TI) of database product descriptions.

Paper ``001_5e68fe888a05688c.txt`` §2.2, eq 3-7: the index maps each image ID
to the IDs of the other images whose description's TF-IDF cosine is strictly
above ``tau`` (eq 7). The text kernels (preprocessing, TF-IDF, the pair search)
and the decisions they take where the paper is silent are in :mod:`bpcr.text.tfidf`.

The index is stored as a folder: ``neighbours.npz`` (CSR ``indptr``,
``indices``, float32 ``sims``; each row best first, ties by ID), ``ids.txt``
and ``meta.json``. It is read with ``allow_pickle=False``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bpcr import __version__
from bpcr.errors import BadInput
from bpcr.io.fileio import sha256_file, write_json_atomic
from bpcr.io.folders import TEXT_INDEX as TEXT_INDEX_FOLDER, check_output_folder, replace_dir, writing_dir
from bpcr.io.ids import check_id
from bpcr.dataset.manifest import read_manifest
from bpcr.options import check
from bpcr.text.options import TextIndexOptions
from bpcr.text.tfidf import PREPROCESSING, is_english, row_of_entry, similar_pairs, tfidf_vectors
from bpcr.io.npyio import read_npz
from bpcr.io.textio import check_regular, exists_as_input, iter_lines, read_json

FORMAT = "bpcr-text-index/1"


# ---------------------------------------------------------------- the index


@dataclass
class TextIndex:
    """Eq 7's map D(i) from an image ID to the IDs of textually similar images.

    ``indptr: (N+1,)``, ``indices: (nnz,)`` rows into ``ids``, ``sims: (nnz,)``
    float32 cosines; each row is best first, equal cosines by ID.
    """

    ids: list[str]
    indptr: np.ndarray
    indices: np.ndarray
    sims: np.ndarray
    meta: dict = field(default_factory=dict)
    path: Path | None = None
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._rows = {image_id: row for row, image_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, db_id: str) -> bool:
        return db_id in self._rows

    def neighbours(self, db_id: str) -> list[str]:
        """D(db_id): IDs with cosine > tau, best first; KeyError for an ID not in the index."""
        row = self._rows[db_id]
        return [self.ids[j] for j in self.indices[self.indptr[row] : self.indptr[row + 1]]]

    def neighbours_with_sims(self, db_id: str) -> list[tuple[str, float]]:
        row = self._rows[db_id]
        lo, hi = self.indptr[row], self.indptr[row + 1]
        return [(self.ids[j], float(s)) for j, s in zip(self.indices[lo:hi], self.sims[lo:hi])]

    @property
    def n_pairs(self) -> int:
        return int(len(self.indices))


def _best_first(pairs: sp.csr_matrix, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays with each row ordered by (cosine desc, ID)."""
    id_rank = np.empty(len(ids), dtype=np.int64)
    id_rank[np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)] = np.arange(len(ids))
    rows = row_of_entry(pairs.indptr)
    sims = pairs.data.astype(np.float32)
    order = np.lexsort((id_rank[pairs.indices], -sims, rows))
    return pairs.indptr.astype(np.int64), pairs.indices[order].astype(np.int32), sims[order]


def build_text_index(manifest: str | Path, out: str | Path, options: TextIndexOptions = TextIndexOptions(), *,
                     force: bool = False) -> TextIndex:
    """Build the TI of the descriptions of the manifest at ``manifest`` into folder ``out``; reuse it when it
    already matches.

    The options (``tau``, ``max_non_latin`` and the pair search's memory bounds) are declared in
    :class:`bpcr.text.options.TextIndexOptions`. A stored index is reused when its format, preprocessing,
    ``tau``, ``max_non_latin`` and the manifest's sha256 all match (``force`` rebuilds). The folder is
    written beside ``out`` and renamed into place in one step.
    """
    manifest, out = Path(manifest), Path(out)
    check(options)
    out = check_output_folder(out, "--out", TEXT_INDEX_FOLDER)  # before any work: only a text index is replaced
    check_regular(manifest, "manifest")  # a FIFO or a folder is refused, never waited on
    wanted = {
        "format": FORMAT,
        "preprocessing": PREPROCESSING,
        "tau": float(options.tau),
        "max_non_latin": float(options.max_non_latin),
        "manifest_sha256": sha256_file(manifest),
    }
    existing = _reusable(out, wanted, force)
    if existing is not None:
        return existing
    started = time.perf_counter()
    man = read_manifest(manifest)
    x, kept_rows, n_terms = _vectors(man.descriptions, options.max_non_latin)
    vectors_seconds = time.perf_counter() - started
    pairs = similar_pairs(x, options.tau, chunk_rows=options.chunk_rows, max_candidates=options.max_candidates)
    indptr, indices, sims = _best_first(pairs, man.ids)
    seconds = time.perf_counter() - started
    meta = {
        **wanted,
        "manifest": str(manifest),
        "rule": (
            "D(i) = {j != i : cosine(tfidf_i, tfidf_j) > tau}; IDF = ln((1+N)/(1+DF)) + 1, raw-count TF, L2 norm; "
            f"non-English = more than {options.max_non_latin} of letters outside the Latin script"
        ),
        "counts": _counts(len(man), len(kept_rows), x, n_terms, indptr),
        "seconds": {"vectors": round(vectors_seconds, 3), "total": round(seconds, 3)},
        "bpcr_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_index(out, man.ids, indptr, indices, sims, meta)
    return load_text_index(out)


def _reusable(out: Path, wanted: dict, force: bool) -> TextIndex | None:
    """The index already in ``out`` when it was built as ``wanted`` says (and not ``force``); refuses a folder
    that holds something else."""
    if not out.exists():
        return None
    existing = _read_meta(out) if (out / "meta.json").is_file() else None
    if existing is None or existing.get("format") != FORMAT:
        if not out.is_dir() or any(out.iterdir()):
            raise BadInput(out, None, "exists and is not a text index; refusing to overwrite it")
    elif not force and all(existing.get(key) == value for key, value in wanted.items()):
        return load_text_index(out)
    return None


def _vectors(descriptions: list[str], max_non_latin: float) -> tuple[sp.csr_matrix, list[int], int]:
    """Eq 3-5: one TF-IDF row per image (empty for a non-English or empty description), the rows kept as
    English, and the number of terms."""
    kept_rows = [row for row, text in enumerate(descriptions) if is_english(text, max_non_latin)]
    x_kept, terms = tfidf_vectors([descriptions[row] for row in kept_rows])
    x = sp.csr_matrix((len(descriptions), x_kept.shape[1]), dtype=np.float64)
    if kept_rows:
        lengths = np.zeros(len(descriptions), dtype=np.int64)
        lengths[kept_rows] = np.diff(x_kept.indptr)
        x = sp.csr_matrix((x_kept.data, x_kept.indices, np.concatenate(([0], np.cumsum(lengths)))), shape=x.shape)
    return x, kept_rows, len(terms)


def _counts(images: int, kept: int, x: sp.csr_matrix, n_terms: int, indptr: np.ndarray) -> dict[str, int]:
    """What meta.json says the index holds: images, those dropped, documents and terms, neighbour counts."""
    documents = int(np.count_nonzero(np.diff(x.indptr)))
    return {
        "images": images,
        "non_english": images - kept,
        "empty": kept - documents,
        "documents": documents,
        "terms": n_terms,
        "with_neighbours": int(np.count_nonzero(np.diff(indptr))),
        "neighbour_entries": int(indptr[-1]),
        "max_neighbours": int(np.diff(indptr).max(initial=0)),
    }


def _write_index(out: Path, ids: list[str], indptr: np.ndarray, indices: np.ndarray, sims: np.ndarray, meta: dict) -> None:
    tmp = writing_dir(out)
    (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    with open(tmp / "neighbours.npz", "wb") as handle:
        np.savez(handle, indptr=indptr, indices=indices, sims=sims)
    write_json_atomic(tmp / "meta.json", meta)
    replace_dir(tmp, out)


def _read_meta(path: Path) -> dict:
    return read_json(path / "meta.json", "text index meta")


def load_text_index(path: str | Path) -> TextIndex:
    """Open a stored TI folder, checking every array against the IDs and the meta's numbers (no pickle)."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(path, None, "no text index here (expected a folder with ids.txt, neighbours.npz, meta.json)")
    for name in ("ids.txt", "neighbours.npz", "meta.json"):
        if not exists_as_input(path / name):
            raise BadInput(path / name, None, "missing: the text index is incomplete")
    meta = _read_meta(path)
    if meta.get("format") != FORMAT:
        raise BadInput(path / "meta.json", None, f"not a text index of format {FORMAT}")
    _check_meta_numbers(path / "meta.json", meta)
    ids = [check_id(line, path / "ids.txt", n) for n, line in iter_lines(path / "ids.txt", "ids")]
    if len(set(ids)) != len(ids):
        raise BadInput(path / "ids.txt", None, "an ID appears twice")
    npz = path / "neighbours.npz"
    arrays = read_npz(npz, ("indptr", "indices", "sims"), "a text index array file (indptr, indices, sims)")
    for name, kinds in (("indptr", "iu"), ("indices", "iu"), ("sims", "f")):
        if arrays[name].ndim != 1 or arrays[name].dtype.kind not in kinds:
            raise BadInput(npz, None, f"{name} must be a 1-D {'integer' if kinds == 'iu' else 'float'} array, "
                                      f"found {arrays[name].dtype.str} of shape {arrays[name].shape}")
    indptr = arrays["indptr"].astype(np.int64)
    indices = arrays["indices"].astype(np.int64)
    sims = arrays["sims"].astype(np.float32)
    n = len(ids)
    if indptr.shape != (n + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices):
        raise BadInput(npz, None, f"indptr does not describe {n} rows of {len(indices)} entries")
    if sims.shape != indices.shape:
        raise BadInput(npz, None, "sims and indices differ in length")
    if not np.all(np.isfinite(sims)):
        raise BadInput(npz, None, "sims holds NaN or infinity")
    if len(indices) and (indices.min() < 0 or indices.max() >= n):
        raise BadInput(npz, None, "a neighbour index points outside ids.txt")
    if np.any(row_of_entry(indptr) == indices):
        raise BadInput(npz, None, "an image is listed as its own neighbour")
    return TextIndex(ids=ids, indptr=indptr, indices=indices, sims=sims, meta=meta, path=path)


def _check_meta_numbers(meta_path: Path, meta: dict) -> None:
    """tau in [0, 1) and max_non_latin in [0, 1], as build_text_index takes them; refined runs copy them."""
    for key, upper_open in (("tau", True), ("max_non_latin", False)):
        if key not in meta:
            continue
        value = meta[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise BadInput(meta_path, None, f"{key} {value!r:.60} is not a number")
        if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
            raise BadInput(meta_path, None, f"{key} {value} is outside [0, 1{')' if upper_open else ']'}")


def describe(index: TextIndex) -> str:
    """One line for the CLI."""
    counts = index.meta.get("counts", {})
    mean = index.n_pairs / len(index) if len(index) else math.nan
    return (
        f"text index {index.path}: {len(index)} images, {counts.get('non_english', '?')} non-English and "
        f"{counts.get('empty', '?')} empty descriptions dropped, {counts.get('with_neighbours', '?')} with neighbours, "
        f"{mean:.2f} neighbours per image on average (tau {index.meta.get('tau')})"
    )
