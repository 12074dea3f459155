"""Getting pixels to the model for ``bpcr extract``: shapes, batches, decoding workers, device and threads.

Each image is decoded (``bpcr.dataset.images.load_rgb``; from its pre-sized copy when the manifest has a cache,
:func:`decode_cached`), cut to its salient
object and letterboxed when asked (:mod:`bpcr.features.preprocess`), and resized
to its :func:`target_shape`, and its saliency map is computed with it when a
pooling needs one. A batch (:func:`batches_of_chunk`) holds one resized shape only, so
its images are written straight into one pre-sized array. Where the decoding
runs is :func:`batch_loader`'s choice: loader processes beside a GPU or on a
machine with cores to spare; on a small CPU, the thread that feeds the model
and one low-priority helper thread of the same process (:class:`_Prefetch`).
Which rows make a chunk, and what the model does with a batch, is
:mod:`bpcr.features.extract`'s.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from bpcr.dataset.images import DRAFT_MARGIN, ImageError, load_rgb, load_rgb_draft
from bpcr.dataset.presize import CachedImage, load_cached
from bpcr.device import cores
from bpcr.errors import BadInput
from bpcr.features.preprocess import CropBox, Preprocess, prepare

M = TypeVar("M", bound=torch.nn.Module)

# The memory layout of a batch and of the network, on every device. On the CPU too:
# channels-last convolutions took 0.70 of the time of the same ones in NCHW (Lite0,
# 224 px, batch 32, 2 cores; benchmarks/extract_throughput.py --layouts), and decoding
# writes each image as it comes (H, W, 3), without a transposing copy.
MEMORY_FORMAT = torch.channels_last
# Its name, as meta.json's "compute", an unfinished extraction's plan (a resume never mixes chunks of two
# layouts, whose float rounding differs) and the extract and train stage keys record it. Before it the CPU
# ran contiguous NCHW.
LAYOUT = str(MEMORY_FORMAT).removeprefix("torch.")


def model_on(model: M, dev: torch.device) -> M:
    """``model`` (a backbone or a training network) on ``dev``, in the layout its batches come in."""
    return model.to(dev).to(memory_format=MEMORY_FORMAT)


def batches_of_chunk(c: int, chunk_rows: int, batch_size: int, rows: int,
                     shapes: Sequence[tuple[int, int]]) -> list[list[int]]:
    """The batches of chunk ``c``: equal resized shapes together, manifest order within a shape.

    One shape per batch is what lets a batch stack without padding. The
    batches depend on manifest positions only, so a resumed run, or a shard,
    forms exactly the batches of a single run.
    """
    members = sorted(range(c * chunk_rows, min((c + 1) * chunk_rows, rows)), key=lambda r: (shapes[r], r))
    batches: list[list[int]] = []
    for r in members:
        if batches and len(batches[-1]) < batch_size and shapes[batches[-1][0]] == shapes[r]:
            batches[-1].append(r)
        else:
            batches.append([r])
    return batches


def target_shape(width: int, height: int, size: int, resize: str, stride: int) -> tuple[int, int]:
    """(h, w) an image is resized to; "aspect": longer side = size, shorter rounded to the stride; "square" and
    "pad" (square once letterboxed): size x size."""
    if resize != "aspect" or width <= 0 or height <= 0:
        return size, size
    short = max(stride, round(size * min(width, height) / max(width, height) / stride) * stride)
    short = min(short, size)
    return (size, short) if height >= width else (short, size)


PLAIN = Preprocess()  # no crop, no padding: the image is only resized


def decode_resized(path: Path, shape: tuple[int, int], jpeg_draft: bool = False,
                   preprocess: Preprocess = PLAIN) -> np.ndarray:
    """One image as ``bpcr extract`` sees it: uint8 (H, W, 3), resized to ``shape`` = (H, W); ImageError if unusable.

    ``jpeg_draft``: a big JPEG is decoded at a reduced scale first
    (:func:`bpcr.dataset.images.load_rgb_draft`, at least ``DRAFT_MARGIN`` times the
    long side of ``shape``), which changes the pixels a little (what it
    costs: ``benchmarks/extract_throughput.py --jpeg-draft``). ``preprocess``: the
    crop and the letterbox before the resize (:func:`decode_view`).
    """
    return decode_view(path, shape, jpeg_draft, preprocess)[0]


def decode_view(path: Path, shape: tuple[int, int], jpeg_draft: bool = False,
                preprocess: Preprocess = PLAIN) -> tuple[np.ndarray, CropBox | None]:
    """:func:`decode_resized`'s pixels, and the salient box the image was cut to (None without ``preprocess.crop``).

    Decoded, cut (``crop="salient"``), letterboxed (``resize="pad"``), then resized
    (:func:`bpcr.features.preprocess.prepare`). Without a crop no saliency is computed.
    """
    h, w = shape
    if jpeg_draft:
        image, full = load_rgb_draft(path, DRAFT_MARGIN * max(h, w))
    else:
        image = load_rgb(path)
        full = image.size
    return _view(image, full, shape, preprocess)


def decode_cached(cached: CachedImage, shape: tuple[int, int],
                  preprocess: Preprocess = PLAIN) -> tuple[np.ndarray, CropBox | None]:
    """:func:`decode_view` of a manifest row from its pre-sized copy (:mod:`bpcr.dataset.presize`): the cached
    file, its bytes checked against ``presize.json`` first (BadInput when they differ), stands for the original
    as a draft decode does, the original's size being the manifest's."""
    return _view(load_cached(cached), cached.full_size, shape, preprocess)


def _view(image: Image.Image, full: tuple[int, int], shape: tuple[int, int],
          preprocess: Preprocess) -> tuple[np.ndarray, CropBox | None]:
    h, w = shape
    image, box = prepare(image, full, preprocess)
    # reducing_gap=3 shrinks big images by a box filter first: several
    # times faster, visually the same as a direct bicubic resize.
    return np.asarray(image.resize((w, h), Image.BICUBIC, reducing_gap=3.0)), box


class _Images(Dataset):
    """One image per item, decoded and resized (and its saliency map, when asked): (row, (3, H, W) uint8, map, reason)."""

    preprocess = PLAIN  # also what an instance pickled before the option unpickles with
    cached: Sequence[CachedImage | None] | None = None  # likewise: no pre-sized cache

    def __init__(self, paths: Sequence[Path], shapes: Sequence[tuple[int, int]], saliency: str | None,
                 jpeg_draft: bool = False, preprocess: Preprocess = PLAIN,
                 cached: Sequence[CachedImage | None] | None = None) -> None:
        self.paths = paths
        self.shapes = shapes
        self.saliency = saliency
        self.jpeg_draft = jpeg_draft
        self.preprocess = preprocess
        self.cached = cached  # per row, its pre-sized copy (None: the original), or None without a cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor | None, np.ndarray | None, str]:
        batch = self.batch([row])
        if batch.error is not None:
            raise batch.error
        if batch.images is None:
            return row, None, None, batch.failed[row]
        return row, batch.images[0], None if batch.maps is None else batch.maps[0], ""

    def batch(self, rows: list[int]) -> "Batch":
        """The planned batch ``rows`` (one resized shape), decoded here, image by image."""
        pending = _Pending(self, rows)
        while (slot := pending.claim()) is not None:
            pending.fill(slot)
        return pending.batch()


class _Pending:
    """A planned batch being decoded: each image is claimed by one thread and written into its slot.

    The (b, H, W, 3) array is allocated once at its final size, so each image is
    copied once, as decoded (no transposing copy), and no torch operation (whose
    intra-op threads would compete with the model's) runs outside the model. The
    batch reaches the model as a (b, 3, H, W) view of it in channels-last memory,
    the layout the model runs fastest on (:data:`MEMORY_FORMAT`).
    """

    def __init__(self, images: _Images, rows: list[int]) -> None:
        self.images = images
        self.rows = rows
        h, w = images.shapes[rows[0]]
        self.pixels = np.empty((len(rows), h, w, 3), np.uint8)
        self.maps = np.empty((len(rows), h, w), np.float32) if images.saliency is not None else None
        self.crops = np.zeros((len(rows), 5), np.int64) if images.preprocess.crop != "none" else None
        self.reasons: dict[int, str] = {}
        self.error: BadInput | None = None  # a damaged cache entry: the extraction stops (Batch.error)
        self.next = 0
        self.left = len(rows)
        self.changed = threading.Condition()

    def claim(self) -> int | None:
        with self.changed:
            if self.next == len(self.rows):
                return None
            self.next += 1
            return self.next - 1

    def fill(self, slot: int) -> None:
        row = self.rows[slot]
        cached = self.images.cached[row] if self.images.cached is not None else None
        try:
            try:
                if cached is None:
                    pixels, box = decode_view(self.images.paths[row], self.images.shapes[row],
                                              self.images.jpeg_draft, self.images.preprocess)
                else:
                    pixels, box = decode_cached(cached, self.images.shapes[row], self.images.preprocess)
            except ImageError as exc:
                self.reasons[slot] = exc.reason
                return
            except BadInput as exc:  # carried to the consumer whole, from a loader process too
                self.error = exc
                return
            self.pixels[slot] = pixels
            if self.crops is not None and box is not None:
                self.crops[slot] = box.row()
            if self.maps is not None:
                from bpcr.features.saliency import saliency_map

                self.maps[slot] = saliency_map(pixels, self.images.saliency)
        finally:
            with self.changed:
                self.left -= 1
                self.changed.notify_all()

    def wait(self) -> None:
        with self.changed:
            self.changed.wait_for(lambda: self.left == 0)

    def batch(self) -> "Batch":
        good = [slot for slot in range(len(self.rows)) if slot not in self.reasons]
        pixels, maps, crops = self.pixels, self.maps, self.crops
        if len(good) < len(self.rows):
            pixels = pixels[good]
            maps = maps[good] if maps is not None else None
            crops = crops[good] if crops is not None else None
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2) if good else None  # channels-last (b, 3, H, W)
        return Batch(rows=[self.rows[s] for s in good], images=images,
                     maps=maps if good else None, failed={self.rows[s]: why for s, why in self.reasons.items()},
                     crops=crops if good else None, error=self.error)


@dataclass
class Batch:
    """One planned batch after decoding: its readable rows stacked, its unreadable rows with reasons."""

    rows: list[int]
    images: torch.Tensor | None  # (b, 3, H, W) uint8, channels-last in memory
    maps: np.ndarray | None  # (b, H, W) float32 saliency
    failed: dict[int, str]
    crops: np.ndarray | None = None  # (b, 5) int64 salient boxes (x0, y0, x1, y1, fallback), when cropped
    error: BadInput | None = None  # a pre-sized cache entry found damaged: the consumer raises it

    def pin_memory(self) -> "Batch":
        # DataLoader(pin_memory=True) calls this, so the copy to the GPU can overlap.
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


class _Batches(Dataset):
    """Item i is planned batch i, decoded whole in a loader worker: one shared-memory tensor per batch."""

    def __init__(self, images: _Images, batches: list[list[int]]) -> None:
        self.images = images
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return self.images.batch(self.batches[i])


# A decoding helper at this niceness gets a core only when the model's threads leave one idle.
HELPER_NICENESS = 19


class _Prefetch:
    """The planned batches, decoded in this process by the consuming thread and one low-priority helper.

    The helper decodes images of the next ``ahead`` batches while the model
    runs, at ``HELPER_NICENESS``, so it takes only cycles the model's threads
    leave idle and never preempts one of them mid-operation (on 2 cores a
    decoder at normal priority stalls the model's parallel regions, which wait
    for their slowest thread). When the model wants a batch, the consuming
    thread decodes whatever of it is still undone, side by side with the
    helper: the cores that would wait decode instead. Pillow decodes and
    resizes without holding the GIL. The results equal a serial decode's:
    every image lands in its own slot.
    """

    def __init__(self, images: _Images, batches: list[list[int]], ahead: int, pin: bool) -> None:
        self.images = images
        self.batches = batches
        self.ahead = max(1, ahead)
        self.pin = pin

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Batch]:
        pending: dict[int, _Pending] = {}
        lock = threading.Condition()
        state = {"current": 0, "stop": False, "error": None}

        def get(k: int) -> _Pending:
            with lock:
                if k not in pending:
                    pending[k] = _Pending(self.images, self.batches[k])
                return pending[k]

        def helper() -> None:
            _lower_priority()
            try:
                k = 0
                while k < len(self.batches):
                    with lock:
                        lock.wait_for(lambda: state["stop"] or k < state["current"] + self.ahead)
                        if state["stop"]:
                            return
                        k = max(k, state["current"])
                        batch = get(k)
                    while not state["stop"] and (slot := batch.claim()) is not None:
                        batch.fill(slot)
                    k += 1
            except BaseException as exc:  # raised in the consuming thread
                state["error"] = exc

        thread = threading.Thread(target=helper, name="bpcr-decode", daemon=True)
        thread.start()
        try:
            for k in range(len(self.batches)):
                batch = get(k)
                while (slot := batch.claim()) is not None:
                    batch.fill(slot)
                batch.wait()
                if state["error"] is not None:
                    raise state["error"]
                with lock:
                    del pending[k]
                    state["current"] = k + 1
                    lock.notify_all()
                done = batch.batch()
                yield done.pin_memory() if self.pin else done
        finally:
            with lock:
                state["stop"] = True
                lock.notify_all()
            thread.join()


def _lower_priority() -> None:
    """Give the calling thread the lowest CPU priority (Linux: niceness is per thread); elsewhere do nothing."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HELPER_NICENESS)
    except (AttributeError, OSError):
        pass


def _init_worker(_: int) -> None:
    # The main process owns the cores for the model; each worker decodes on one.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def batch_loader(paths: Sequence[Path], shapes: Sequence[tuple[int, int]], batches: list[list[int]],
                 saliency: str | None, workers: int | None, dev: torch.device,
                 ahead: int = 2, jpeg_draft: bool = False, preprocess: Preprocess = PLAIN,
                 cached: Sequence[CachedImage | None] | None = None) -> Iterable[Batch]:
    """The planned ``batches`` (lists of manifest rows) as :class:`Batch` objects, in order.

    ``shapes[row]`` is the (h, w) the row is resized to; ``saliency`` the
    method of the maps computed with the images, or None for no maps;
    ``workers`` decoding processes (None: chosen for the device; 0: decoded in
    this process, see :class:`_Prefetch`), each ``ahead`` batches in advance;
    ``jpeg_draft`` and ``preprocess`` (crop, letterbox) as :func:`decode_view`; ``cached``: per row its
    pre-sized copy (:func:`decode_cached`; None: the original) when the manifest has a cache.
    """
    if workers is None:
        # On the CPU the model's threads already use every core, and a decoding process
        # that preempts one of them stalls the whole batch: on 2 cores two workers measured
        # 0.72-0.76 of model-only speed. Decoding in this process (a low-priority helper
        # plus the cores the model leaves waiting) does better: benchmarks/extract_throughput.py.
        # Processes pay off once there are cores to spare, or when the model is on a GPU.
        workers = cores() if dev.type != "cpu" else cores() // 4
    workers = max(0, workers)
    images = _Images(paths, shapes, saliency, jpeg_draft, preprocess, cached)
    if workers == 0:
        return _Prefetch(images, batches, ahead, pin=dev.type == "cuda")
    # forkserver, not fork: forking a process whose torch/OpenMP threads hold locks can leave
    # a worker deadlocked on a lock no thread will ever release.
    return DataLoader(_Batches(images, batches), batch_size=None, shuffle=False, num_workers=workers,
                      worker_init_fn=_init_worker, multiprocessing_context="forkserver",
                      pin_memory=dev.type == "cuda", prefetch_factor=ahead)
