"""What every benchmark prints beside its ratios: the BLAS kernel numpy runs on, and peak memory.

Imported by the scripts in this folder (``from common import ...``: a script's own
folder is first on ``sys.path``).
"""
from __future__ import annotations

import resource
from pathlib import Path


def blas_kernel() -> str:
    """The BLAS libraries loaded in this process: library, version, kernel (architecture), threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    import numpy as np  # noqa: F401  (loads the BLAS that threadpoolctl reports)

    found = [f"{i.get('internal_api')} {i.get('version') or ''} ({i.get('architecture') or '?'}, "
             f"{i.get('num_threads')} threads)" for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(found) or "no BLAS loaded"


def peak_rss_bytes() -> int:
    """This process's peak resident memory. VmHWM first: Linux carries ru_maxrss across exec,
    so a child could report its parent's peak when that was higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
