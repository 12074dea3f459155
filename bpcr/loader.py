"""Getting pixels to the model for ``bpcr extract``: shapes, batches, decoding workers, device and threads.

Each image is decoded (``bpcr.images.load_rgb``) and resized in a loader
worker to its :func:`target_shape`, and its saliency map is computed there too
when a pooling needs one. A batch (:func:`batches_of_chunk`) holds one resized
shape only, so its images stack without padding. Which rows make a chunk, and
what the model does with a batch, is :mod:`bpcr.extract`'s.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .errors import BadInput
from .images import ImageError, load_rgb

RESIZE_MODES = ("square", "aspect")


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
    """(h, w) an image is resized to; "aspect": longer side = size, shorter rounded to the stride."""
    if resize == "square" or width <= 0 or height <= 0:
        return size, size
    short = max(stride, round(size * min(width, height) / max(width, height) / stride) * stride)
    short = min(short, size)
    return (size, short) if height >= width else (short, size)


class _Images(Dataset):
    """Decodes, resizes and (when asked) computes saliency, in a loader worker."""

    def __init__(self, paths: Sequence[Path], shapes: Sequence[tuple[int, int]], saliency: str | None) -> None:
        self.paths = paths
        self.shapes = shapes
        self.saliency = saliency

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor | None, np.ndarray | None, str]:
        try:
            image = load_rgb(self.paths[row])
        except ImageError as exc:
            return row, None, None, exc.reason
        h, w = self.shapes[row]
        # reducing_gap=3 shrinks big images by a box filter first: several
        # times faster, visually the same as a direct bicubic resize.
        pixels = np.asarray(image.resize((w, h), Image.BICUBIC, reducing_gap=3.0))
        sal = None
        if self.saliency is not None:
            from .saliency import saliency_map

            sal = saliency_map(pixels, self.saliency)
        return row, torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))), sal, ""


@dataclass
class Batch:
    """One planned batch after decoding: its readable rows stacked, its unreadable rows with reasons."""

    rows: list[int]
    images: torch.Tensor | None  # (b, 3, H, W) uint8
    maps: np.ndarray | None  # (b, H, W) float32 saliency
    failed: dict[int, str]

    def pin_memory(self) -> "Batch":
        # DataLoader(pin_memory=True) calls this, so the copy to the GPU can overlap.
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def _collate(items: list) -> Batch:
    # Stacking here, in the worker, sends one shared-memory tensor per batch
    # to the main process instead of one per image. A planned batch holds one
    # resized shape only, so the images always stack.
    good = [it for it in items if it[1] is not None]
    return Batch(rows=[it[0] for it in good],
                 images=torch.stack([it[1] for it in good]) if good else None,
                 maps=np.stack([it[2] for it in good]) if good and good[0][2] is not None else None,
                 failed={it[0]: it[3] for it in items if it[1] is None})


def _init_worker(_: int) -> None:
    # The main process owns the cores for the model; each worker decodes on one.
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:
        pass


def batch_loader(paths: Sequence[Path], shapes: Sequence[tuple[int, int]], batches: list[list[int]],
                 saliency: str | None, workers: int | None, dev: torch.device) -> DataLoader:
    """The planned ``batches`` (lists of manifest rows) as :class:`Batch` objects, in order.

    ``shapes[row]`` is the (h, w) the row is resized to; ``saliency`` the
    method of the maps computed with the images, or None for no maps;
    ``workers`` decoding processes (None: chosen for the device, 0: decode here).
    """
    if workers is None:
        # On the CPU the model's threads already use every core, and a decoding worker
        # that preempts one of them stalls the whole batch: on 2 cores, decoding in the
        # main process measured 0.79-0.97 of model-only speed, two workers 0.72-0.76.
        # Workers pay off once there are cores to spare, or when the model is on a GPU.
        workers = cores() if dev.type != "cpu" else cores() // 4
    workers = max(0, workers)
    # forkserver, not fork: forking a process whose torch/OpenMP threads hold locks can leave
    # a worker deadlocked on a lock no thread will ever release.
    return DataLoader(_Images(paths, shapes, saliency), batch_sampler=batches, num_workers=workers,
                      collate_fn=_collate, worker_init_fn=_init_worker if workers else None,
                      multiprocessing_context="forkserver" if workers else None,
                      pin_memory=dev.type == "cuda", prefetch_factor=4 if workers else None)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (a CUDA GPU when there is one), ``"cpu"`` or ``"cuda[:N]"`` -> the device; BadInput otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(None, None, f"device {device!r} asked for, but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise BadInput(None, None, f"unknown device {device!r}; use auto, cpu or cuda[:N]") from None


@contextmanager
def cpu_threads(dev: torch.device, threads: int | None) -> Iterator[None]:
    """On the CPU, run the model on ``threads`` threads (default: every core this process may use).

    torch's thread count is restored on the way out, whatever the device.
    """
    saved_threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(max(1, threads or cores()))
        keep_freed_memory()
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)


def keep_freed_memory() -> None:
    """Stop glibc from handing large freed blocks back to the OS after every forward pass.

    A CNN's activations are large, short-lived blocks; by default glibc serves them
    with mmap and returns them with munmap, so each batch page-faults (and zeroes)
    its activations anew. Measured on 2 CPU cores with EfficientNet-Lite0 at 224 px:
    27 -> 68 images/s, system time 7 s -> 1 s per 160 images. No effect off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, (1 << 31) - 1)


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class deterministic:
    """cuDNN picks algorithms by timing unless told not to, which changes result bits between runs."""

    def __init__(self, dev: torch.device) -> None:
        self.cuda = dev.type == "cuda"

    def __enter__(self) -> None:
        if self.cuda:
            self.saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = self.saved
