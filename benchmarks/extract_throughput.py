"""Extraction throughput: the model alone vs the whole `bpcr extract` stage, side by side.

Prints, in one run on the same generated JPEGs (256-512 px, made with PIL in a
temporary folder):

- model-only images/s: pre-decoded, pre-resized uint8 tensors through the
  same normalise -> backbone -> pooling -> L2 code the stage runs;
- end-to-end images/s: ``bpcr.extract.extract`` from the manifest (decoding
  in loader workers, resizing, chunk files, store assembly), with and without
  its fixed start-up (model load, worker start);
- their ratio (target: >= 0.85 on CPU at 224 px);
- with CUDA: JPEG decoding on the GPU (``torchvision.io.decode_jpeg(...,
  device="cuda")``, batched) vs on the CPU (Pillow through ``load_rgb``, and
  torchvision's CPU decoder), images/s.

Usage: python benchmarks/extract_throughput.py [--images 256] [--size 224] [--device auto]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpcr.backbones import load_backbone  # noqa: E402
from bpcr.extract import PoolingSpec, _describe, extract  # noqa: E402
from bpcr.loader import keep_freed_memory, resolve_device  # noqa: E402
from bpcr.images import load_rgb  # noqa: E402
from bpcr.manifest import write_manifest  # noqa: E402
from bpcr.pooling import check_params  # noqa: E402


def make_jpegs(folder: Path, n: int, seed: int = 0) -> tuple[list[str], list[Path], list[int], list[int]]:
    """Product-photo-like JPEGs: smooth gradients, a bright box, mild noise; 256-512 px sides."""
    rng = np.random.default_rng(seed)
    ids, paths, widths, heights = [], [], [], []
    for k in range(n):
        w, h = int(rng.integers(256, 513)), int(rng.integers(256, 513))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        base[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = folder / f"b{k:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        ids.append(path.stem)
        paths.append(path)
        widths.append(w)
        heights.append(h)
    return ids, paths, widths, heights


def model_only(backbone: str, paths: list[Path], size: int, batch_size: int, dev: torch.device, threads: int) -> float:
    torch.set_num_threads(threads)
    if dev.type == "cpu":
        keep_freed_memory()  # as extract does, so both sides allocate the same way
    net = load_backbone(backbone).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    spec = [PoolingSpec("gem", check_params("gem"), None)]
    images = [torch.from_numpy(np.asarray(load_rgb(p).resize((size, size), Image.BICUBIC)).transpose(2, 0, 1).copy())
              for p in paths]
    batches = [torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    precision = "float16" if dev.type == "cuda" else "float32"
    _describe(net, batches[0].to(dev), None, spec, (1.0,), False, dev, precision)  # warm-up
    _sync(dev)
    start = time.perf_counter()
    for batch in batches:
        _describe(net, batch.to(dev), None, spec, (1.0,), False, dev, precision)
    _sync(dev)
    return len(images) / (time.perf_counter() - start)


def end_to_end(backbone: str, manifest: Path, out: Path, size: int, batch_size: int, workers: int | None,
               device: str, threads: int) -> tuple[float, float]:
    start = time.perf_counter()
    load_backbone(backbone)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    stores = extract(manifest, out, backbone, ["gem"], size=size, batch_size=batch_size, workers=workers,
                     device=device, threads=threads)
    wall = time.perf_counter() - start
    n = len((stores["gem"] / "ids.txt").read_text().splitlines())
    return n / wall, n / max(wall - load_s, 1e-9)


def gpu_decode(paths: list[Path]) -> None:
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(p)) for p in paths]
    start = time.perf_counter()
    for p in paths:
        load_rgb(p)
    pil = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()
    for d in data:
        decode_jpeg(d)
    tv_cpu = len(paths) / (time.perf_counter() - start)
    decode_jpeg(data[:8], device="cuda")  # warm-up: nvJPEG handle, allocations
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(data), 64):
        decode_jpeg(data[i:i + 64], device="cuda")
    torch.cuda.synchronize()
    gpu = len(paths) / (time.perf_counter() - start)
    print(f"JPEG decode, images/s: Pillow (load_rgb, 1 core) {pil:.0f} | torchvision CPU {tv_cpu:.0f} | "
          f"torchvision GPU (nvJPEG, batches of 64) {gpu:.0f} | GPU/Pillow {gpu / pil:.1f}x")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: extract's own)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or cores
    dev = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        ids, paths, widths, heights = make_jpegs(folder / "images", args.images)
        write_manifest(folder / "db.csv", ids, paths, widths, heights, [""] * len(ids))
        print(f"{args.images} JPEGs 256-512 px, {args.backbone} at {args.size} px, batch {args.batch_size}, "
              f"device {dev.type}, {cores} cores, torch threads {threads}, load average {os.getloadavg()[0]:.1f}")
        model = model_only(args.backbone, paths, args.size, args.batch_size, dev, threads)
        e2e, e2e_steady = end_to_end(args.backbone, folder / "db.csv", folder / "out", args.size, args.batch_size,
                                     args.workers, args.device, threads)
        print(f"model-only     {model:8.1f} images/s")
        print(f"end-to-end     {e2e:8.1f} images/s  (ratio {e2e / model:.2f})")
        print(f"  without load {e2e_steady:8.1f} images/s  (ratio {e2e_steady / model:.2f})")
        if dev.type == "cuda":
            gpu_decode(paths)


if __name__ == "__main__":
    main()
