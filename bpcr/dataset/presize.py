"""The pre-sized image cache (``bpcr prepare --presize SIZE[,SIZE...]``): every image decoded once, for every network.

Why: an e-commerce JPEG of 800-1600 px costs most of a small network's CPU time to decode (about 90% for
EfficientNet-Lite0 at 224 px), and ``bpcr extract`` pays it again for every network and input size tried. With a
cache, ``prepare`` decodes each usable image once more, shrinks it and stores it compactly; every later
extraction decodes the small file instead (``benchmarks/presize.py`` measures what it buys and what it changes).

The working size (:func:`cached_size`), from the sizes the kit already uses:

- the **shorter** side becomes the largest of the network input sizes given (``presize``): extraction's default
  ``resize="square"`` stretches both sides to the input size, so the shorter side is what must never be enlarged
  from the cache where it would be shrunk from the original (``aspect`` and ``pad`` need only the longer side);
- the **longer** side stays at least ``presize_sift_side``, SIFT re-ranking's working size (``max_side``);
- the aspect is kept, sides are rounded up, and an image is **never enlarged**: one already within the working
  size is not copied at all, its entry names the original file (read exactly as without a cache).

Shrinking uses the filter extraction resizes with (:func:`bpcr.features.loader.decode_view`: bicubic, box-reduced
first down to three times the target), so an image read from the cache differs from one read from the original
only by one more resampling and the storage format's error. Not a match for ``crop="salient"``: a crop cut from a
small image can end smaller than the input size, and is then enlarged.

Files, in the prepared folder beside the manifests (every one written atomically: a temporary file, then a rename):

- ``presize/<set>/<id>.jpg`` (JPEG at ``presize_quality``, 4:4:4) or ``.png`` (lossless): the shrunk images;
- ``presize.json`` (:data:`SIDECAR`): what the cache is (:func:`cache_spec`), the sha256 of each manifest it serves
  and, per manifest row, its file's name, bytes and sha256 (``null``: the original is read). Written after the
  manifests; every ``prepare`` run removes it first, so it never outlives the run that made it;
- ``.presize_cache.json``: what a re-run needs to resume (each source file's size and mtime, the entry made from
  it, the cached file's size and mtime); written every minute and when a run stops, even on Ctrl-C. An entry is
  reused only when its source is unchanged, the cache is of the same kind and its file has the size and mtime
  it was written with; any other is made again. Files of the cache folder no manifest row names (an image
  since removed, the other format) and temporaries of a killed run are deleted.

Provenance, so that a store extracted from the cache is never mixed with one from the originals:
``bpcr extract`` reads the cache only for a manifest whose sha256 ``presize.json`` records (:func:`presized`)
and then records :func:`cache_spec` as ``presize`` in each store's ``meta.json``, a field
:func:`bpcr.io.store.check_same_extraction` compares; a pipeline's stage keys take ``presize.json``'s sha256 in
with the manifests'. A cached file whose size or sha256 differs from ``presize.json`` is refused with one line
(:class:`BadInput`), before extraction starts (size) or when it is read (sha256). Only extraction reads the
cache: training, SIFT re-ranking and the report read the originals, as without one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from PIL import Image

from bpcr.dataset.imagecheck import pillow_version, run_in_chunks
from bpcr.dataset.images import MAX_PIXELS, load_rgb
from bpcr.dataset.manifest import Manifest
from bpcr.dataset.options import PresizeOptions, check_prepare_options
from bpcr.errors import BadInput
from bpcr.io.fileio import atomic_path, sha256_file, write_text_atomic
from bpcr.progress import Progress

SIDECAR = "presize.json"
FOLDER = "presize"
RESUME_NAME = ".presize_cache.json"
FORMAT = "bpcr-presize/1"
RESUME_VERSION = 1
SUFFIXES = {"jpeg": ".jpg", "png": ".png"}
# The filter extraction resizes with (bpcr.features.loader.decode_view), spelled here one floor below it.
RESAMPLE, REDUCING_GAP = Image.BICUBIC, 3.0
SAVE_EVERY_S = 60.0  # the resume file is written this often while a run goes on
AGAIN = "run bpcr prepare with --presize again"
DELETE_AGAIN = "delete it and run bpcr prepare with --presize again"


class Source(Protocol):
    """A usable image to cache: its ID, its file and its key (path relative to the prepared folder)."""

    id: str
    path: Path
    key: str


def cached_size(width: int, height: int, short_side: int, long_side: int) -> tuple[int, int]:
    """(width, height) an image is cached at: the smallest shrink, aspect kept and sides rounded up, whose shorter
    side is at least ``short_side`` and longer side at least ``long_side``; its own size when that would not make
    it smaller (an image is never enlarged).

    >>> cached_size(1600, 800, 240, 384), cached_size(1600, 1200, 240, 384), cached_size(250, 380, 240, 384)
    ((480, 240), (384, 288), (250, 380))
    """
    short, long = min(width, height), max(width, height)
    # The binding limit as an exact fraction num / den (no float rounding a side down below its limit).
    num, den = (short_side, short) if short_side * long >= long_side * short else (long_side, long)
    if num >= den:
        return width, height
    return -(-width * num // den), -(-height * num // den)


def cache_spec(options: PresizeOptions) -> dict[str, Any]:
    """What a cache made with ``options`` is: presize.json records it, and so does every store extracted from it
    (``meta.json``'s ``presize``, which :func:`bpcr.io.store.check_same_extraction` compares)."""
    spec: dict[str, Any] = {"short_side": max(options.presize), "long_side": options.presize_sift_side,
                            "format": options.presize_format, "resample": "bicubic"}
    if options.presize_format == "jpeg":
        spec.update(quality=options.presize_quality, subsampling="4:4:4")
    return spec


@dataclass
class PresizeSummary:
    """What :func:`presize_images` did, for ``summary.json``: per set, images stored shrunk (``cached``) and read
    from their original (``original``, already within the working size); the cache's bytes; files encoded in
    this run (``encoded``; the others were reused from an earlier run)."""

    spec: dict[str, Any]
    sizes: list[int]
    cached: dict[str, int]
    original: dict[str, int]
    bytes: int
    encoded: int
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def presize_images(sets: Mapping[str, Sequence[Source]], manifests: Mapping[str, Path], out: Path,
                   options: PresizeOptions, workers: int | None = None, progress: Progress | None = None,
                   max_pixels: int = MAX_PIXELS) -> PresizeSummary:
    """Cache every image of ``sets`` (set name -> its usable images, the rows of manifest ``manifests[set]``) in
    ``out`` and write ``out/presize.json`` (module docstring); ``workers`` processes decode (default: one per CPU).
    """
    check_prepare_options(options)
    if not options.enabled:
        raise BadInput(None, None, "--presize needs at least one size")
    started = time.perf_counter()
    out = Path(out)
    spec = cache_spec(options)
    suffix = SUFFIXES[options.presize_format]
    resume_path = out / RESUME_NAME
    resumed = _load_resume(resume_path, spec)
    entries: dict[str, list[Any]] = {}
    results: dict[str, Any] = {}
    todo: list[tuple[str, str, str, str]] = []
    sources_of: dict[str, Path] = {}
    for name, sources in sets.items():
        (out / FOLDER / name).mkdir(parents=True, exist_ok=True)
        for f in sources:
            file = f"{FOLDER}/{name}/{f.id}{suffix}"
            sources_of[f.key] = f.path
            stamp = [*_stamp(f.path), file]
            old = resumed.get(f.key)
            if isinstance(old, list) and len(old) == 5 and old[:3] == stamp and _still_there(out, old[3], old[4]):
                results[f.key] = old[3]
                entries[f.key] = old
            else:
                todo.append((f.key, str(f.path), str(out / file), file))
                entries[f.key] = [*stamp, None, None]  # unfinished until its result arrives
    try:
        last = time.monotonic()
        for key, result in _run(todo, spec, workers, progress, max_pixels):
            if isinstance(result, dict):
                raise BadInput(sources_of[key], None, f"changed since it was checked ({result['reason']}); "
                                                      "run bpcr prepare again")
            results[key] = result
            entries[key][3:] = [result, None if result is None else list(_stamp(out / result[0]))]
            if time.monotonic() - last > SAVE_EVERY_S:
                _save_resume(resume_path, spec, entries, results)
                last = time.monotonic()
    finally:
        # Written even when interrupted, so that a re-run encodes only what is missing.
        _save_resume(resume_path, spec, entries, results)
    _remove_unlisted(out, sets, {result[0] for result in results.values() if result is not None})
    sidecar: dict[str, Any] = {"format": FORMAT, "spec": spec, "sizes": sorted(set(options.presize)),
                               "pillow": pillow_version(), "manifests": {}}
    for name, sources in sets.items():
        manifest = Path(manifests[name])
        sidecar["manifests"][manifest.name] = {
            "set": name, "sha256": sha256_file(manifest),
            "entries": {f.id: results[f.key] for f in sorted(sources, key=lambda s: s.id)}}
    write_text_atomic(out / SIDECAR, json.dumps(sidecar, sort_keys=True, separators=(",", ":")) + "\n")
    cached = {name: sum(1 for f in sources if results[f.key] is not None) for name, sources in sets.items()}
    return PresizeSummary(spec=spec, sizes=sorted(set(options.presize)), cached=cached,
                          original={name: len(sources) - cached[name] for name, sources in sets.items()},
                          bytes=sum(r[1] for r in results.values() if r is not None), encoded=len(todo),
                          seconds=round(time.perf_counter() - started, 3))


def remove_sidecar(out: Path) -> None:
    """Drop ``out/presize.json`` before a prepare run rewrites the manifests: it must never outlive the run that
    made it (the cache's files stay, for a later ``--presize`` run to reuse)."""
    (Path(out) / SIDECAR).unlink(missing_ok=True)


# ---------------------------------------------------------------- reading the cache (bpcr extract)


@dataclass(frozen=True)
class CachedImage:
    """One manifest row's cached file: where, its recorded bytes and sha256, and the original's upright
    (width, height) as the manifest records it (a salient crop's box is in those pixels)."""

    path: Path
    size: int
    sha256: str
    full_size: tuple[int, int]


@dataclass(frozen=True)
class PresizedManifest:
    """The cache serving one manifest: its :func:`cache_spec` and, per manifest row, the cached file (None: the
    image is read from its original file)."""

    spec: dict[str, Any]
    images: list[CachedImage | None]
    sidecar: Path


def presized(manifest: Manifest, manifest_sha256: str) -> PresizedManifest | None:
    """The cache that ``presize.json`` beside ``manifest`` declares for it, or None (no ``presize.json``, or one
    that does not list this manifest's file name). Refuses (BadInput) a ``presize.json`` made for another
    version of the manifest (``manifest_sha256`` differs), one without an entry for a row, and a cached file
    that is missing or whose size differs from the record (a file is read whole, and its sha256 checked, only
    when :func:`load_cached` decodes it)."""
    sidecar = Path(manifest.path).parent / SIDECAR
    if not sidecar.is_file():
        return None
    data = _read_sidecar(sidecar)
    served = data["manifests"].get(Path(manifest.path).name)
    if served is None:
        return None
    if not isinstance(served, dict) or not isinstance(served.get("entries"), dict):
        raise BadInput(sidecar, None, f"not a presize cache index ({AGAIN})")
    if served.get("sha256") != manifest_sha256:
        raise BadInput(sidecar, None, f"was made for another version of {Path(manifest.path).name} (sha256 "
                                      f"differs): {AGAIN}")
    suffix = SUFFIXES.get(data["spec"].get("format"), "")
    entries, name = served["entries"], served.get("set")
    images: list[CachedImage | None] = []
    for row, image_id in enumerate(manifest.ids):
        if image_id not in entries:
            raise BadInput(sidecar, None, f"no entry for {image_id!r} of {Path(manifest.path).name}: {AGAIN}")
        entry = entries[image_id]
        if entry is None:
            images.append(None)
            continue
        # Only the name this module gives: a hand-edited entry never points outside the cache folder.
        if not (isinstance(entry, list) and len(entry) == 3 and entry[0] == f"{FOLDER}/{name}/{image_id}{suffix}"
                and isinstance(entry[1], int) and isinstance(entry[2], str)):
            raise BadInput(sidecar, None, f"malformed entry for {image_id!r}: {AGAIN}")
        path = sidecar.parent / entry[0]
        _check_size(path, entry[1])
        images.append(CachedImage(path, entry[1], entry[2], (manifest.widths[row], manifest.heights[row])))
    return PresizedManifest(dict(data["spec"]), images, sidecar)


def load_cached(image: CachedImage) -> Image.Image:
    """Decode a cached file into RGB after checking its bytes against ``presize.json`` (BadInput if they differ)."""
    try:
        data = image.path.read_bytes()
    except OSError as exc:
        raise BadInput(image.path, None, f"presize cache entry unreadable ({exc.strerror}): {AGAIN}") from None
    if len(data) != image.size:
        raise BadInput(image.path, None, f"presize cache entry damaged: {len(data)} bytes, presize.json says "
                                         f"{image.size}: {DELETE_AGAIN}")
    if hashlib.sha256(data).hexdigest() != image.sha256:
        raise BadInput(image.path, None, f"presize cache entry damaged: its sha256 differs from presize.json's: "
                                         f"{DELETE_AGAIN}")
    try:
        with Image.open(io.BytesIO(data), formats=("JPEG", "PNG")) as opened:
            opened.load()
            return opened.convert("RGB") if opened.mode != "RGB" else opened.copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInput(image.path, None, f"presize cache entry cannot be decoded ({exc}): {DELETE_AGAIN}") from None


def _check_size(path: Path, size: int) -> None:
    try:
        found = path.stat().st_size
    except OSError:
        raise BadInput(path, None, f"presize cache entry missing: {AGAIN}") from None
    if found != size:
        raise BadInput(path, None, f"presize cache entry damaged: {found} bytes, presize.json says {size}: {AGAIN}")


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(path, None, f"unreadable presize cache index ({exc}): {AGAIN}") from None
    if (not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("spec"), dict)
            or not isinstance(data.get("manifests"), dict)):
        raise BadInput(path, None, f"not a {FORMAT} cache index: {AGAIN}")
    return data


