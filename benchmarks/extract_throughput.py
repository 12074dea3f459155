"""Extraction throughput: the model alone vs the whole `bpcr extract` stage, side by side.

Prints, in one run on the same generated JPEGs (256-512 px by default, made with PIL in a
temporary folder), alternating the two measurements ``--repeats`` times so that
a change in the machine's load hits both:

- model-only images/s: pre-decoded, pre-resized uint8 batches through the same
  normalise -> backbone -> pooling -> L2 code the stage runs (``describe_batch``);
- end-to-end images/s: ``bpcr.features.extract.extract`` from the manifest (decoding,
  resizing, chunk files, store assembly): over the whole call, without the
  start-up (model load, manifest hash, workers), and in steady state (first
  to last batch done, the first batch left out as for model-only's warm-up);
- each repeat's ratio end-to-end / model-only (CPU target: >= 0.95 without
  start-up), beside torch's thread count and the BLAS kernel (threadpoolctl);
- decode + resize alone, ms/image on one core, as a share of the model's time;
- with ``--jpeg-draft``: each repeat runs the stage twice, decoding big JPEGs
  at a reduced scale (``extract(jpeg_draft=True)``) and in full, with both
  ratios, and the cosine between each image's two descriptors (what the
  option changes);
  ``--sides 800-1600`` makes e-commerce-sized images, where it matters;
- with ``--layouts``: model-only in the stage's channels-last layout vs contiguous
  NCHW (batches and network), alternated, as the time ratio the stage's
  ``MEMORY_FORMAT`` comment quotes;
- with ``--device cuda``: the same on the GPU (AMP, channels-last, pinned
  memory, decoding processes), plus JPEG decoding on the GPU
  (``torchvision.io.decode_jpeg(..., device="cuda")``, batched) vs Pillow and
  torchvision on the CPU. It refuses (exit 2) where CUDA is not available.

CPU:  python benchmarks/extract_throughput.py --images 1024 --repeats 3 [--layouts]
      python benchmarks/extract_throughput.py --images 512 --sides 800-1600 [--jpeg-draft]
GPU:  python benchmarks/extract_throughput.py --device cuda --images 20000 --batch-size 256 --repeats 2

Model-only decodes at most ``--model-images`` distinct images once and cycles
through them (the model's speed does not depend on the pixels), so a 20,000-image
GPU run does not spend minutes pre-decoding.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpcr.features.backbones import load_backbone  # noqa: E402
from bpcr.features.extract import PoolingSpec, describe_batch, extract  # noqa: E402
from bpcr.features.options import ExtractOptions  # noqa: E402
from bpcr.dataset.images import load_rgb  # noqa: E402
from bpcr.features.loader import _Images, decode_resized, model_on  # noqa: E402
from bpcr.memory import keep_freed_memory  # noqa: E402
from bpcr.dataset.manifest import write_manifest  # noqa: E402
from bpcr.features.pooling import POOLINGS, check_params  # noqa: E402


def make_jpeg(path: Path, seed: int, sides: tuple[int, int] = (256, 512)) -> tuple[int, int]:
    """A product-photo-like JPEG: smooth gradients, a bright box, mild noise; sides in ``sides`` (inclusive)."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(sides[0], sides[1] + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w * 255, yy / h * 255, (xx + yy) / (w + h) * 255], axis=-1)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    base[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return w, h


def make_jpegs(folder: Path, n: int, seed: int = 0, procs: int = 1,
               sides: tuple[int, int] = (256, 512)) -> tuple[list[str], list[Path], list[int], list[int]]:
    """``n`` JPEGs ``b00000.jpg``...; image k is the same bytes whatever ``procs`` is."""
    ids = [f"b{k:05d}" for k in range(n)]
    paths = [folder / f"{i}.jpg" for i in ids]
    seeds = [seed * 1_000_003 + k for k in range(n)]
    if procs > 1 and n > 64:
        with _pool(procs) as pool:
            sizes = list(pool.map(make_jpeg, paths, seeds, [sides] * n, chunksize=64))
    else:
        sizes = [make_jpeg(p, s, sides) for p, s in zip(paths, seeds)]
    return ids, paths, [w for w, _ in sizes], [h for _, h in sizes]


