"""Checking every image of a dataset once (:func:`bpcr.dataset.images.check_image`, in worker processes), the
results cached in the output folder by path, size and mtime so that a re-run decodes only what changed.

The cache (``.check_cache.json``) is written even when a run is interrupted, so the next one resumes; it is
dropped whole when its version, the pixel limit or Pillow's version differs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from bpcr.dataset.images import ImageError, check_image
from bpcr.io.fileio import write_text_atomic
from bpcr.progress import Progress, start

CACHE_NAME = ".check_cache.json"
CACHE_VERSION = 2  # 2: a PNG with fewer rows of data than its header claims is refused
CHUNK = 32  # files per task sent to a worker: small enough for a smooth progress bar


class Checked(Protocol):
    """A file to check: its key (as the manifests and the cache name it) and its path."""

    key: str
    path: Path


def check_all(files: Sequence[Checked], out: Path, workers: int | None, progress: Progress | None,
               max_pixels: int) -> tuple[dict[str, dict[str, Any]], int, int]:
    """Check result per file key, from the cache or by decoding; also how many of each."""
    cache_path = out / CACHE_NAME
    cache = _load_cache(cache_path, max_pixels)
    results: dict[str, dict[str, Any]] = {}
    entries: dict[str, list[Any]] = {}
    todo: list[tuple[str, str]] = []
    stamps: dict[str, tuple[int, int]] = {}
    failed_stat = 0
    for f in files:
        try:
            stat = f.path.stat()
        except OSError as exc:
            results[f.key] = {"reason": f"cannot read: {exc.strerror}"}
            failed_stat += 1
            continue
        stamps[f.key] = (stat.st_size, stat.st_mtime_ns)
        hit = _cached(cache.get(f.key), stat.st_size, stat.st_mtime_ns)
        if hit is None:
            todo.append((f.key, str(f.path)))
        else:
            results[f.key] = hit
            entries[f.key] = [stat.st_size, stat.st_mtime_ns, hit]
    del cache
    try:
        for key, result in _run_checks(todo, workers, progress, max_pixels):
            results[key] = result
            entries[key] = [*stamps[key], result]
    finally:
        # Written even when interrupted, so a re-run resumes instead of starting over.
        body = {"version": CACHE_VERSION, "max_pixels": max_pixels, "pillow": pillow_version(),
                "entries": dict(sorted(entries.items()))}
        write_text_atomic(cache_path, json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
    return results, len(todo), len(files) - len(todo) - failed_stat


def _run_checks(todo: list[tuple[str, str]], workers: int | None, progress: Progress | None,
                max_pixels: int) -> Iterable[tuple[str, dict[str, Any]]]:
    return run_in_chunks(_check_one, todo, workers, progress, "checking images", max_pixels)


def run_in_chunks(work: Callable[..., Any], todo: list[tuple], workers: int | None, progress: Progress | None,
                  label: str, *args: Any) -> Iterable[tuple[str, Any]]:
    """``(key, work(*item, *args))`` for each ``(key, *item)`` of ``todo``, or ``(key, {"reason": ...})`` for
    an image it cannot decode, computed in chunks by ``workers`` spawned processes (default: every core) and
    yielded chunk by chunk as each finishes, advancing the progress bar ``label``. ``work`` is a module-level
    function (the processes import it)."""
    workers = max(1, workers or os.cpu_count() or 1)
    # Small sets still spread over every worker; large ones go in CHUNK-sized tasks.
    size = max(1, min(CHUNK, -(-len(todo) // (4 * workers))))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    workers = min(workers, max(1, len(chunks)))
    with start(progress, label, len(todo)) as advance:
        if workers == 1:
            for chunk in chunks:
                done = _work_chunk(work, chunk, *args)
                advance(len(done))
                yield from done
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn: workers start clean, whatever threads or libraries the caller holds.
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_work_chunk, work, chunk, *args) for chunk in chunks]
            try:
                for future in as_completed(futures):
                    done = future.result()
                    advance(len(done))
                    yield from done
            finally:
                for future in futures:
                    future.cancel()


def _work_chunk(work: Callable[..., Any], chunk: list[tuple], *args: Any) -> list[tuple[str, Any]]:
    done = []
    for key, *item in chunk:
        try:
            done.append((key, work(*item, *args)))
        except ImageError as exc:
            done.append((key, {"reason": exc.reason}))
        except MemoryError:
            done.append((key, {"reason": "out of memory while decoding"}))
    return done


def _check_one(path: str, max_pixels: int) -> dict[str, Any]:
    info = check_image(Path(path), max_pixels)
    return {"width": info.width, "height": info.height, "format": info.format, "notes": info.notes}


def pillow_version() -> str:
    """The Pillow a cache of decoded images is made under (this check cache, prepare's pre-sized images): another
    version may decode differently, so a cache made under one is not reused under another."""
    import PIL

    return PIL.__version__


def _load_cache(path: Path, max_pixels: int) -> dict[str, Any]:
    """The cache's entries, or nothing when it is missing, damaged or made under other settings."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("max_pixels") != max_pixels
            or data.get("pillow") != pillow_version() or not isinstance(data.get("entries"), dict)):
        return {}
    return data["entries"]


def _cached(entry: Any, size: int, mtime_ns: int) -> dict[str, Any] | None:
    if not (isinstance(entry, list) and len(entry) == 3 and entry[0] == size and entry[1] == mtime_ns):
        return None
    result = entry[2]
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("reason"), str):
        return result
    ok = (isinstance(result.get("width"), int) and isinstance(result.get("height"), int)
          and isinstance(result.get("format"), str) and isinstance(result.get("notes"), list))
    return result if ok else None
