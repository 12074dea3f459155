"""Learned whitening, Lw (Radenovic, Tolias and Chum, TPAMI 2018), from the database's own positive pairs, and
``bpcr whiten``: a feature store whitened (Lw or PCA) into a new store.

Lw as the authors' cirtorch ``whitenlearn`` computes it, on descriptors x (D,) and pairs (x_q, x_p):

    m  = mean of the pairs' query-side descriptors x_q
    S  = sum over the pairs of (x_q - x_p)(x_q - x_p)^T / n_pairs      the intra-pair covariance
    P1 = inverse of cholesky(S)                                          the pairs' differences whitened
    D  = covariance of P1 (x - m) over every descriptor of the store
    D  = V diag(lambda) V^T, lambda decreasing                           eigen-decomposition
    P  = V^T P1
    y  = P[:dims] (x - m), then L2-normalised                            applied (cirtorch's whitenapply)

The pairs are training's (:mod:`bpcr.training.pseudolabels`): database listings whose descriptions are
near-identical (TF-IDF cosine > ``pair_tau``) in the database manifest, matched to the store's rows by ID.
Nothing is learned on queries or the ground truth: the store's every ID must be in that manifest, and
:func:`~bpcr.training.leakguard.check_no_query_leak` refuses a manifest that reaches the queries.

What cirtorch leaves open, decided here:

- A pair is unordered: its member in the earlier manifest row plays cirtorch's query (m is their mean).
- Ridge: cirtorch adds 1e-10, 1e-9, ... to S's diagonal until Cholesky succeeds. Here S is tested once: when it
  is singular (its smallest eigenvalue at most D x eps x its largest, numpy's ``matrix_rank`` tolerance; fewer
  pairs than dimensions make it so), ``RIDGE`` x trace(S) / D is added to its diagonal, and the store's meta
  says so (``ridge``, ``ridge_why``); otherwise nothing is added. With a ridge, directions no pair difference
  spans are scaled up most, so they come first in the order of D's eigenvalues.
- D is divided by the number of descriptors (cirtorch leaves the sum): the same eigenvectors.
- ``eigh`` (D is symmetric; cirtorch calls ``eig``), ties in stable order, and each eigenvector's sign fixed
  (its largest-magnitude entry positive), so the same store and pairs give the same P.
- The norm's floor is 1e-12, as :func:`bpcr.features.whitening.apply_whitening`'s (cirtorch adds 1e-6).

The projection is kept beside the whitened store, never pickled: ``whitening.npz`` (``m`` (D,), ``P`` (D, D),
``dims``) for Lw, ``pca.npz`` (:mod:`bpcr.features.whitening`'s format) for PCA, written with fixed zip
timestamps so the same projection always has the same bytes and sha256. ``--from`` applies one (the database's)
to another store (the queries): the two stores' ``whitening`` meta (method, sha256, dims) are then equal, which
search checks as for every extraction setting.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np

from bpcr.errors import BadInput
from bpcr.features.shards import now
from bpcr.features.whitening import WHITENING_FILE as PCA_FILE, Whitening, apply_whitening, learn_whitening, \
    read_whitening
from bpcr.io.fileio import sha256_file
from bpcr.io.folders import FEATURE_STORE, check_output_folder
from bpcr.io.npyio import npz_bytes, read_npz
from bpcr.io.store import FeatureStore, check_finite, iter_blocks, open_store, write_store_blocks
from bpcr.io.textio import exists_as_input, read_json
from bpcr.training.whiten_options import LW, WhitenOptions, check_whiten_options

LW_FILE = "whitening.npz"
FILES = {"learned": LW_FILE, "pca": PCA_FILE}
MIN_PAIRS = 2  # one difference spans one direction; S then is the ridge everywhere else
RIDGE = 1e-6  # x trace(S) / D, on S's diagonal when S is singular
BLOCK_ROWS = 8192  # rows read at a time: 8192 x 2048 float64 is 128 MiB
NORMALISATION = {"learned": "l2, lw-whiten, l2", "pca": "l2, pca-whiten, l2"}


@dataclass(frozen=True)
class LearnedWhitening:
    """Lw: x -> P[:dims] (x - m), then L2-normalised. ``m: (D,)``, ``P: (D, D)`` float64, ``1 <= dims <= D``."""

    m: np.ndarray
    P: np.ndarray
    dims: int

    def to_bytes(self) -> bytes:
        return npz_bytes({"m": self.m, "P": self.P, "dims": np.asarray(self.dims, dtype=np.int64)})


Projection = Union[LearnedWhitening, Whitening]


@dataclass
class WhitenResult:
    """What :func:`whiten` wrote: the store, the method, the dimensions, and how the projection was learned."""

    store: FeatureStore
    method: str
    dim_in: int
    dims: int
    learned: dict | None = None  # the record of a projection learned here
    applied: Path | None = None  # the file applied with --from
    seconds: float = 0.0


# ---------------------------------------------------------------- Lw itself


def learn_lw(x: np.ndarray, pairs: np.ndarray, dims: int | None = None) -> tuple[LearnedWhitening, dict]:
    """Lw (module docstring) from descriptors ``x: (N, D)`` and ``pairs: (P, 2)`` rows of x (query side first).

    Returns the projection and what the learning found: ``{"pairs", "S_rank", "ridge", "ridge_why"}``.
    """
    n, d = x.shape
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if dims is not None and not 1 <= dims <= d:
        raise BadInput(None, None, f"--dims {dims}: the features have {d} dimensions")
    if len(pairs) < MIN_PAIRS:
        raise BadInput(None, None, f"learned whitening needs at least {MIN_PAIRS} positive pairs, got {len(pairs)}")
    total_q, scatter = np.zeros(d), np.zeros((d, d))
    for start in range(0, len(pairs), BLOCK_ROWS):
        block = pairs[start:start + BLOCK_ROWS]
        q = np.asarray(x[block[:, 0]], dtype=np.float64)
        diff = q - np.asarray(x[block[:, 1]], dtype=np.float64)
        total_q += q.sum(axis=0)
        scatter += diff.T @ diff
    m = total_q / len(pairs)
    s, record = regularised(scatter / len(pairs))
    record["pairs"] = int(len(pairs))
    from scipy.linalg import solve_triangular

    p1 = solve_triangular(np.linalg.cholesky(s), np.eye(d), lower=True)
    c = np.zeros((d, d))
    for block in _row_blocks(x):
        centred = block - m
        c += centred.T @ centred
    eigval, eigvec = np.linalg.eigh(p1 @ (c / n) @ p1.T)
    order = np.argsort(-eigval, kind="stable")
    v = eigvec[:, order]
    biggest = np.argmax(np.abs(v), axis=0)
    v *= np.where(v[biggest, np.arange(d)] < 0, -1.0, 1.0)
    return LearnedWhitening(m, v.T @ p1, dims or d), record


def regularised(s: np.ndarray) -> tuple[np.ndarray, dict]:
    """``S`` as Cholesky takes it, and the record: its rank, the ridge added (0.0 unless S is singular) and why."""
    d = s.shape[0]
    s = (s + s.T) / 2
    eig = np.linalg.eigvalsh(s)
    top = float(eig[-1])
    if not top > 0:
        raise BadInput(None, None, "every positive pair's two descriptors are identical: there is no intra-pair "
                                   "variation to whiten by")
    tol = top * d * np.finfo(np.float64).eps
    rank = int(np.sum(eig > tol))
    if rank == d:
        try:
            np.linalg.cholesky(s)
            return s, {"S_rank": rank, "ridge": 0.0, "ridge_why": None}
        except np.linalg.LinAlgError:
            pass
    ridge = RIDGE * float(np.trace(s)) / d
    why = f"S is singular (rank {rank} of {d}): {RIDGE:g} x trace(S) / D added to its diagonal"
    return s + ridge * np.eye(d), {"S_rank": rank, "ridge": ridge, "ridge_why": why}


def apply_lw(x: np.ndarray, lw: LearnedWhitening) -> np.ndarray:
    """(N, D) -> (N, dims): P[:dims] (x - m), then L2-normalised, in float64; returned as float32."""
    y = (np.asarray(x, dtype=np.float64) - lw.m) @ lw.P[:lw.dims].T
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return (y / np.maximum(norms, 1e-12)).astype(np.float32)


def _row_blocks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, x.shape[0], BLOCK_ROWS):
        yield np.asarray(x[start:start + BLOCK_ROWS], dtype=np.float64)


# ---------------------------------------------------------------- the files


def read_learned_whitening(path: str | Path) -> LearnedWhitening:
    """Read ``whitening.npz`` (a store folder or the file itself), checking dtypes, shapes and values; BadInput
    (one line naming the file) otherwise.

    m (D,) and P (K, D) real numbers, finite, D >= 1 and dims <= K <= D; dims one integer >= 1.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LW_FILE
    if not exists_as_input(path):
        raise BadInput(path, None, "no learned whitening here (learn one with `bpcr whiten DATABASE_STORE "
                                   "--manifest DATABASE_MANIFEST --out DIR`)")
    raw = read_npz(path, ("m", "P", "dims"), "a learned whitening file (m, P, dims)")
    for name in ("m", "P"):
        if raw[name].dtype.kind not in "iuf":
            raise BadInput(path, None, f"{name} holds {raw[name].dtype.str} values; a learned whitening holds "
                                       "real numbers")
    if raw["dims"].dtype.kind not in "iu" or raw["dims"].shape != ():
        raise BadInput(path, None, f"dims must be one integer, found {raw['dims'].dtype.str} of shape "
                                   f"{raw['dims'].shape}")
    m, p, dims = np.asarray(raw["m"], dtype=np.float64), np.asarray(raw["P"], dtype=np.float64), int(raw["dims"])
    if m.ndim != 1 or m.shape[0] == 0 or p.ndim != 2 or p.shape[1] != m.shape[0] or not 1 <= p.shape[0] <= m.shape[0]:
        raise BadInput(path, None, f"inconsistent shapes: m {m.shape}, P {p.shape} (expected m (D,), P (K, D), "
                                   "1 <= K <= D)")
    if not 1 <= dims <= p.shape[0]:
        raise BadInput(path, None, f"dims {dims} is outside 1..{p.shape[0]} (the rows of P)")
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(p))):
        raise BadInput(path, None, "m or P holds NaN or infinity")
    return LearnedWhitening(m, p, dims)


