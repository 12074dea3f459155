"""Which device runs the networks and the exact scans, and how many CPU threads they get."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch

from bpcr.errors import BadInput
from bpcr.memory import keep_freed_memory


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
