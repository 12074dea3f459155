"""The pre-sized image cache (``bpcr prepare --presize``): what extraction from it gains and what it changes.

In one run, on the same generated product photos (800-1600 px JPEGs at q90, as shops publish them: a studio
backdrop, a shaded bottle with a cap and a printed label, a soft shadow, lens blur and sensor noise), made in
a temporary folder and prepared three times (without a cache, with a JPEG cache, with a PNG cache):

- bytes per image of the originals and of each cache, and extrapolated to Perfect-500K's 500,000 images; the
  time ``prepare`` spends making each cache (the one-time cost, decoding every image once more);
- model-only images/s (pre-decoded, pre-resized batches through the stage's own per-batch code,
  ``extract_throughput.ModelOnly``) and ``bpcr extract`` images/s from the originals, from the JPEG cache and
  from the PNG cache (``extract_throughput.end_to_end``, without start-up), alternated ``--repeats`` times, a
  model-only run before and after each extraction: each extraction's ratio is to the mean of the two beside it,
  so that a change in the machine's load hits both sides of a ratio, and a ratio whose two model-only runs differ
  by more than ``UNSTEADY`` (the load changed during it) is marked ``!`` and left out of the medians (target
  for a network extracted from the cache: >= 0.95); ``--threads 1`` leaves a core to decoding on two;
- the cosine between each image's descriptor from the cache and from the full decode (mean, min, median);
- decode + resize alone, ms/image on one core, from an original and from each cache, beside the model's own CPU
  time per image on one thread (process time: what other jobs on the machine do not change), and the ratio
  each leaves when decoding takes its time from the model's cores (the serial bound, 1 / (1 + decode/model));
- the BLAS kernel numpy runs on (threadpoolctl) and torch's threads, beside the load average.

The working size is the kit's rule (bpcr.dataset.presize.cached_size): shorter side the largest of ``--presize``
(default the input sizes of EfficientNet-Lite0/1/2, 224,240,260), longer side at least SIFT's 384.

``--sweep SIDE[,SIDE...]`` measures what bounds the cosine instead of the throughput: for each working shorter
side, a JPEG and a PNG cache made by ``prepare --presize SIDE``, each extracted, and their bytes per image and
descriptor cosine to the full decode printed (the second resampling, from the cache to the input size, costs
more the closer the cache is to the input size; the JPEG's storage error adds to it).

CPU:   python benchmarks/presize.py                       (200 images, lite0 at 224 px, 2 repeats)
       python benchmarks/presize.py --threads 1 --repeats 3    (the model on one core, decoding beside it)
       python benchmarks/presize.py --sweep 260,448,672   (cosine and bytes by working size, no timing)
       python benchmarks/presize.py --smoke               (8 images at 64 px, one repeat: does it run)
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
from PIL import Image, ImageDraw, ImageFilter, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import blas_kernel, peak_rss_bytes  # noqa: E402
from extract_throughput import ModelOnly, end_to_end  # noqa: E402

from bpcr.dataset.options import PrepareOptions, PresizeOptions  # noqa: E402
from bpcr.dataset.prepare import prepare  # noqa: E402
from bpcr.dataset.presize import cache_spec, presized  # noqa: E402
from bpcr.dataset.manifest import read_manifest  # noqa: E402
from bpcr.features.loader import decode_cached, decode_resized  # noqa: E402
from bpcr.io.fileio import sha256_file  # noqa: E402
from bpcr.memory import keep_freed_memory  # noqa: E402

PERFECT_500K = 500_000
UNSTEADY = 0.2  # model-only before and after an extraction differing by more than this share: the load changed
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 "


def make_product_jpeg(path: Path, seed: int, sides: tuple[int, int] = (800, 1600)) -> tuple[int, int]:
    """A product shot of ``sides`` px (inclusive): studio backdrop, a cylinder-shaded bottle and cap, a label with
    lines of text in several sizes and a ring logo, a soft shadow; lens blur, sensor noise, JPEG q90."""
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(sides[0], sides[1] + 1)), int(rng.integers(sides[0], sides[1] + 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    vignette = (xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2
    canvas = np.clip(250 - 18 * (yy / h)[..., None] - 40 * vignette[..., None] + rng.uniform(-8, 8, 3), 0, 255)
    bw, bh = w * rng.uniform(0.25, 0.45), h * rng.uniform(0.45, 0.7)
    cx, top = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.15, 0.3)
    x0, x1, y0, y1 = cx - bw / 2, cx + bw / 2, top, top + bh
    small = (max(1, w // 8), max(1, h // 8))  # the shadow is soft: drawn and blurred at 1/8 scale
    shadow = Image.new("L", small, 0)
    ImageDraw.Draw(shadow).ellipse([x0 / 8, (y1 - bh * 0.04) / 8, (x1 + bw * 0.3) / 8, (y1 + bh * 0.06) / 8],
                                   fill=120)
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(w, h) / 480)).resize((w, h), Image.BILINEAR)
    canvas *= 1 - 0.5 * (np.asarray(shadow, np.float32) / 255)[..., None]
    body, cap = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
    ImageDraw.Draw(body).rounded_rectangle([x0, y0, x1, y1], radius=bw * 0.15, fill=255)
    ImageDraw.Draw(cap).rounded_rectangle([cx - bw * 0.2, y0 - bh * 0.15, cx + bw * 0.2, y0 + 2], radius=bw * 0.05,
                                          fill=255)
    u = np.clip((xx[:1] - x0) / max(bw, 1), 0, 1)  # one row: the shading runs across the bottle
    light = (0.55 + 0.45 * np.clip(np.sin(np.pi * u), 0, 1) ** 0.7 + 0.25 * np.exp(-((u - 0.3) / 0.06) ** 2))
    light = light[..., None]
    for mask, colour in ((body, rng.uniform(40, 230, 3)), (cap, rng.uniform(10, 240, 3))):
        m = np.asarray(mask, np.float32)[..., None] / 255
        canvas = canvas * (1 - m) + np.clip(colour * light, 0, 255) * m
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    lx0, lx1, ly0 = x0 + bw * 0.1, x1 - bw * 0.1, y0 + bh * rng.uniform(0.25, 0.4)
    ly1 = ly0 + bh * rng.uniform(0.3, 0.45)
    draw.rectangle([lx0, ly0, lx1, ly1], fill=tuple(int(v) for v in rng.uniform(200, 255, 3)))
    ink = tuple(int(v) for v in rng.uniform(0, 90, 3))
    y = ly0 + (ly1 - ly0) * 0.05
    for share in (0.12, 0.07, 0.05, 0.035, 0.035, 0.025):
        px = max(8, int(bw * share))
        if y + px > ly1:
            break
        text = "".join(rng.choice(list(LETTERS), int(rng.integers(6, 18))))
        draw.text((lx0 + bw * 0.04, y), text, fill=ink, font=ImageFont.load_default(size=px))
        y += px * 1.4
    rx, ry = cx + bw * 0.2, ly1 - bh * 0.08
    for k in range(4):
        r = bw * 0.08 * (1 - k * 0.22)
        draw.ellipse([rx - r, ry - r, rx + r, ry + r], outline=ink, width=max(1, int(bw * 0.006)))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)), np.float32)
    pixels = np.clip(pixels + rng.normal(0, 2.5, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return w, h


def make_photos(folder: Path, n: int, procs: int, sides: tuple[int, int]) -> list[Path]:
    """``n`` photos ``p00000.jpg``...; photo k is the same bytes whatever ``procs`` is."""
    paths = [folder / f"p{k:05d}.jpg" for k in range(n)]
    if procs > 1 and n > 16:
        with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("forkserver")) as pool:
            list(pool.map(make_product_jpeg, paths, range(n), [sides] * n, chunksize=8))
    else:
        for k, p in enumerate(paths):
            make_product_jpeg(p, k, sides)
    return paths


def cosines(a: Path, b: Path) -> np.ndarray:
    x = np.asarray(np.load(a / "features.npy"), np.float32)
    y = np.asarray(np.load(b / "features.npy"), np.float32)
    return (x * y).sum(axis=1)


def decode_ms(prepared: Path, size: int, k: int = 48) -> float:
    """Decode + resize to size x size of ``k`` rows of ``prepared``'s database manifest, ms/image of one core's time
    (from the cache when the manifest has one, as extraction reads it)."""
    manifest = read_manifest(prepared / "database.csv")
    cache = presized(manifest, sha256_file(manifest.path))
    start = time.process_time()
    for row in range(min(k, len(manifest))):
        entry = cache.images[row] if cache is not None else None
        if entry is None:
            decode_resized(manifest.paths[row], (size, size))
        else:
            decode_cached(entry, (size, size))
    return (time.process_time() - start) / min(k, len(manifest)) * 1e3


def per_image_bytes(made: dict) -> float:
    """A cache's bytes per image it holds, from prepare's summary of it (``PrepareSummary.presize``)."""
    return made["bytes"] / max(sum(made["cached"].values()), 1)


def sweep(root: Path, paths: list[Path], sides: list[int], args: argparse.Namespace, cores: int, threads: int) -> int:
    """``--sweep``: per working shorter side and storage, bytes per image and the descriptor cosine to the full decode
    (every cache made by ``prepare --presize SIDE`` and read by ``bpcr extract``, as a user's would be)."""
    def extracted(name: str, presize: PresizeOptions | None) -> tuple[Path, dict | None]:
        made = prepare(root / "db", None, root / "q", None, root / name, PrepareOptions(workers=cores),
                       presize=presize).presize
        end_to_end(args.backbone, root / name / "database.csv", root / f"out-{name}", len(paths), args.size,
                   args.batch_size, None, "cpu", threads)
        return root / f"out-{name}" / "gem", made

    full, _ = extracted("originals", None)
    print(f"{len(paths)} photos, {args.backbone} at {args.size} px square; cosine of each cache's GeM descriptor to "
          f"the full decode's; the longer side at least SIFT's {PresizeOptions.presize_sift_side}")
    print(f"{'shorter side':>12s} {'format':>6s} {'kB/image':>9s} {'500K images':>12s} {'cos mean':>9s} "
          f"{'cos min':>8s} {'cos median':>10s}")
    for side in sides:
        for form in ("jpeg", "png"):
            store, made = extracted(f"{form}-{side}", PresizeOptions((side,), presize_format=form,
                                                                     presize_quality=args.quality))
            per, cos = per_image_bytes(made), cosines(full, store)
            print(f"{side:12d} {form:>6s} {per / 1e3:9.1f} {per * PERFECT_500K / 1e9:9.1f} GB {cos.mean():9.4f} "
                  f"{cos.min():8.4f} {np.median(cos):10.4f}   ({made['cached']['database']} of {len(paths)} images "
                  f"shrunk)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="the network's input size")
    parser.add_argument("--presize", default="224,240,260", help="the sizes the cache serves (bpcr prepare --presize)")
    parser.add_argument("--quality", type=int, default=95, help="the JPEG cache's quality")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: every core)")
    parser.add_argument("--sides", default="800-1600", help="generated photo sides in pixels, MIN-MAX")
    parser.add_argument("--smoke", action="store_true", help="8 photos of 400-600 px, 64 px, one repeat")
    parser.add_argument("--sweep", default=None, metavar="SIDE[,SIDE...]",
                        help="instead of timing: the cosine and bytes of a cache at each working shorter side")
    args = parser.parse_args()
    if args.smoke:
        args.images, args.size, args.presize, args.repeats, args.sides, args.batch_size = 8, 64, "64", 1, "400-600", 4
    sides = tuple(int(v) for v in args.sides.split("-"))
    sizes = tuple(int(v) for v in args.presize.split(","))
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or cores
    torch.set_num_threads(threads)  # extract sets the same for its runs
    keep_freed_memory()  # as extract does, so every side allocates the same way
    dev = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "db").mkdir()
        (root / "q").mkdir()
        start = time.perf_counter()
        paths = make_photos(root / "db", args.images, cores, sides)
        make_product_jpeg(root / "q" / "q0.jpg", 10**6, sides)  # prepare wants a query folder
        gen_s = time.perf_counter() - start
        if args.sweep:
            return sweep(root, paths, [int(v) for v in args.sweep.split(",")], args, cores, threads)
        forms = {"originals": None, "jpeg": PresizeOptions(sizes, presize_format="jpeg", presize_quality=args.quality),
                 "png": PresizeOptions(sizes, presize_format="png")}
        made = {}
        for name, presize in forms.items():
            made[name] = prepare(root / "db", None, root / "q", None, root / name, PrepareOptions(workers=cores),
                                 presize=presize).presize
        spec = cache_spec(forms["jpeg"])
        print(f"{args.images} photos {sides[0]}-{sides[1]} px (made in {gen_s:.0f} s), {args.backbone} at "
              f"{args.size} px square, batch {args.batch_size}, {cores} CPU cores, torch {torch.__version__}, torch threads "
              f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
        print(f"BLAS: {blas_kernel()}")
        print(f"cache: --presize {','.join(map(str, sizes))} -> shorter side {spec['short_side']}, longer side at "
              f"least {spec['long_side']} (SIFT's); JPEG q{args.quality} 4:4:4 or PNG")
        original_bytes = sum(p.stat().st_size for p in paths)
        print(f"{'form':10s} {'kB/image':>9s} {'500K images':>12s} {'made in':>9s}  images shrunk")
        print(f"{'originals':10s} {original_bytes / len(paths) / 1e3:9.1f} "
              f"{original_bytes / len(paths) * PERFECT_500K / 1e9:10.1f} GB {'':>9s}")
        for name in ("jpeg", "png"):
            m = made[name]
            shrunk = m["cached"]["database"]
            per = per_image_bytes(m)
            print(f"{name:10s} {per / 1e3:9.1f} {per * PERFECT_500K / 1e9:10.1f} GB {m['seconds']:7.1f} s  "
                  f"{shrunk}/{len(paths)} ({m['seconds'] / (len(paths) + 1) * 1e3 * cores:.0f} ms of CPU per image "
                  f"to make)")
        model = ModelOnly(args.backbone, paths, args.size, args.batch_size, dev, 1)
        ratios: dict[str, list[float]] = {name: [] for name in forms}
        for r in range(args.repeats):
            load = os.getloadavg()[0]
            before, parts = model.run(args.images), []
            for name in forms:
                e = end_to_end(args.backbone, root / name / "database.csv", root / f"out-{name}-{r}", args.images,
                               args.size, args.batch_size, None, "cpu", threads)
                after = model.run(args.images)
                beside = (before + after) / 2
                steady = abs(before - after) <= UNSTEADY * beside
                if steady:
                    ratios[name].append(e["no_startup"] / beside)
                parts.append(f"{name} {e['no_startup']:5.1f} ({e['no_startup'] / beside:.2f}{'' if steady else '!'}; "
                             f"model {before:.1f}/{after:.1f})")
                before = after
            print(f"[{r + 1}] extract without start-up, images/s (ratio to model-only beside it): "
                  f"{' | '.join(parts)} | load {load:.1f}")
        for name in forms:
            if not ratios[name]:
                print(f"{name:10s} extraction / model-only: no steady repeat (the load changed during every one)")
                continue
            print(f"{name:10s} extraction / model-only: median {statistics.median(ratios[name]):.2f}, range "
                  f"{min(ratios[name]):.2f}-{max(ratios[name]):.2f} over {len(ratios[name])} steady of "
                  f"{args.repeats} repeats")
        if all(ratios.values()):
            gain = {name: statistics.median(ratios[name]) / statistics.median(ratios["originals"]) for name in forms}
            print(f"cache / originals, ratio to ratio: JPEG {gain['jpeg']:.2f}x, PNG {gain['png']:.2f}x the images/s")
        for name in ("jpeg", "png"):
            cos = cosines(root / "out-originals-0" / "gem", root / f"out-{name}-0" / "gem")
            print(f"descriptor cosine, {name} cache vs full decode (gem): mean {cos.mean():.4f}, min {cos.min():.4f}, "
                  f"median {np.median(cos):.4f} over {len(cos)} images")
        torch.set_num_threads(1)
        batches = model.batches[:max(1, 64 // args.batch_size)]
        model._one(batches[0])  # warm-up on one thread
        start, count = time.process_time(), 0
        for batch in batches:
            model._one(batch)
            count += len(batch)
        model_ms = (time.process_time() - start) / count * 1e3
        decode = {name: decode_ms(root / name, args.size) for name in forms}
        print("decode+resize on one core, ms/image: " + ", ".join(f"{n} {ms:.2f}" for n, ms in decode.items())
              + f"; the model {model_ms:.1f} ms of CPU per image on one thread; serial bound 1/(1+decode/model): "
              + ", ".join(f"{n} {1 / (1 + ms / model_ms):.2f}" for n, ms in decode.items()))
        print(f"peak memory {peak_rss_bytes() / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
