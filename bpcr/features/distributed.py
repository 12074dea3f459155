"""Extraction past one machine: ``extract --shard I/N`` as Ray tasks, merged into one store.

Each of the ``n_shards`` tasks runs :func:`bpcr.features.extract.extract` with
``ExtractOptions(shard=(i, n_shards))`` into its own part folder, and :func:`bpcr.features.extract.merge`
joins the parts into ``out/<pooling>/``: the same ``ids.txt`` and
``features.npy`` bytes as one process extracting everything, because a shard
is a run of whole chunks and a chunk's batches never depend on who computes
them. Ray only schedules; a failed task re-raises its error here (a
:class:`bpcr.errors.BadInput` stays one), and a re-run resumes every shard
from the chunks it had finished.

On a cluster of several machines the manifest's images, the part folders and
``out`` must be on storage every node sees (the paths are passed as they are).
The Slurm array in the README is the same computation without Ray.

Needs the optional extra: ``pip install "bpcr[ray]"``.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from bpcr.errors import BadInput
from bpcr.features.extract import extract, merge
from bpcr.features.options import ExtractOptions


def extract_sharded_ray(manifest: str | Path, out: str | Path, n_shards: int,
                        options: ExtractOptions = ExtractOptions(), *, cpus_per_shard: int = 1,
                        gpus_per_shard: float = 0, parts: str | Path | None = None, keep_parts: bool = False,
                        restart: bool = False) -> dict[str, Path]:
    """Extract ``manifest`` in ``n_shards`` Ray tasks and merge them into ``out``; returns pooling -> store.

    Connects to the Ray cluster ``ray.init`` has joined (or starts a local one,
    as Ray does on first use). Each task asks Ray for ``cpus_per_shard`` CPUs
    and ``gpus_per_shard`` GPUs, and torch uses ``cpus_per_shard`` threads in
    it unless ``options.threads`` is given. ``parts`` is where the shards are written
    (default: a hidden ``.OUT.shards`` folder beside ``out``), removed after the
    merge unless ``keep_parts``. ``options`` are :func:`extract`'s
    (:class:`bpcr.features.options.ExtractOptions`) but ``shard``, which this chooses;
    ``pca_whiten`` and ``pca_from`` apply to the merged store. ``restart`` as :func:`extract`'s.
    """
    try:
        import ray
    except ImportError:
        raise BadInput(None, None, 'sharding on Ray needs the ray package: pip install "bpcr[ray]"') from None
    if isinstance(n_shards, bool) or not isinstance(n_shards, int) or n_shards < 1:
        raise BadInput(None, None, f"the number of shards must be an integer >= 1, got {n_shards!r}")
    if options.shard is not None:
        raise BadInput(None, None, "extract_sharded_ray chooses each task's shard; do not pass shard=")
    if options.pca_whiten and options.pca_from:
        raise BadInput(None, None, "--pca-whiten learns a whitening, --pca-from applies one: choose one")
    threads = cpus_per_shard if options.threads is None else options.threads
    each = replace(options, pca_whiten=False, pca_from=None, threads=threads)
    out = Path(out)
    parts = Path(parts) if parts is not None else out.with_name(f".{out.name}.shards")
    folders = [parts / f"shard-{i}-of-{n_shards}" for i in range(1, n_shards + 1)]

    task = ray.remote(num_cpus=cpus_per_shard, num_gpus=gpus_per_shard, max_retries=0)(extract)
    pending = [task.remote(str(manifest), str(folder), replace(each, shard=(i, n_shards)), restart=restart)
               for i, folder in enumerate(folders, start=1)]
    # Every task ends before anything is raised: no shard is still writing when the caller re-runs.
    failures = []
    for ref in pending:
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as failure:
            failures.append(failure)
    if failures:
        cause = getattr(failures[0], "cause", None)
        if isinstance(cause, BadInput):
            raise cause from None
        raise failures[0]
    merged = merge(folders, out, pca_whiten=bool(options.pca_whiten), pca_from=options.pca_from)
    if not keep_parts:
        shutil.rmtree(parts)
    return merged