def _batch(paths: list[Path], size: int) -> torch.Tensor:
    """Decoded exactly as the stage decodes: its (b, 3, H, W) uint8 batch, channels-last in memory."""
    return _Images(paths, [(size, size)] * len(paths), None).batch(list(range(len(paths)))).images


class ModelOnly:
    """The stage's per-batch model code on pre-decoded batches, cycled to ``n`` images.

    The batches and the network are laid out in memory as the stage lays them
    out (``layout="stage"``); ``layout="nchw"`` copies both to contiguous NCHW,
    the layout the stage used before, for ``--layouts``.
    """

    def __init__(self, backbone: str, paths: list[Path], size: int, batch_size: int, dev: torch.device,
                 procs: int, layout: str = "stage") -> None:
        groups = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        if procs > 1:
            with _pool(procs) as pool:
                self.batches = list(pool.map(_batch, groups, [size] * len(groups)))
        else:
            self.batches = [_batch(g, size) for g in groups]
        self.dev = dev
        self.net = model_on(load_backbone(backbone), dev)
        if layout == "nchw":
            self.net = self.net.to(memory_format=torch.contiguous_format)
            self.batches = [b.contiguous() for b in self.batches]
        self.layout = layout
        self.spec = [PoolingSpec("gem", check_params("gem"), None)]
        self.precision = "float16" if dev.type == "cuda" else "float32"
        if dev.type == "cuda":
            self.batches = [b.pin_memory() for b in self.batches]
        self.batch_size = batch_size

    def run(self, n: int) -> float:
        """images/s over ``n`` images after one warm-up batch."""
        self._one(self.batches[0])
        _sync(self.dev)
        done, k = 0, 0
        start = time.perf_counter()
        while done < n:
            batch = self.batches[k % len(self.batches)]
            self._one(batch)
            done += len(batch)
            k += 1
        _sync(self.dev)
        return done / (time.perf_counter() - start)

    def _one(self, batch: torch.Tensor) -> None:
        x = batch.to(self.dev, non_blocking=True)
        if self.layout == "nchw":
            # what describe_batch did before: no channels-last copy on the CPU
            with torch.inference_mode():
                fmap = self.net(self.net.normalise(x))
            POOLINGS["gem"](fmap.float(), **self.spec[0].params)
            return
        describe_batch(self.net, x, None, self.spec, (1.0,), False, self.dev, self.precision)


def end_to_end(backbone: str, manifest: Path, out: Path, n: int, size: int, batch_size: int, workers: int | None,
               device: str, threads: int | None, jpeg_draft: bool = False) -> dict[str, float]:
    """images/s of one ``extract`` call: whole, without start-up, steady state (first to last batch)."""
    marks: list[tuple[float, int]] = []

    class _Progress:
        def __call__(self, label, total, done=0):
            return self

        def __enter__(self):
            return lambda k=1: marks.append((time.perf_counter(), k))

        def __exit__(self, *exc):
            return False

    start = time.perf_counter()
    extract(manifest, out, ExtractOptions(backbone=backbone, poolings=["gem"], size=size, batch_size=batch_size,
                                          workers=workers, device=device, threads=threads, jpeg_draft=jpeg_draft),
            progress=_Progress())
    end = time.perf_counter()
    first_t, first_k = marks[0]  # the first batch done
    steady_n = n - first_k
    steady_s = max(marks[-1][0] - first_t, 1e-9)
    # Start-up: time to the first batch done, less what that batch takes in steady state.
    startup = max(0.0, first_t - start - steady_s / max(steady_n, 1) * first_k)
    return {"whole": n / (end - start), "no_startup": n / (end - start - startup), "steady": steady_n / steady_s,
            "startup_s": startup, "finish_s": end - marks[-1][0]}


