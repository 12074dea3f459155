"""``bpcr combine``: several feature stores joined into one, as two challenge teams did.

- AI Meets Beauty 2018, 2nd place: four ImageNet backbones x MAC/SPoC/R-MAC/RA-MAC, every descriptor
  concatenated, z-normalised per dimension, PCA to 2048, then searched.
- AI Meets Beauty 2020, runner-up: SE-ResNet-152 GRMAC with weight 10 and DenseNet-201 MAC with weight 8.95,
  concatenated, searched by inner product.

For S stores whose rows are matched by ID (every store must hold the same IDs), a row becomes

    y = [w_1 x_1 / |x_1|, ..., w_S x_S / |x_S|], then optionally z-normalised and PCA-reduced, then L2-normalised

(the transform and its parameters: :mod:`bpcr.features.combination`). ``pca_rows`` learns the PCA on a seeded
draw of database rows when every row would not fit in memory.

**What it equals.** Without z-norm and PCA, for a query q and a database image x,

    <y(q), y(x)> = sum_s w_s^2 cos_s(q, x)        and    |y| = sqrt(sum_s w_s^2) for every row,

so after the final L2-normalisation the combined cosine is sum_s w_s^2 cos_s(q, x) / sum_s w_s^2: the ranking
of the kit's ``bpcr search`` sum fusion (paper 003 eq 16) of the separate stores with weights w_s^2, the scores
divided by the constant sum_s w_s^2. The 2020 runner-up's weights 10 and 8.95 are weights 100 and 80.1 on the
cosines. Z-norm and PCA are what the concatenation adds beyond a fusion of scores.

Everything is learned on the database stores; query stores are combined with the database's parameters
(``source``: the combined database store), read from ``combination.npz`` beside its rows (never pickled, read
strictly: :func:`bpcr.features.combination.read_combination`). The combined stores' meta is ``pooling = "combined"`` with
``pooling_params`` naming each input's extraction settings, the weights, z-norm, PCA and the parameters'
sha256, so ``bpcr search`` (:func:`bpcr.io.store.check_same_extraction`) pairs a combined query store with
the combined database store it was made for, and with nothing else.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from bpcr import __version__
from bpcr.errors import BadInput
from bpcr.features.combination import (PARAMS_FILE, Combination, apply_combination, concatenate, learn_pca,
                                       read_combination, znorm_stats)
from bpcr.features.combine_options import COMBINED_POOLING as POOLING, CombineOptions, check_combine_options
from bpcr.features.shards import now
from bpcr.io.fileio import sha256_file
from bpcr.io.folders import FEATURE_STORE, check_output_folder
from bpcr.io.store import EXTRACTION_FIELDS, FeatureStore, check_finite, open_store, write_store_blocks
from bpcr.io.textio import exists_as_input, read_json

BLOCK_ROWS = 8192  # rows combined at a time


@dataclass
class CombineResult:
    """What :func:`combine` wrote: the store, its inputs, the parameters, and whether they were learned here."""

    store: FeatureStore
    inputs: list[Path]
    combination: Combination
    learned: dict | None  # what learning found (None: applied)
    applied: Path | None  # the parameters file applied (None: learned here)
    seconds: float = 0.0


# ---------------------------------------------------------------- the stage


def combine(stores: Sequence[str | Path], out: str | Path, options: CombineOptions = CombineOptions(), *,
            source: str | Path | None = None, log: Callable[[str], None] = print) -> CombineResult:
    """Write the combination of ``stores`` (module docstring) to ``out``, a new feature store with
    ``combination.npz`` beside its rows.

    Learning (``source`` None): ``stores`` are database stores; z-norm and PCA (``options``) are learned on their
    rows. Applying (``source``: the combined database store, or its ``combination.npz``): ``stores`` are the
    query stores made as the database's inputs were, in the same order, combined with its parameters unchanged.
    """
    started = time.perf_counter()
    paths = [Path(s) for s in stores]
    weights = _check_inputs(paths, options, source)
    learning = source is None
    opened = [open_store(p, role="database" if learning else "query") for p in paths]
    target = check_output_folder(out, "--out", FEATURE_STORE)
    for store in opened:
        if target.resolve() == store.path.resolve():
            raise BadInput(out, None, "is one of the stores being combined; write the combination to another folder")
    ids, rows = match_ids(opened)
    dims = np.array([s.features.shape[1] for s in opened], dtype=np.int64)
    inputs = [_about_input(s) for s in opened]
    if learning:
        for store in opened:
            check_finite(store, "database")
        weights = np.ones(len(opened)) if weights is None else np.asarray(weights, dtype=np.float64)
        combination, learned = _learn(opened, rows, weights, dims, options)
        data = combination.to_bytes()
        digest = hashlib.sha256(data).hexdigest()
        compared = {"inputs": [i["extraction"] for i in inputs], "weights": weights.tolist(),
                    "znorm": options.znorm, "pca": options.pca, "pca_whiten": options.pca_whiten, "sha256": digest}
        meta = {"backbone": _backbones(opened), "pooling": POOLING, "pooling_params": compared,
                "normalisation": _normalisation(combination)}
        provenance = {"learned": learned, "inputs": inputs, "file": PARAMS_FILE, "sha256": digest}
        dtype = options.dtype or _widest(opened)
        file = None
    else:
        file, combination, data, source_meta = _read_source(Path(source))
        _check_like_database(opened, dims, combination, source_meta, file)
        meta = {k: source_meta[k] for k in ("backbone", "pooling", "pooling_params", "normalisation")}
        provenance = {"inputs": inputs, "file": PARAMS_FILE, "sha256": source_meta["pooling_params"]["sha256"],
                      "applied": str(file), "learned": source_meta.get("combination", {}).get("learned")}
        dtype = options.dtype or str(source_meta.get("dtype", _widest(opened)))
        learned = None
    meta.update({"combination": provenance, "bpcr_version": __version__, "created": now()})
    failed: dict[str, str] = {}
    for store in opened:
        failed.update({k: v for k, v in store.failed.items() if k not in failed})
    blocks = (apply_combination(parts, combination) for parts in _row_blocks(opened, rows))
    written = write_store_blocks(target, ids, blocks, combination.dim_out, dtype, meta, failed,
                                 extra_files={PARAMS_FILE: data})
    result = CombineResult(written, [s.path for s in opened], combination, learned, file,
                           time.perf_counter() - started)
    log(describe(result))
    return result


def _check_inputs(paths: list[Path], options: CombineOptions, source: str | Path | None) -> list[float] | None:
    """Refuse, before any store is read: no input, one named twice, options out of range, and with ``source``
    options that would change what is applied (the database's parameters are applied as learned)."""
    if not paths:
        raise BadInput(None, None, "give at least one feature store to combine")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise BadInput(p, None, f"is given twice (as {seen[key]} too); combine each store once and weight it")
        seen[key] = p
    weights = check_combine_options(options, len(paths))
    if source is not None:
        given = [flag for flag, value, default in (
            ("--weights", options.weights, None), ("--znorm", options.znorm, False), ("--pca", options.pca, None),
            ("--pca-rows", options.pca_rows, None), ("--pca-whiten", options.pca_whiten, False),
            ("--seed", options.seed, CombineOptions.seed)) if value != default]
        if given:
            raise BadInput(None, None, f"--from applies the database's combination as it was learned; drop "
                                       f"{', '.join(given)}")
    return weights


def match_ids(stores: Sequence[FeatureStore]) -> tuple[list[str], list[np.ndarray | None]]:
    """The first store's IDs in its row order, and each store's rows for them (None: the same order). Every store
    must hold exactly the first store's IDs; BadInput naming the one that does not, otherwise."""
    first = stores[0]
    ids = first.ids
    rows: list[np.ndarray | None] = [None]
    reference = set(ids)
    for store in stores[1:]:
        if store.ids == ids:
            rows.append(None)
            continue
        held = set(store.ids)
        if held != reference:
            lacks, extra = sorted(reference - held), sorted(held - reference)
            example = f"it lacks {lacks[0]!r}" if lacks else f"it holds {extra[0]!r}"
            raise BadInput(store.path / "ids.txt", None,
                           f"holds other IDs than {first.path / 'ids.txt'} ({len(lacks)} missing, {len(extra)} "
                           f"extra; {example}): combined stores must hold the same IDs, matched row by row")
        row_of = {image_id: row for row, image_id in enumerate(store.ids)}
        rows.append(np.array([row_of[i] for i in ids], dtype=np.int64))
    return ids, rows


def _row_blocks(stores: Sequence[FeatureStore], rows: Sequence[np.ndarray | None]) -> Iterator[list[np.ndarray]]:
    """Each store's rows, matched by ID, BLOCK_ROWS at a time."""
    n = len(stores[0])
    for start in range(0, n, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, n)
        parts = []
        for store, r in zip(stores, rows):
            if r is None:
                parts.append(np.asarray(store.features[start:stop]))
                continue
            wanted = r[start:stop]
            order = np.argsort(wanted, kind="stable")
            block = np.empty((len(wanted), store.features.shape[1]), dtype=store.features.dtype)
            block[order] = store.features[wanted[order]]  # a memory map reads sorted rows fastest
            parts.append(block)
        yield parts


def _learn(stores: Sequence[FeatureStore], rows: Sequence[np.ndarray | None], weights: np.ndarray,
           dims: np.ndarray, options: CombineOptions) -> tuple[Combination, dict]:
    """z-norm (one streaming pass) and PCA (on every row, or ``pca_rows`` drawn with the seed) on the database's
    weighted concatenation; the parameters and the record of what was learned."""
    n, d = len(stores[0]), int(dims.sum())
    record: dict = {"rows": n, "weights": weights.tolist(), "weights_on_cosines": (weights ** 2).tolist(),
                    "znorm": options.znorm, "pca": options.pca, "pca_whiten": options.pca_whiten,
                    "pca_rows": options.pca_rows, "seed": options.seed}
    mean = std = None
    if options.znorm:
        mean, std, constant = znorm_stats(concatenate(p, weights) for p in _row_blocks(stores, rows))
        record["znorm_constant_dims"] = constant
    pca = (None, None, None)
    if options.pca is not None:
        k = options.pca
        if k > min(n, d):
            raise BadInput(None, None, f"--pca {k}: at most min(rows, dimensions) = min({n}, {d}) components "
                                       f"({len(stores)} stores of {n} rows)")
        chosen = None
        if options.pca_rows is not None and options.pca_rows < n:
            chosen = np.sort(np.random.default_rng(options.seed).choice(n, options.pca_rows, replace=False))
        z = np.empty((n if chosen is None else len(chosen), d), dtype=np.float64)
        filled = 0
        for start, parts in zip(range(0, n, BLOCK_ROWS), _row_blocks(stores, rows)):
            y = concatenate(parts, weights)
            if mean is not None:
                y = (y - mean) / std
            if chosen is not None:
                y = y[chosen[(chosen >= start) & (chosen < start + len(y))] - start]
            z[filled:filled + len(y)] = y
            filled += len(y)
        pmean, comps, var, kept = learn_pca(z, k, options.pca_whiten, options.seed)
        del z
        pca = (pmean, comps, var)
        record["explained_variance_ratio"] = kept
        record["pca_learned_on_rows"] = filled
    return Combination(weights, dims, mean, std, *pca, pca_whiten=options.pca_whiten), record


def _read_source(source: Path) -> tuple[Path, Combination, bytes, dict]:
    """``--from``: a combined database store (or its combination.npz). Returns the file, its parameters, its
    bytes and the meta of the store beside it, which must record this very file (its sha256)."""
    file = source / PARAMS_FILE if source.is_dir() else source
    combination = read_combination(file)
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    meta_file = file.parent / "meta.json"
    meta = read_json(meta_file, "feature store meta") if exists_as_input(meta_file) else None
    params = meta.get("pooling_params") if isinstance(meta, dict) and meta.get("pooling") == POOLING else None
    if not isinstance(params, dict) or params.get("sha256") != digest or \
            not isinstance(params.get("inputs"), list) or len(params["inputs"]) != len(combination.weights):
        raise BadInput(file, None, f"no combined store's meta.json beside it records this combination (sha256 "
                                   f"{digest[:12]}...): --from takes the combined database store it was written with")
    return file, combination, data, meta


def _check_like_database(stores: Sequence[FeatureStore], dims: np.ndarray, combination: Combination,
                         source_meta: dict, file: Path) -> None:
    """The query stores are the database's inputs' kind, in the same order: as many, of the same dimensions, with
    the same extraction settings (every field of :data:`bpcr.io.store.EXTRACTION_FIELDS` each records)."""
    recorded = source_meta["pooling_params"]["inputs"]
    if len(stores) != len(recorded):
        raise BadInput(None, None, f"the combination {file} joins {len(recorded)} stores; {len(stores)} given")
    for i, (store, wanted) in enumerate(zip(stores, recorded)):
        where = f"input {i + 1} of the combined database store {file.parent}"
        if dims[i] != combination.dims[i]:
            raise BadInput(store.path / "features.npy", None, f"dim is {dims[i]} but {where} has dim "
                                                              f"{combination.dims[i]}")
        mine = _about_input(store)["extraction"]
        for name in sorted(set(mine) | set(wanted if isinstance(wanted, dict) else {})):
            theirs = wanted.get(name) if isinstance(wanted, dict) else None
            if mine.get(name) != theirs:
                raise BadInput(store.path / "meta.json", None, f"{name} is {mine.get(name)!r} but {where} has "
                                                               f"{name} {theirs!r}; query stores are combined from "
                                                               "stores extracted as the database's, in its order")


def _about_input(store: FeatureStore) -> dict:
    """An input as the combined store's meta records it: where, its digests, and its extraction settings."""
    return {"store": str(store.path), "features_sha256": sha256_file(store.path / "features.npy"),
            "ids_sha256": sha256_file(store.path / "ids.txt"), "rows": len(store), "dim": store.features.shape[1],
            "extraction": {k: store.meta[k] for k in EXTRACTION_FIELDS if k in store.meta}}


def _backbones(stores: Sequence[FeatureStore]) -> str:
    names = [str(s.meta.get("backbone", "?")) for s in stores]
    return "+".join(dict.fromkeys(names))


def _widest(stores: Sequence[FeatureStore]) -> str:
    return "float32" if any(s.features.dtype != np.float16 for s in stores) else "float16"


def _normalisation(c: Combination) -> str:
    steps = ["l2 per input", "weighted concatenation"]
    if c.znorm_mean is not None:
        steps.append("z-norm")
    if c.pca_components is not None:
        steps.append(f"pca{'-whiten' if c.pca_whiten else ''} {c.dim_out}")
    return ", ".join(steps + ["l2"])


def describe(result: CombineResult) -> str:
    """One line: what was combined, how, and into what."""
    c = result.combination
    how = [f"{len(result.inputs)} stores, weights {c.weights.tolist()}"]
    if c.znorm_mean is not None:
        how.append("z-norm")
    if c.pca_components is not None:
        kept = (result.learned or {}).get("explained_variance_ratio")
        how.append(f"PCA{'-whitened' if c.pca_whiten else ''} to {c.dim_out}" +
                   (f" ({kept:.1%} of the variance)" if kept is not None else ""))
    how.append(f"applied from {result.applied}" if result.applied is not None else "learned on these rows")
    return (f"wrote {result.store.path}: {len(result.store)} x {c.dim_out} ({'; '.join(how)}; {c.dim_in} -> "
            f"{c.dim_out} dims, {result.seconds:.1f} s)")