# ---------------------------------------------------------------- making the cache


def _encode(image: Image.Image, spec: Mapping[str, Any]) -> bytes:
    buf = io.BytesIO()
    if spec["format"] == "jpeg":
        # 4:4:4: chroma kept at full resolution, as the original's decode gives it to the network.
        image.save(buf, "JPEG", quality=spec["quality"], subsampling=0)
    else:
        image.save(buf, "PNG")
    return buf.getvalue()


def presize_one(source: Path, target: Path, spec: Mapping[str, Any], max_pixels: int = MAX_PIXELS) -> bytes | None:
    """Decode ``source`` (:func:`bpcr.dataset.images.load_rgb`), shrink it to its :func:`cached_size` and write
    it to ``target`` atomically; returns the bytes written (None when the image is within the working size and
    nothing is written). Raises :class:`ImageError`."""
    image = load_rgb(Path(source), max_pixels)
    size = cached_size(*image.size, spec["short_side"], spec["long_side"])
    if size == image.size:
        return None
    data = _encode(image.resize(size, RESAMPLE, reducing_gap=REDUCING_GAP), spec)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return data


def _presize_entry(source: str, target: str, file: str, spec: dict[str, Any], max_pixels: int) -> list | None:
    """What presize.json records of one image: [file, bytes, sha256], or None when the original is read."""
    data = presize_one(Path(source), Path(target), spec, max_pixels)
    return None if data is None else [file, len(data), hashlib.sha256(data).hexdigest()]


