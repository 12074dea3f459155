"""One epoch of ``bpcr train``: the network, the views, the batches, the steps.

Its validation is :mod:`bpcr.training.validation`.

:mod:`bpcr.training.train` plans a run, checkpoints it and writes its outputs; this
module does the work between two checkpoints. Everything random in an epoch
comes from ``(seed, epoch)`` (the anchors, their positives, the backdrops) and
``(seed, epoch, tuple)`` (each simulated photo), so an epoch is a function of
the weights it starts from.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bpcr.training.augment import clean_view, generator, load_image, phone_photo
from bpcr.features.backbones import Backbone
from bpcr.errors import BadInput
from bpcr.device import cores
from bpcr.features.loader import MEMORY_FORMAT
from bpcr.training.losses import PAIR_LOSSES, category_softmax, distillation, multitask
from bpcr.training.options import TrainOptions
from bpcr.features.pooling import POOLINGS, l2n
from bpcr.progress import Progress, start
from bpcr.training.pseudolabels import mine_negatives, negative_rules
from bpcr.training.trunk import VAL_EPOCH, TrunkViews

CATEGORY_SCALE = 16.0  # cosine classifier's logit scale (NormFace); unit vectors give logits in [-16, 16]
BACKGROUND = 4  # background negatives per tuple: 004 §3.3's 1 : 1 : 4
MINE_POOL_CAP = 20000  # images embedded per epoch to mine negatives from, at most
# The progress bar's running loss is read from a CUDA device every this many steps: each read waits for the GPU.
NOTE_EVERY_CUDA = 20


@dataclass
class Data:
    """The training signal of a run, indexed by row of the images used (not of the manifest)."""

    paths: list[Path]
    ids: list[str]
    x: sp.csr_matrix  # TF-IDF rows
    labels: np.ndarray  # pseudo-category per row, -1 for none
    partners: list[np.ndarray]  # near-identical listings per row
    train_rows: np.ndarray
    val_rows: np.ndarray
    options: TrainOptions  # every default resolved (bpcr.training.train)
    views: TrunkViews | None = None  # the trunk's cached outputs (bpcr.training.trunk), or None: the full network
    head: nn.Module | None = None  # the stages after the cached trunk
    distinctive: np.ndarray | None = None  # the TF-IDF terms that name a brand or line (pseudolabels.distinctive_terms)


class Network(nn.Module):
    """Backbone -> GeM/MAC -> L2 (the descriptor ``extract`` computes), plus a cosine classifier over the categories."""

    def __init__(self, net: Backbone, pooling: str, n_categories: int, seed: int) -> None:
        super().__init__()
        self.backbone = net
        self.pooling = pooling
        gen = torch.Generator().manual_seed(seed)
        # Unit rows: the logits read normalised weights, whose gradient scales as 1 / |w|; small rows would
        # swing the class directions around at every step.
        self.classifier = nn.Parameter(l2n(torch.randn(n_categories, net.dim, generator=gen)))
        self.eval()

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    def train(self, mode: bool = True) -> "Network":
        # Batch norms, dropout and stochastic depth always run as in extraction (module docstring of bpcr.training.train).
        return super().train(False)

    @torch.no_grad()
    def imprint(self, emb: np.ndarray, labels: np.ndarray) -> None:
        """Set each category's classifier row to the normalised mean descriptor of its images in ``emb``.

        "Weight imprinting" (Qi et al. 2018): the softmax starts where the
        descriptors already are, so its first gradients refine them instead of
        dragging them towards random class directions. Categories absent from
        ``emb`` keep their random row.
        """
        for c in np.unique(labels[labels >= 0]):
            mean = torch.from_numpy(emb[labels == c].mean(axis=0)).to(self.classifier)
            self.classifier[int(c)] = l2n(mean)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised images (B, 3, S, S) -> descriptors (B, D), category logits (B, C), forward_features output."""
        return self.read(self.model.forward_features(x), x.shape[-2:])

    def from_trunk(self, maps: Tensor, head: nn.Module, size: int) -> tuple[Tensor, Tensor, Tensor]:
        """What :meth:`forward` returns, from the frozen trunk's output ``maps`` (:mod:`bpcr.training.trunk`)."""
        return self.read(head(maps.contiguous(memory_format=MEMORY_FORMAT)), (size, size))

    def read(self, raw: Tensor, size) -> tuple[Tensor, Tensor, Tensor]:
        """``forward_features`` output -> descriptors, category logits, the output itself."""
        emb = l2n(POOLINGS[self.pooling](self.backbone.as_map(raw, size)))
        return emb, CATEGORY_SCALE * emb @ l2n(self.classifier).T, raw