def projection_bytes(projection: Projection) -> bytes:
    """The file of a projection, byte for byte the same for the same arrays (:func:`npz_bytes`)."""
    if isinstance(projection, LearnedWhitening):
        return projection.to_bytes()
    return npz_bytes({"mean": projection.mean, "components": projection.components,
                      "explained_variance": projection.explained_variance})


def read_projection(source: str | Path, method: str | None) -> tuple[str, Path, Projection]:
    """``--from``: a store folder (its ``whitening.npz`` or ``pca.npz``; ``method`` picks when both are there)
    or a file (read as ``method``'s, by default pca for a file named ``pca.npz`` and learned otherwise).

    Returns (method, file, projection).
    """
    source = Path(source)
    if source.is_dir():
        found = [m for m, name in FILES.items() if exists_as_input(source / name) and method in (None, m)]
        if not found:
            wanted = FILES[method] if method else " or ".join(FILES.values())
            raise BadInput(source, None, f"no {wanted} here: --from takes the store a whitening was learned on "
                                         "(or its file)")
        if len(found) > 1:
            raise BadInput(source, None, f"holds both {' and '.join(FILES.values())}: say which with --method")
        method, file = found[0], source / FILES[found[0]]
    else:
        method = method or ("pca" if source.name == PCA_FILE else "learned")
        file = source
    projection = read_learned_whitening(file) if method == "learned" else read_whitening(file)
    return method, file, projection


