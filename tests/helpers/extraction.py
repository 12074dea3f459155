"""A small extraction set-up: generated images, fast CPU settings, a store's bytes, and a SIGKILLed run."""
from __future__ import annotations

import numpy as np
from PIL import Image

from bpcr.features.options import ExtractOptions

N_IMAGES = 13
FAST = dict(size=64, batch_size=2, chunk_batches=2, workers=0, device="cpu", threads=1)  # chunks of 4 rows


def lite0(poolings, **options) -> ExtractOptions:
    """The options of an extraction with the bundled EfficientNet-Lite0: ``poolings`` and ``options`` (FAST's)."""
    return ExtractOptions(backbone="efficientnet_lite0", poolings=tuple(poolings), **options)


def write_images(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    ids, paths, widths, heights = [], [], [], []
    for k in range(n):
        w, h = int(rng.integers(40, 100)), int(rng.integers(40, 100))
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([(xx * (k + 3)) % 256, (yy * 7 + k * 20) % 256,
                           rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)
        image_id = f"c{k:02d}"
        path = folder / (f"{image_id}.png" if k == 5 else f"{image_id}.jpg")
        Image.fromarray(pixels).save(path)
        ids.append(image_id)
        paths.append(path)
        widths.append(w)
        heights.append(h)
    return ids, paths, widths, heights


def store_bytes(store_dir):
    return (store_dir / "ids.txt").read_bytes(), (store_dir / "features.npy").read_bytes()


def kill_extraction(manifest, out, poolings, after_chunks: int) -> None:
    """Extract in a child process that SIGKILLs itself (no cleanup runs) after ``after_chunks`` chunks."""
    import signal
    import subprocess
    import sys

    script = (
        "import os, signal\n"
        "from bpcr.features.extract import extract\n"
        "from bpcr.features.options import ExtractOptions\n"
        "seen = []\n"
        "def hook(chunk):\n"
        "    seen.append(chunk)\n"
        f"    if len(seen) == {after_chunks}:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        f"extract({str(manifest)!r}, {str(out)!r},\n"
        f"        ExtractOptions(backbone='efficientnet_lite0', poolings={list(poolings)!r}, **{FAST!r}),\n"
        f"        on_chunk=hook)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