def trainable_names(model: nn.Module, mode: str | int) -> set[str]:
    """The parameter names trained under ``mode``: "all", "last", "head" or the number k of final stages.

    Stages are timm's ``feature_info`` stages; the last k are every parameter of
    a module that runs after stage ``-(k+1)`` ends (so "last" on EfficientNet is
    ``blocks.5``, ``blocks.6``, ``conv_head``, ``bn2``); "head" is what runs after
    the last stage ends (EfficientNet's ``conv_head`` and ``bn2``). The ImageNet classifier
    never trains: features never pass through it, and distillation reads it frozen.
    """
    head = tuple(f"{n}." for n in ([model.pretrained_cfg.get("classifier")] if isinstance(
        model.pretrained_cfg.get("classifier"), str) else list(model.pretrained_cfg.get("classifier") or ())))
    names = [n for n, _ in model.named_parameters() if not n.startswith(head or ("\0",))]
    k = len(model.feature_info) if mode == "all" else (1 if mode == "last" else 0 if mode == "head" else int(mode))
    if k >= len(model.feature_info):
        return set(names)
    boundary = model.feature_info[-k - 1]["module"]
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    end = max(i for name, i in order.items() if name == boundary or name.startswith(boundary + "."))
    chosen = {n for n in names if order[n.rpartition(".")[0]] > end}
    if not chosen:
        raise BadInput(None, None, f"--trainable {mode}: the backbone has no layers after {boundary}")
    return chosen


# ---------------------------------------------------------------- views


class _Tuples(Dataset):
    """Tuple t -> uint8 (3, 3, S, S): simulated phone photo of the anchor, clean positive, clean negative."""

    def __init__(self, paths: list[Path], tuples: np.ndarray, backdrops: np.ndarray, size: int, seed: int,
                 epoch: int) -> None:
        self.paths, self.tuples, self.backdrops = paths, tuples, backdrops
        self.size, self.seed, self.epoch = size, seed, epoch

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, t: int) -> Tensor:
        a, p, n = (int(v) for v in self.tuples[t])
        q = phone_photo(load_image(self.paths[a]), self.size, generator(self.seed, self.epoch, t),
                        load_image(self.paths[int(self.backdrops[t])]))
        pv = clean_view(load_image(self.paths[p]), self.size)
        return torch.stack([q, pv, clean_view(load_image(self.paths[n]), self.size) if n >= 0 else pv])


class _Views(Dataset):
    """Row -> uint8 (3, S, S): its clean view, or (``seed`` given) its fixed validation photo."""

    def __init__(self, paths: list[Path], rows: np.ndarray, size: int, seed: int | None) -> None:
        self.paths, self.rows, self.size, self.seed = paths, rows, size, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Tensor:
        row = int(self.rows[i])
        image = load_image(self.paths[row])
        if self.seed is None:
            return clean_view(image, self.size)
        return phone_photo(image, self.size, generator(self.seed, VAL_EPOCH, row))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _loader(dataset: Dataset, batch_size: int, dev: torch.device, workers: int | None) -> DataLoader:
    # As bpcr.features.loader: on a small CPU the model's threads own the cores; decoding workers pay off on a GPU.
    workers = (cores() if dev.type != "cpu" else cores() // 4) if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      worker_init_fn=_worker_init if workers else None,
                      multiprocessing_context="forkserver" if workers else None, pin_memory=dev.type == "cuda")


def autocast_on(dev: torch.device):
    """Mixed precision on a CUDA GPU (bfloat16 where supported), nothing elsewhere."""
    if dev.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def network_input(network: Network, images: Tensor, dev: torch.device) -> Tensor:
    """uint8 images -> the backbone's normalised input on ``dev``, in the network's memory layout."""
    x = network.backbone.normalise(images.to(dev, non_blocking=True))
    return x.contiguous(memory_format=MEMORY_FORMAT)


@torch.no_grad()
def embed(network: Network, data: Data, rows: np.ndarray, dev: torch.device, workers: int | None,
          phone_seed: int | None = None) -> np.ndarray:
    """Descriptors (len(rows), D) float32 of the rows' clean views (or fixed validation photos)."""
    size, batch = data.options.size, 3 * data.options.batch_size
    out = []
    if data.views is not None:
        view = np.full(len(rows), 0 if phone_seed is None else 1)
        for lo in range(0, len(rows), batch):
            emb, _, _ = network.from_trunk(data.views.batch(rows[lo:lo + batch], view[lo:lo + batch], dev),
                                           data.head, size)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, network.backbone.dim), np.float32)
    for images in _loader(_Views(data.paths, rows, size, phone_seed), batch, dev, workers):
        with autocast_on(dev):
            emb, _, _ = network(network_input(network, images, dev))
        out.append(emb.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, network.backbone.dim), np.float32)


# ---------------------------------------------------------------- an epoch