def compare_layouts(stage: ModelOnly, nchw: ModelOnly, n: int, repeats: int) -> None:
    """Model-only images/s in the stage's layout and in contiguous NCHW, alternated ``repeats`` times."""
    ratios = []
    for r in range(repeats):
        a, b = stage.run(n), nchw.run(n)
        ratios.append(b / a)
        print(f"[layout {r + 1}] model-only channels-last {a:7.1f} | NCHW {b:7.1f} images/s | "
              f"NCHW time / channels-last time {a / b:.2f}")
    print(f"channels-last time / NCHW time: median {statistics.median(ratios):.2f} over {repeats} repeats")


def decode_share(paths: list[Path], size: int, model_ips: float, threads: int, jpeg_draft: bool = False) -> str:
    """Decode + resize on one core, ms/image, and its share of the model's CPU time."""
    k = min(len(paths), 64)
    start = time.process_time()
    for p in paths[:k]:
        decode_resized(p, (size, size), jpeg_draft)
    ms = (time.process_time() - start) / k * 1e3
    model_cpu_ms = threads * 1e3 / model_ips
    how = "JPEG draft decode" if jpeg_draft else "decode"
    return f"{how}+resize {ms:.2f} ms/image on one core = {ms / model_cpu_ms:.0%} of the model's CPU time " \
           f"({model_cpu_ms:.1f} ms/image on {threads} threads); the CPU ratio's ceiling on {threads} cores " \
           f"about {1 / (1 + ms / model_cpu_ms):.2f}"


def draft_agreement(folder: Path, outs: list[Path]) -> str:
    """Cosine between each image's descriptor from a full decode and from a draft decode (same store, same row)."""
    full = np.asarray(np.load(outs[0] / "gem" / "features.npy"), np.float32)
    draft = np.asarray(np.load(outs[1] / "gem" / "features.npy"), np.float32)
    cos = (full * draft).sum(1)
    return f"descriptor cosine, draft vs full decode: mean {cos.mean():.4f}, min {cos.min():.4f}, " \
           f"median {np.median(cos):.4f} over {len(cos)} images"


def gpu_decode(paths: list[Path], batch: int = 64) -> None:
    from torchvision.io import decode_jpeg, read_file

    paths = paths[:2048]
    data = [read_file(str(p)) for p in paths]
    start = time.perf_counter()
    for p in paths[:512]:
        load_rgb(p)
    pil = min(len(paths), 512) / (time.perf_counter() - start)
    start = time.perf_counter()
    for d in data[:512]:
        decode_jpeg(d)
    tv_cpu = min(len(paths), 512) / (time.perf_counter() - start)
    decode_jpeg(data[:8], device="cuda")  # warm-up: nvJPEG handle, allocations
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(data), batch):
        decode_jpeg(data[i:i + batch], device="cuda")
    torch.cuda.synchronize()
    gpu = len(data) / (time.perf_counter() - start)
    print(f"JPEG decode, images/s: Pillow (load_rgb, 1 core) {pil:.0f} | torchvision CPU {tv_cpu:.0f} | "
          f"torchvision GPU (nvJPEG, batches of {batch}) {gpu:.0f} | GPU/Pillow {gpu / pil:.1f}x")