def _run(todo: list[tuple[str, str, str, str]], spec: dict[str, Any], workers: int | None,
         progress: Progress | None, max_pixels: int) -> Iterable[tuple[str, Any]]:
    return run_in_chunks(_presize_entry, todo, workers, progress, "presizing images", spec, max_pixels)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise BadInput(path, None, f"cannot read: {exc.strerror}") from None
    return stat.st_size, stat.st_mtime_ns


def _still_there(out: Path, result: Any, stamp: Any) -> bool:
    """A resumed entry is reused only while its file has the size and mtime it was written with (an original
    needs no file); a file changed since is encoded again. A change that keeps both (bit rot) is caught by
    its sha256 when extraction reads it, whose refusal says to delete the file and run prepare again."""
    if result is None:
        return True
    if not (isinstance(result, list) and len(result) == 3 and isinstance(stamp, list)):
        return False
    try:
        stat = (out / str(result[0])).stat()
    except OSError:
        return False
    return [stat.st_size, stat.st_mtime_ns] == stamp and stat.st_size == result[1]


def _remove_unlisted(out: Path, sets: Mapping[str, Sequence[Source]], listed: set[str]) -> None:
    """Delete cache files no row names any more (an image removed from the dataset, the other format), and
    temporaries a killed run left; only in the cache's own set folders, only image and temporary files."""
    for name in sets:
        folder = out / FOLDER / name
        for entry in os.scandir(folder):
            file = f"{FOLDER}/{name}/{entry.name}"
            if (entry.is_file(follow_symlinks=False) and file not in listed
                    and (entry.name.endswith((".jpg", ".png")) or entry.name.endswith(".tmp"))):
                os.unlink(entry.path)


def _load_resume(path: Path, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The resume file's entries, or nothing when it is missing, damaged or made for another kind of cache."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (not isinstance(data, dict) or data.get("version") != RESUME_VERSION or data.get("spec") != dict(spec)
            or data.get("pillow") != pillow_version() or not isinstance(data.get("entries"), dict)):
        return {}
    return data["entries"]


def _save_resume(path: Path, spec: Mapping[str, Any], entries: Mapping[str, list[Any]],
                 results: Mapping[str, Any]) -> None:
    done = {key: entry for key, entry in entries.items() if key in results}
    body = {"version": RESUME_VERSION, "spec": dict(spec), "pillow": pillow_version(),
            "entries": dict(sorted(done.items()))}
    write_text_atomic(path, json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n")