def plan_epoch(data: Data, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epoch's anchors, a positive for each (a near-identical listing or itself) and a backdrop image for
    each simulated photo, drawn from ``(seed, epoch)``."""
    o = data.options
    rng = np.random.default_rng([o.seed, epoch, 3])
    order = rng.permutation(data.train_rows)
    anchors = order[:o.images_per_epoch]
    positives = np.empty_like(anchors)
    for i, a in enumerate(anchors):
        choices = data.partners[a]
        pick = int(rng.integers(0, len(choices) + 1))
        positives[i] = a if pick == len(choices) else choices[pick]
    backdrops = rng.choice(data.train_rows, len(anchors))
    return anchors, positives, backdrops


def run_epoch(network: Network, teacher: nn.Module | None, data: Data, opt: torch.optim.Optimizer, epoch: int,
              steps: int, loss: tuple[str | None, bool], dev: torch.device, workers: int | None,
              progress: Progress | None, total_steps: int, label: str) -> dict[str, Any]:
    """Mine hard negatives with the current network, then one pass over the epoch's tuples; returns its record."""
    o = data.options
    tic = time.perf_counter()
    anchors, positives, backdrops = plan_epoch(data, epoch)
    pool_size = min(max(o.pool_size, len(anchors)), MINE_POOL_CAP, len(data.train_rows))
    rest = np.setdiff1d(data.train_rows, anchors)
    extra = np.random.default_rng([o.seed, epoch, 5]).permutation(rest)[:max(0, pool_size - len(anchors))]
    pool = np.concatenate([anchors, extra])
    pool_emb = embed(network, data, pool, dev, workers)
    negatives, rules = mine_negatives(data.x, data.labels, anchors, pool_emb[:len(anchors)], pool, pool_emb,
                                      rng=np.random.default_rng([o.seed, epoch, 6]), negative_tau=o.negative_tau,
                                      tau=o.pair_tau, distinctive=data.distinctive)
    tuples = np.stack([anchors, positives, negatives], axis=1)
    pair_name, use_softmax = loss
    if epoch == 1 and use_softmax:
        network.imprint(pool_emb, data.labels[pool])
    mined = time.perf_counter() - tic
    # Summed on the device and read once at the end: a float() per step would wait for the GPU every step.
    sums = {key: torch.zeros((), device=dev) for key in ("loss", "pair", "softmax", "distill")}
    counts = {"positive_pairs": 0, "negative_pairs": 0}
    b = o.batch_size
    lr0 = o.lr
    tic = time.perf_counter()
    if data.views is not None:  # one cached photo of each anchor, drawn per epoch
        photo = np.random.default_rng([o.seed, epoch, 4]).integers(1, data.views.views + 1, len(tuples))
        batches = _cached_batches(network, data, tuples, photo, dev)
    else:
        batches = _full_batches(network, teacher, data, tuples, backdrops, epoch, dev, workers)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and not torch.cuda.is_bf16_supported())
    with start(progress, label, 3 * len(tuples)) as advance:
        for step, (emb, logits, student, target) in enumerate(batches):
            global_step = (epoch - 1) * steps + step
            for group in opt.param_groups:
                group["lr"] = lr0 * 0.5 * (1.0 + math.cos(math.pi * global_step / total_steps))
            rows = tuples[step * b:(step + 1) * b]
            parts, n_pos, n_neg = _batch_loss(emb.float(), logits.float(), rows, data, pair_name, use_softmax,
                                              None if target is None else (student.float(), target.float()))
            total = multitask(parts["pair"], parts["softmax"], parts["distill"],
                              o.softmax_weight if use_softmax else 0.0, o.distill_weight)
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
            sums["loss"] += total.detach().float()
            for key in ("pair", "softmax", "distill"):
                sums[key] += parts[key].detach().float()
            counts["positive_pairs"] += n_pos
            counts["negative_pairs"] += n_neg
            note = None
            if dev.type != "cuda" or (step + 1) % NOTE_EVERY_CUDA == 0 or step + 1 == steps:
                note = running_loss(float(sums["loss"]) / (step + 1), float(total.detach()))
            advance(3 * len(rows), note=note)
    trained = time.perf_counter() - tic
    n_steps = max(1, len(tuples) // b)
    return {"epoch": epoch, "train": {k: float(v) / n_steps for k, v in sums.items()}, **counts,
            "hard_negatives_found": int((negatives >= 0).sum()), "negative_rules": rules, "anchors": int(len(anchors)),
            "images": int(3 * len(tuples)), "images_per_s": 3 * len(tuples) / max(trained, 1e-9),
            "lr": [lr0 * 0.5 * (1 + math.cos(math.pi * (epoch - 1) * steps / total_steps)),
                   lr0 * 0.5 * (1 + math.cos(math.pi * (epoch * steps - 1) / total_steps))],
            "seconds": {"mine": mined, "train": trained, "total": mined + trained}}


def _full_batches(network: Network, teacher: nn.Module | None, data: Data, tuples: np.ndarray, backdrops: np.ndarray,
                  epoch: int, dev: torch.device, workers: int | None):
    """Each batch's descriptors, logits, and the student's and teacher's ImageNet logits (None without
    distillation), from decoded views: a new simulated photo of every anchor."""
    o = data.options
    loader = _loader(_Tuples(data.paths, tuples, backdrops, o.size, o.seed, epoch), o.batch_size, dev, workers)
    for views in loader:
        images = views.transpose(0, 1).reshape(-1, *views.shape[2:])
        x = network_input(network, images, dev)
        with autocast_on(dev):
            emb, logits, raw = network(x)
            student = network.model.forward_head(raw) if teacher is not None else None
        target = None
        if teacher is not None:
            with torch.no_grad(), autocast_on(dev):
                target = teacher(x)
        yield emb, logits, student, target


def _cached_batches(network: Network, data: Data, tuples: np.ndarray, photo: np.ndarray, dev: torch.device):
    """Each batch's descriptors and logits from the cached trunk outputs (:mod:`bpcr.training.trunk`): the
    anchors' photo ``photo[t]``, the positives' and negatives' clean views (a missing negative repeats the
    positive, as :class:`_Tuples` does)."""
    b = data.options.batch_size
    for lo in range(0, len(tuples) - len(tuples) % b, b):
        t = tuples[lo:lo + b]
        negatives = np.where(t[:, 2] >= 0, t[:, 2], t[:, 1])
        rows = np.concatenate([t[:, 0], t[:, 1], negatives])
        views = np.concatenate([photo[lo:lo + b], np.zeros(2 * len(t), dtype=np.int64)])
        with autocast_on(dev):
            emb, logits, _ = network.from_trunk(data.views.batch(rows, views, dev), data.head, data.options.size)
        yield emb, logits, None, None


def running_loss(mean: float, last: float) -> str:
    """The progress bar's note during training: the epoch's mean loss so far and the last step's."""
    return f"loss {mean:.4f} (step {last:.4f})"


def _rows(x: Tensor, index: list[int]) -> Tensor:
    """``x[index]`` whose gradient is the same bits in every run.

    Rows repeat in ``index``; on the CPU the backward of ``x[index]`` adds the
    repeated rows' gradients in an order that changes between runs on two or
    more threads, and ``index_select``'s backward does not.
    """
    return torch.index_select(x, 0, torch.tensor(index, dtype=torch.long, device=x.device))


def _batch_loss(emb: Tensor, logits: Tensor, rows: np.ndarray, data: Data, pair_name: str | None,
                use_softmax: bool, distill: tuple[Tensor, Tensor] | None) -> tuple[dict[str, Tensor], int, int]:
    """Pair, softmax and distillation losses of one batch of B tuples (emb rows: B photos, B positives, B negatives)."""
    o = data.options
    b = len(rows)
    zero = emb.sum() * 0.0
    anchors, clean = rows[:, 0], np.concatenate([rows[:, 1], rows[:, 2]])
    valid_neg = rows[:, 2] >= 0
    ia, ib, y = list(range(b)), list(range(b)), [1.0] * b
    ok = negative_rules(data.x, data.labels, anchors, np.where(clean >= 0, clean, anchors[0]),
                        distinctive=data.distinctive, negative_tau=o.negative_tau, tau=o.pair_tau) == 0
    for i in range(b):
        if valid_neg[i]:
            ia.append(i), ib.append(b + i), y.append(0.0)
        found = 0
        for shift in range(1, b):
            j = (i + shift) % b
            for col in (j, b + j):
                if found < BACKGROUND and ok[i, col] and (col < b or valid_neg[j]):
                    ia.append(i), ib.append(col), y.append(0.0)
                    found += 1
    parts = {"pair": zero, "softmax": zero, "distill": zero}
    if pair_name is not None:
        q, c = emb[:b], emb[b:]
        target = torch.tensor(y, device=emb.device)
        parts["pair"] = PAIR_LOSSES[pair_name](_rows(q, ia), _rows(c, ib), target, o.margin)
    if use_softmax:
        labels = np.concatenate([data.labels[anchors], data.labels[rows[:, 1]],
                                 np.where(valid_neg, data.labels[np.maximum(rows[:, 2], 0)], -1)])
        parts["softmax"] = category_softmax(logits, torch.as_tensor(labels, device=logits.device))
    if distill is not None:
        parts["distill"] = distillation(distill[0], distill[1], o.temperature)
    return parts, b, len(y) - b
