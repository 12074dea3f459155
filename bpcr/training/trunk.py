"""The frozen trunk of a fine-tuned backbone, run once per image view and kept on disk (``bpcr train``'s cached path).

Training updates only the final stages (``trainable``); every module before them is a fixed function of
its input (batch norms in eval mode, no dropout: :mod:`bpcr.training.train`), so its output for a given view
of an image is the same at every step of every epoch. :class:`TrunkViews` computes it once for the clean
view of each image and for ``views`` seeded simulated phone photos of each training image
(:func:`bpcr.training.augment.phone_photo`; validation images get their one fixed photo), and keeps the
outputs in a memory-mapped ``.npy``. A training step then runs only the trainable stages on cached maps:
no decoding, no augmentation and no trunk forward per step. Each anchor draws one of its cached photos per
epoch, so an image's photos repeat across epochs where the full loop draws a new one each time; ``views``
says how many.

The cache is keyed by what its values depend on (the trunk's tensors, the input size, the views, the seed,
the images' paths and the split point) and lives in ``cache_dir/<key>/``: trainings that differ only in
loss, margin, learning rate or epochs share it. It is written to a marked ``.writing`` folder and renamed
when complete, so an interrupted build leaves nothing that is read later.

The split needs ``forward_features`` to be a plain chain of modules (timm's EfficientNet family: stem,
``bn1``, the blocks, ``conv_head``, ``bn2``); for other backbones, or when distillation needs the full
input, training runs the full network on decoded views (:func:`split` returns None).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bpcr.errors import BadInput
from bpcr.io.folders import is_own, writing_dir
from bpcr.progress import Progress, start
from bpcr.training.augment import clean_view, generator, load_image, phone_photo

FORMAT = "bpcr-trunk-cache/1"
VIEW_EPOCH = 1 << 29  # the "epoch" cached training photos are drawn for (k added): none of the full loop's
VAL_EPOCH = 1 << 30  # the "epoch" the fixed validation photos are drawn for (here and in bpcr.training.loop)
CHAIN = ("conv_stem", "bn1", "blocks", "conv_head", "bn2")


@dataclass
class Split:
    """``forward_features`` as ``head(trunk(x))``: ``trunk`` frozen, ``head`` from ``boundary`` on."""

    trunk: nn.Sequential
    head: nn.Sequential
    boundary: str


def forward_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """The modules ``forward_features`` runs, in order, when it is a plain chain; None otherwise."""
    if not all(hasattr(model, name) for name in CHAIN) or not isinstance(model.blocks, nn.Sequential):
        return None
    if getattr(model, "grad_checkpointing", False):
        return None
    blocks = [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
    return [("conv_stem", model.conv_stem), ("bn1", model.bn1), *blocks, ("conv_head", model.conv_head),
            ("bn2", model.bn2)]


def split(model: nn.Module, trainable: set[str]) -> Split | None:
    """The frozen trunk and the trained head of ``model`` for the trainable parameter names; None when the model is
    not a plain chain or nothing before the first trainable module is frozen."""
    chain = forward_chain(model)
    if chain is None:
        return None
    first = next((i for i, (name, _) in enumerate(chain) if any(p.startswith(name + ".") for p in trainable)), None)
    if first is None or first == 0:
        return None
    return Split(nn.Sequential(*[m for _, m in chain[:first]]), nn.Sequential(*[m for _, m in chain[first:]]),
                 chain[first][0])


class _RowViews(Dataset):
    """Row i -> uint8 (1 + views, 3, S, S): the clean view, then the cached photos (or the validation photo)."""

    def __init__(self, paths: list[Path], rows: np.ndarray, backdrops: np.ndarray | None, size: int, seed: int,
                 views: int) -> None:
        self.paths, self.rows, self.backdrops = paths, rows, backdrops
        self.size, self.seed, self.views = size, seed, views

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Tensor:
        row = int(self.rows[i])
        image = load_image(self.paths[row])
        out = [clean_view(image, self.size)]
        if self.backdrops is None:  # a validation image: its fixed photo, as bpcr.training.loop draws it
            out.append(phone_photo(image, self.size, generator(self.seed, VAL_EPOCH, row)))
        else:
            for k in range(self.views):
                backdrop = load_image(self.paths[int(self.backdrops[i, k])])
                out.append(phone_photo(image, self.size, generator(self.seed, VIEW_EPOCH + k, row), backdrop))
        return torch.stack(out)


class TrunkViews:
    """Trunk outputs of image views, memory-mapped: ``maps[slot, view]`` is (C, h, w) float32.

    ``slot[row]`` is a row's place; view 0 is its clean view, views 1..``views`` its photos (1 for a
    validation row: its fixed photo).
    """

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.folder, self.meta = folder, meta
        self.maps = np.load(folder / "trunk.npy", mmap_mode="r")
        rows = np.load(folder / "rows.npy")
        self.slot = {int(r): i for i, r in enumerate(rows)}
        self.views = int(meta["views"])

    def batch(self, rows: np.ndarray, views: np.ndarray, dev: torch.device) -> Tensor:
        """(len(rows), C, h, w) float32 on ``dev``: view ``views[i]`` of row ``rows[i]``."""
        slots = np.array([self.slot[int(r)] for r in rows], dtype=np.int64)
        order = np.argsort(slots, kind="stable")  # memory-mapped reads in file order
        block = np.empty((len(rows), *self.maps.shape[2:]), dtype=np.float32)
        block[order] = self.maps[slots[order], views[order]]
        return torch.from_numpy(block).to(dev)


def cache_key(trunk: nn.Module, paths: list[Path], train_rows: np.ndarray, val_rows: np.ndarray, size: int,
              views: int, seed: int, boundary: str) -> str:
    """What the cached values depend on, hashed."""
    digest = hashlib.sha256(f"{FORMAT}|{size}|{views}|{seed}|{boundary}|".encode())
    for key, tensor in trunk.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for rows in (train_rows, val_rows):
        digest.update(b"|" + "\n".join(str(paths[int(r)]) for r in rows).encode())
    return digest.hexdigest()[:24]


def backdrop_rows(train_rows: np.ndarray, views: int, seed: int) -> np.ndarray:
    """(len(train_rows), views): the image each cached photo takes its backdrop from, drawn from ``seed``."""
    return np.random.default_rng([seed, 17]).choice(train_rows, (len(train_rows), views))


@torch.no_grad()
def build_views(parts: Split, normalise: Callable[[Tensor], Tensor], paths: list[Path], train_rows: np.ndarray,
                val_rows: np.ndarray, size: int, views: int, seed: int, cache_dir: Path, dev: torch.device,
                batch_size: int = 16, progress: Progress | None = None,
                say: Callable[[str], None] = print) -> TrunkViews:
    """The trunk's outputs for the training rows (clean + ``views`` photos) and the validation rows (clean + their
    fixed photo), built once and kept under ``cache_dir`` (module docstring)."""
    key = cache_key(parts.trunk, paths, train_rows, val_rows, size, views, seed, parts.boundary)
    folder = Path(cache_dir) / key
    if (folder / "meta.json").is_file() and is_own(folder):
        say(f"trunk outputs read from {folder}")
        return TrunkViews(folder)
    tmp = writing_dir(folder)
    rows = np.concatenate([train_rows, val_rows]).astype(np.int64)
    probe = parts.trunk(normalise(torch.zeros((1, 3, size, size), dtype=torch.uint8, device=dev)))
    slots = 1 + max(views, 1)
    maps = np.lib.format.open_memmap(tmp / "trunk.npy", mode="w+", dtype=np.float32,
                                     shape=(len(rows), slots, *probe.shape[1:]))
    datasets = [(_RowViews(paths, train_rows, backdrop_rows(train_rows, views, seed), size, seed, views), 0),
                (_RowViews(paths, val_rows, None, size, seed, 1), len(train_rows))]
    with start(progress, f"trunk outputs ({parts.boundary} on), {slots} views", len(rows) * slots) as advance:
        for dataset, offset in datasets:
            done = offset
            for images in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
                n, v = images.shape[:2]
                x = normalise(images.reshape(-1, *images.shape[2:]).to(dev))
                out = parts.trunk(x.contiguous(memory_format=torch.channels_last)).float().cpu().numpy()
                maps[done:done + n, :v] = out.reshape(n, v, *out.shape[1:])
                done += n
                advance(n * v)
    maps.flush()
    del maps
    np.save(tmp / "rows.npy", rows)
    meta = {"format": FORMAT, "views": views, "size": size, "seed": seed, "boundary": parts.boundary,
            "train_rows": int(len(train_rows)), "val_rows": int(len(val_rows)), "shape": list(probe.shape[1:])}
    (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
    if os.path.lexists(folder):  # a folder of this key without meta.json: left by an older build of the kit
        if not is_own(folder):
            raise BadInput(folder, None, "is in the way of the trunk cache and was not made by bpcr; move it away")
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    say(f"trunk outputs of {len(rows)} images x {slots} views kept in {folder}")
    return TrunkViews(folder)