# ---------------------------------------------------------------- the stage


def whiten(store: str | Path, out: str | Path, options: WhitenOptions = WhitenOptions(), *,
           manifest: str | Path | None = None, source: str | Path | None = None,
           ground_truth: str | Path | None = None, log: Callable[[str], None] = print) -> WhitenResult:
    """Write ``store`` whitened to ``out`` (a new feature store, the projection file beside its rows).

    Learning (``source`` None): ``method`` learned (the default) learns Lw on ``store`` with the positive pairs
    of the database ``manifest`` (module docstring); pca learns PCA-whitening on the store's rows. Applying
    (``source``: a store folder or file from an earlier :func:`whiten`, or an ``extract --pca-whiten`` store):
    that projection, unchanged (e.g. the database's, to the query store). ``ground_truth``: learned, a ground
    truth whose queries the manifest must not hold either (the pipeline passes its own).
    """
    started = time.perf_counter()
    method = _check_inputs(options, manifest, source)
    src = open_store(store, role="database")
    target = check_output_folder(out, "--out", FEATURE_STORE)
    if target.resolve() == src.path.resolve():
        raise BadInput(out, None, "is the store being whitened; write the whitened store to another folder")
    check_finite(src)
    dim_in = src.features.shape[1]
    if options.dims is not None and options.dims > dim_in:
        raise BadInput(None, None, f"--dims {options.dims}: the store {src.path} holds {dim_in}-d features")
    about = _about_store(src)
    if source is None:
        method = method or "learned"
        file = None
        if method == "learned":
            projection, learned = _learn_lw(src, Path(manifest), options, ground_truth, log)
        else:
            projection, learned = learn_whitening(src.features, max_dim=options.dims), {"method": "pca",
                                                                                        "rows": len(src)}
        learned.update(about)
    else:
        method, file, projection = read_projection(source, method)
        if _dim_in(projection) != dim_in:
            raise BadInput(file, None, f"the whitening is for {_dim_in(projection)}-d features; {src.path} holds "
                                       f"{dim_in}-d ones")
    data = projection_bytes(projection)
    digest = hashlib.sha256(data).hexdigest()
    dims = _dims(projection)
    meta = {**src.meta, "normalisation": NORMALISATION[method], "created": now(),
            # compared with the other side's by search (bpcr.io.store.EXTRACTION_FIELDS): the same projection
            "whitening": {"method": method, "file": FILES[method], "sha256": digest, "dim_in": dim_in, "dims": dims},
            "whitening_learned": learned if file is None else _provenance_beside(file, digest),
            "whitened_from": {**about, "normalisation": src.meta.get("normalisation"),
                              "applied": None if file is None else str(file)}}
    blocks = (_apply(block, projection) for block in iter_blocks(src.features, BLOCK_ROWS))
    written = write_store_blocks(target, src.ids, blocks, dims, src.features.dtype, meta, src.failed,
                                 extra_files={FILES[method]: data})
    result = WhitenResult(written, method, dim_in, dims, learned if file is None else None, file,
                          time.perf_counter() - started)
    log(describe(result))
    return result


