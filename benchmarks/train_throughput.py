"""Training throughput of `bpcr train` beside forward-only extraction speed, measured in the same run.

Prints, per device (the CPU always, CUDA when there is one), for one backbone
(default EfficientNet-Lite0 at 224 px) on generated product-like JPEGs:

- forward-only images/s: pre-decoded uint8 batches through the descriptor
  (normalise -> backbone -> GeM -> L2), no gradients: what extraction costs;
- train-step images/s: the same batches through forward, the robust
  contrastive + softmax loss over 004's tuples, backward and an SGD step, with
  the stages ``bpcr train`` trains by default on that device (CPU: the last
  stage; GPU: all, with AMP), and with every stage, channels-last on both;
- end-to-end training images/s: one epoch of ``bpcr.training.train.train`` (decoding,
  simulated phone photos, batches, steps; the per-epoch mining pass and the
  validation are timed apart and left out, as ``train.json`` reports them);
- each as a ratio to forward-only, and the BLAS that numpy uses
  (threadpoolctl) with torch's thread count beside it.

004 §4.5 extracts 1,000 images in 3.1 s (about 320 images/s) on a Titan X;
the GPU target for training Lite0 at 224 px with AMP is 3x that (>= 1,000 images/s).

Usage: python benchmarks/train_throughput.py [--images 96] [--size 224] [--backbone efficientnet_lite0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bpcr.features.backbones import load_backbone  # noqa: E402
from bpcr.features.loader import model_on  # noqa: E402
from bpcr.memory import keep_freed_memory  # noqa: E402
from bpcr.training.losses import category_softmax, robust_contrastive  # noqa: E402
from bpcr.dataset.manifest import write_manifest  # noqa: E402
from bpcr.training.options import TrainOptions  # noqa: E402
from bpcr.training.train import train  # noqa: E402
from bpcr.training.loop import Network, autocast_on, network_input, trainable_names  # noqa: E402
from common import blas_kernel  # noqa: E402

WORDS = ("lipstick", "shampoo", "serum", "toner", "nail polish", "face cream", "lip balm", "sunscreen")


def make_dataset(folder: Path, n: int, seed: int = 0) -> Path:
    """Shop-like JPEGs (a coloured product box on white, 256-448 px) with descriptions; returns the manifest."""
    rng = np.random.default_rng(seed)
    ids, paths, widths, heights, texts = [], [], [], [], []
    for k in range(n):
        w, h = int(rng.integers(256, 449)), int(rng.integers(256, 449))
        pixels = np.full((h, w, 3), 250, np.uint8)
        x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
        pixels[y0:y0 + h // 2, x0:x0 + w // 3] = rng.integers(0, 220, 3)
        pixels[y0 + h // 6:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3)
        path = folder / f"n{k:05d}.jpg"
        Image.fromarray(np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)).save(path)
        ids.append(path.stem)
        paths.append(path)
        widths.append(w)
        heights.append(h)
        texts.append(f"brand{k // 2} {WORDS[k % len(WORDS)]} line{k % 5} 50ml" + (" new" if k % 2 else ""))
    write_manifest(folder / "database.csv", ids, paths, widths, heights, texts)
    return folder / "database.csv"


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def model_speeds(backbone: str, size: int, batch: int, steps: int, dev: torch.device) -> dict[str, float]:
    """Forward-only and train-step images/s on random uint8 batches of 3 x ``batch`` images (q, p, n)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        network = model_on(Network(load_backbone(backbone), "gem", 8, 0), dev)  # as bpcr train
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3 * batch, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 8, (3 * batch,), generator=gen).to(dev)
    y = torch.cat([torch.ones(batch), torch.zeros(batch)]).to(dev)
    out = {}
    with torch.no_grad():
        for i in range(steps + 1):
            if i == 1:
                _sync(dev)
                start = time.perf_counter()
            with autocast_on(dev):
                network(network_input(network, images, dev))
        _sync(dev)
    out["forward"] = steps * 3 * batch / (time.perf_counter() - start)
    for mode in (("last", "all") if dev.type == "cpu" else ("all",)):
        names = trainable_names(network.model, mode)
        for name, p in network.model.named_parameters():
            p.requires_grad_(name in names)
        params = [p for p in network.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
        for i in range(steps + 1):
            if i == 1:
                _sync(dev)
                start = time.perf_counter()
            with autocast_on(dev):
                emb, logits, _ = network(network_input(network, images, dev))
            emb, logits = emb.float(), logits.float()
            q, c = emb[:batch], emb[batch:]
            loss = robust_contrastive(torch.cat([q, q]), c, y, 1.0) + category_softmax(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(dev)
        out[f"train-{mode}"] = steps * 3 * batch / (time.perf_counter() - start)
    return out


def end_to_end(manifest: Path, out: Path, backbone: str, size: int, batch: int, tuples: int, device: str,
               trunk_cache: str = "off", trainable: str = "auto") -> dict:
    """One epoch of ``train``: its record (``seconds.train`` the steps alone), with ``call`` the whole call's seconds
    (the trunk cache's build included) and ``steps_per_s``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = TrainOptions(backbone=backbone, epochs=1, size=size, batch_size=batch, images_per_epoch=tuples,
                               pool_size=tuples, categories=4, min_category_size=2, val_share=0.0, device=device,
                               trunk_cache=trunk_cache, trainable=trainable)
        result = train(manifest, out, options, log=None, cache_dir=out.parent / f"cache-{out.name}")
    epoch = dict(result.summary["epochs"][-1])
    epoch["call"] = result.summary["seconds"]["this_call"]
    epoch["steps_per_s"] = (epoch["images"] // (3 * batch)) / max(epoch["seconds"]["train"], 1e-9)
    return epoch




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="CPU: tuples in the end-to-end epoch (x4 on CUDA)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16, help="tuples per step (3 images each)")
    parser.add_argument("--steps", type=int, default=3, help="timed model-only steps (after one warm-up)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"{args.backbone} at {args.size} px, {args.batch_size} tuples (x3 images) per step, {cores} cores, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"numpy BLAS: {blas_kernel()}")
    keep_freed_memory()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n_images = args.images * (12 if len(devices) > 1 else 3)
        manifest = make_dataset(folder, n_images)
        for dev in devices:
            big = 4 if dev.type == "cuda" else 1
            speeds = model_speeds(args.backbone, args.size, args.batch_size * big, args.steps * big, dev)
            epoch = end_to_end(manifest, folder / f"out-{dev.type}", args.backbone, args.size, args.batch_size * big,
                               min(args.images * big, n_images // 2), dev.type)
            fwd = speeds["forward"]
            amp = " (AMP)" if dev.type == "cuda" else ""
            print(f"[{dev.type}{amp}]")
            print(f"  forward only            {fwd:8.1f} images/s")
            for key, value in speeds.items():
                if key != "forward":
                    print(f"  train step, {key[6:]:<4} stages {value:8.1f} images/s  "
                          f"(ratio to forward {value / fwd:.2f})")
            print(f"  end-to-end epoch        {epoch['images_per_s']:8.1f} images/s  (ratio to forward "
                  f"{epoch['images_per_s'] / fwd:.2f}; {epoch['images']} images in {epoch['seconds']['train']:.1f} s, "
                  f"mining {epoch['seconds']['mine']:.1f} s apart)")
            if dev.type == "cpu":  # the cached trunk (bpcr.training.trunk): the same epoch, side by side
                cached = end_to_end(manifest, folder / "out-cpu-cached", args.backbone, args.size, args.batch_size,
                                    min(args.images, n_images // 2), "cpu", trunk_cache="on")
                print(f"  steps/s, full network   {epoch['steps_per_s']:8.3f}  ({epoch['images_per_s']:.1f} images/s)")
                print(f"  steps/s, cached trunk   {cached['steps_per_s']:8.3f}  ({cached['images_per_s']:.1f} images/s; "
                      f"ratio {cached['steps_per_s'] / epoch['steps_per_s']:.1f}x; building the cache of "
                      f"{n_images} images x 5 views: whole call {cached['call']:.1f} s "
                      f"against {epoch['call']:.1f} s)")
                head = end_to_end(manifest, folder / "out-cpu-head", args.backbone, args.size, args.batch_size,
                                  min(args.images, n_images // 2), "cpu", trunk_cache="on", trainable="head")
                print(f"  steps/s, cached, head   {head['steps_per_s']:8.3f}  ({head['images_per_s']:.1f} images/s; "
                      f"ratio {head['steps_per_s'] / epoch['steps_per_s']:.1f}x; trainable head: the layers after "
                      f"the last stage, the trunk's cache built anew for that split)")


if __name__ == "__main__":
    main()
