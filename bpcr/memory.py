"""Process-wide memory settings for workers that allocate large short-lived buffers."""
from __future__ import annotations


def keep_freed_memory() -> None:
    """Stop glibc from handing large freed blocks back to the OS after every use.

    Large, short-lived blocks (a CNN's activations, SIFT's scale-space pyramid)
    are by default served with mmap and returned with munmap, so every image
    page-faults (and zeroes) them anew. Measured on 2 CPU cores: EfficientNet-Lite0
    at 224 px 27 -> 68 images/s (system time 7 s -> 1 s per 160 images); SIFT on a ~375 px image 2.5 -> 0.2 ms of system
    time. No effect off glibc.
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