def _check_inputs(options: WhitenOptions, manifest: str | Path | None, source: str | Path | None) -> str | None:
    """Refuse options out of range, and inputs that do nothing or are missing for learning or applying, before
    any file is read; returns the method asked for (None: learned, or the applied file's)."""
    method = check_whiten_options(options)
    if source is not None:
        given = [flag for flag, value in (("--manifest", manifest), ("--dims", options.dims)) if value is not None]
        if options.pair_tau != WhitenOptions.pair_tau:
            given.append("--pair-tau")
        if given:
            raise BadInput(None, None, f"--from applies a whitening as it was learned; drop {', '.join(given)}")
    elif (method or "learned") == "learned" and manifest is None:
        raise BadInput(None, None, "learned whitening learns from the positive pairs of the database manifest: "
                                   "give --manifest DATABASE_MANIFEST (or --method pca)")
    elif method == "pca" and manifest is not None:
        raise BadInput(None, None, "--method pca learns on the store's rows alone; drop --manifest")
    return method


def _learn_lw(src: FeatureStore, manifest: Path, options: WhitenOptions, ground_truth: str | Path | None,
              log: Callable[[str], None]) -> tuple[LearnedWhitening, dict]:
    """Lw on the store's rows with the manifest's positive pairs; the projection and its record."""
    from bpcr.dataset.manifest import read_manifest
    from bpcr.training.leakguard import check_no_query_leak
    from bpcr.training.pseudolabels import description_vectors, positive_pairs

    man = read_manifest(manifest)
    leak_check = check_no_query_leak(man, ground_truth=ground_truth)
    index = man.index()
    row_of = np.full(len(man), -1, dtype=np.int64)
    for row, image_id in enumerate(src.ids):
        found = index.get(image_id)
        if found is None:
            raise BadInput(src.path / "ids.txt", row + 1, f"ID {image_id!r} is not in the manifest {manifest}: "
                                                          "learned whitening learns on the database store with the "
                                                          "database manifest")
        row_of[found] = row
    text, _ = description_vectors(man.descriptions)
    pairs = row_of[positive_pairs(text, options.pair_tau)]
    kept = pairs[(pairs >= 0).all(axis=1)]
    if len(kept) < MIN_PAIRS:
        raise BadInput(manifest, None, f"only {len(kept)} positive pair(s) (description cosine > "
                                       f"{options.pair_tau:g}) among the {len(src)} images of {src.path}; learned "
                                       f"whitening needs at least {MIN_PAIRS}")
    lw, found = learn_lw(src.features, kept, options.dims)
    if found["ridge"]:
        log(f"whiten: {found['ridge_why']} (ridge {found['ridge']:.3g})")
    record = {"method": "learned", "paper": LW, "manifest": str(manifest), "manifest_sha256": sha256_file(manifest),
              "pair_tau": options.pair_tau, "pairs": found["pairs"],
              "pairs_without_features": int(len(pairs) - len(kept)), "S_rank": found["S_rank"],
              "ridge": found["ridge"], "ridge_why": found["ridge_why"], "no_query_leak": leak_check}
    return lw, record


