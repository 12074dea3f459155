"""The no-query-leak guard of ``bpcr train`` and ``bpcr whiten``: nothing learned from the catalogue may reach the
queries, by ID, by file, or by an image's bytes."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bpcr.dataset.gt import read_ground_truth
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.errors import BadInput

QUERY_MANIFEST = "queries.csv"


def check_no_query_leak(manifest: Manifest, queries: str | Path | None = None,
                        ground_truth: str | Path | None = None) -> dict:
    """Refuse (BadInput) a training manifest that reaches the queries in any way.

    ``queries``: a query manifest (default: ``queries.csv`` beside the
    training manifest, when there is one). Refused: a training ID that is a
    query ID, or a query of ``ground_truth``; a training image that is a query
    image file, or holds a query image's bytes (sizes compared first, then
    sha256). Returns what was checked, for ``train.json``.
    """
    if queries is None:
        beside = manifest.path.parent / QUERY_MANIFEST
        queries = beside if beside.is_file() and beside.resolve() != manifest.path.resolve() else None
    if queries is not None and Path(queries).resolve() == manifest.path.resolve():
        raise BadInput(manifest.path, None, "this is the query manifest: train on the database manifest only")
    ids = set(manifest.ids)
    report: dict = {"query_manifest": None, "query_ids": 0, "ground_truth": None, "gt_queries": 0,
                    "same_size_files_hashed": 0}
    if ground_truth is not None:
        gt = read_ground_truth(ground_truth)
        leaked = sorted(ids.intersection(gt))
        if leaked:
            raise BadInput(manifest.path, None, f"holds {len(leaked)} query ID(s) of the ground truth {ground_truth} "
                                                f"(first {leaked[0]!r}): training may never see a query")
        report.update(ground_truth=str(ground_truth), gt_queries=len(gt))
    if queries is None:
        return report
    qman = read_manifest(queries)
    leaked = sorted(ids.intersection(qman.ids))
    if leaked:
        raise BadInput(manifest.path, None, f"shares {len(leaked)} ID(s) with the query manifest {queries} "
                                            f"(first {leaked[0]!r}): training may never see a query")
    report.update(query_manifest=str(queries), query_ids=len(qman))
    query_files = {os.path.realpath(p): i for i, p in zip(qman.ids, qman.paths)}
    by_size: dict[int, list[str]] = {}
    for path in query_files:
        try:
            by_size.setdefault(os.stat(path).st_size, []).append(path)
        except OSError:
            continue
    digests: dict[str, str] = {}
    for image_id, path in zip(manifest.ids, manifest.paths):
        real = os.path.realpath(path)
        if real in query_files:
            raise BadInput(manifest.path, None, f"image {image_id!r} is the query image file of "
                                                f"{query_files[real]!r}: training may never see a query")
        try:
            size = os.stat(real).st_size
        except OSError:
            continue
        for qpath in by_size.get(size, ()):
            report["same_size_files_hashed"] += 1
            if qpath not in digests:
                digests[qpath] = _sha256(qpath)
            if _sha256(real) == digests[qpath]:
                raise BadInput(manifest.path, None, f"image {image_id!r} has the bytes of query image "
                                                    f"{query_files[qpath]!r}: training may never see a query")
    return report


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