def _pool(procs: int) -> ProcessPoolExecutor:
    # forkserver, as bpcr's loader: a fork of a process with torch's threads running can deadlock.
    return ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("forkserver"))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _kernels() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = [f"{i['internal_api']} {i.get('architecture') or ''} x{i['num_threads']}".replace("  ", " ")
             for i in threadpool_info()]
    return ", ".join(parts) or "none loaded"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: extract's own; 0: one decoding thread)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: extract's own)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (refused where CUDA is missing)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-images", type=int, default=2048, help="distinct images decoded for model-only")
    parser.add_argument("--sides", default="256-512", help="generated image sides in pixels, MIN-MAX")
    parser.add_argument("--jpeg-draft", action="store_true",
                        help="end-to-end with extract(jpeg_draft=True), and one full-decode run to compare with")
    parser.add_argument("--layouts", action="store_true",
                        help="also model-only in the stage's channels-last layout vs contiguous NCHW, alternated")
    args = parser.parse_args()
    sides = tuple(int(v) for v in args.sides.split("-"))
    if len(sides) != 2 or not 16 <= sides[0] <= sides[1]:
        print(f"--sides {args.sides}: give MIN-MAX with 16 <= MIN <= MAX", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device}: no CUDA GPU here (torch {torch.__version__}); run with --device cpu",
              file=sys.stderr)
        return 2
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else "cpu" if args.device == "auto" else args.device)
    cores = len(os.sched_getaffinity(0))
    # extract sets torch's threads to this for its run and restores them after; model-only uses the same.
    threads = args.threads or cores
    torch.set_num_threads(threads)
    if dev.type == "cpu":
        keep_freed_memory()  # as extract does, so both sides allocate the same way
    procs = cores if dev.type == "cuda" else 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        start = time.perf_counter()
        ids, paths, widths, heights = make_jpegs(folder / "images", args.images, procs=max(procs, 1), sides=sides)
        write_manifest(folder / "db.csv", ids, paths, widths, heights, [""] * len(ids))
        gen_s = time.perf_counter() - start
        model = ModelOnly(args.backbone, paths[:args.model_images], args.size, args.batch_size, dev, procs)
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{cores} CPU cores"
        print(f"{args.images} JPEGs {sides[0]}-{sides[1]} px (made in {gen_s:.0f} s), {args.backbone} at {args.size} px, "
              f"batch {args.batch_size}, {name}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
              f"workers {args.workers if args.workers is not None else 'default'}, "
              f"decoding {'JPEG draft' if args.jpeg_draft else 'full'}")
        print(f"kernels: {_kernels()}")
        ratios, full_ratios = [], []
        for r in range(args.repeats):
            load = os.getloadavg()[0]
            m = model.run(args.images)
            e = end_to_end(args.backbone, folder / "db.csv", folder / f"out{r}", args.images, args.size,
                           args.batch_size, args.workers, dev.type, args.threads, args.jpeg_draft)
            if args.jpeg_draft:  # the full decode in the same repeat, for the side-by-side ratio
                f = end_to_end(args.backbone, folder / "db.csv", folder / f"full{r}", args.images, args.size,
                               args.batch_size, args.workers, dev.type, args.threads)
            m2 = model.run(args.images)
            # model-only before and after, so a load change during the repeat shows as their spread
            mm = (m + m2) / 2
            ratios.append(e["no_startup"] / mm)
            how = "draft end-to-end" if args.jpeg_draft else "end-to-end"
            print(f"[{r + 1}] model-only {m:7.1f} / {m2:7.1f} images/s | {how} whole {e['whole']:7.1f}, "
                  f"without start-up ({e['startup_s']:.1f} s) {e['no_startup']:7.1f}, steady {e['steady']:7.1f} "
                  f"images/s | ratio {e['no_startup'] / mm:.2f} (steady {e['steady'] / mm:.2f}, "
                  f"whole {e['whole'] / mm:.2f}) | torch threads {torch.get_num_threads()} | load {load:.1f}")
            if args.jpeg_draft:
                full_ratios.append(f["no_startup"] / mm)
                print(f"    full-decode end-to-end without start-up {f['no_startup']:7.1f} images/s | "
                      f"ratio {f['no_startup'] / mm:.2f} | draft / full {e['no_startup'] / f['no_startup']:.2f}")
        print(f"ratio without start-up: median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} repeats")
        if args.jpeg_draft:
            print(f"full decode: median {statistics.median(full_ratios):.2f}, "
                  f"range {min(full_ratios):.2f}-{max(full_ratios):.2f}")
            print(draft_agreement(folder, [folder / "full0", folder / "out0"]))
        if args.layouts:
            compare_layouts(model, ModelOnly(args.backbone, paths[:args.model_images], args.size, args.batch_size,
                                             dev, procs, layout="nchw"), args.images, args.repeats)
        if dev.type == "cpu":
            model_ips = model.run(min(args.images, 128))
            print(decode_share(paths, args.size, model_ips, threads))
            if args.jpeg_draft:
                print(decode_share(paths, args.size, model_ips, threads, jpeg_draft=True))
        else:
            gpu_decode(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