def _about_store(store: FeatureStore) -> dict:
    return {"store": str(store.path), "store_features_sha256": sha256_file(store.path / "features.npy"),
            "store_ids_sha256": sha256_file(store.path / "ids.txt")}


def _provenance_beside(file: Path, digest: str) -> dict | None:
    """How an applied projection was learned: the ``whitening_learned`` of the store it sits in, when that store's
    meta names this very projection (its sha256); None otherwise (a file moved away from its store)."""
    meta_file = file.parent / "meta.json"
    if not meta_file.is_file():
        return None
    try:
        meta = read_json(meta_file, "feature store meta")
    except BadInput:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("whitening"), dict) or \
            meta["whitening"].get("sha256") != digest:
        return None
    return meta.get("whitening_learned")


def _apply(block: np.ndarray, projection: Projection) -> np.ndarray:
    if isinstance(projection, LearnedWhitening):
        return apply_lw(block, projection)
    return apply_whitening(block, projection)


def _dim_in(projection: Projection) -> int:
    return int(projection.m.shape[0] if isinstance(projection, LearnedWhitening) else projection.mean.shape[0])


def _dims(projection: Projection) -> int:
    return int(projection.dims if isinstance(projection, LearnedWhitening) else projection.components.shape[0])


def describe(result: WhitenResult) -> str:
    """One line: what was whitened, how, and into what."""
    how = {"learned": "learned whitening (Lw)", "pca": "PCA-whitening"}[result.method]
    if result.applied is not None:
        what = f"{how} of {result.applied} applied"
    elif result.method == "learned":
        learned = result.learned or {}
        ridge = f", ridge {learned['ridge']:.3g}" if learned.get("ridge") else ""
        what = f"{how} learned on {learned.get('pairs')} positive pairs (tau {learned.get('pair_tau')}){ridge}"
    else:
        what = f"{how} learned on {len(result.store)} rows"
    return (f"wrote {result.store.path}: {len(result.store)} x {result.dims} ({what}; {result.dim_in} -> "
            f"{result.dims} dims, {result.seconds:.1f} s)")
