"""`bpcr train`: fine-tune a backbone on the database alone (004 §3.2-3.3, 002 App. A, 003 §3.1).

Training signal (:mod:`bpcr.pseudolabels`; never the queries, never the
ground truth: :func:`~bpcr.pseudolabels.check_no_query_leak` runs first):
pseudo-categories clustered from the descriptions, positive pairs of
near-identical descriptions, and hard negatives mined each epoch with the
current network. Each training *tuple* is

- ``q``: a simulated phone photo (:func:`bpcr.augment.phone_photo`) of an anchor image,
- ``p``: the clean view of a positive (a near-identical listing, or the anchor itself),
- ``n``: the clean view of the anchor's hard negative,

so a pair always sets a phone-like image against a shop image, as retrieval
does. Pairs per tuple are 004 §3.3's 1 : 1 : 4: (q, p) positive, (q, n) hard
negative, and up to 4 "background" negatives: other tuples' clean images in
the batch that are negatives for the anchor.

The network is the backbone's ``forward_features``, a GeM (or MAC) pooling and
L2 normalisation, exactly the descriptor ``bpcr extract --pooling gem``
computes; a cosine classifier (unit weights, scale 16, each row first set to
its category's mean descriptor) over the pseudo-categories reads the
descriptor. The loss (:mod:`bpcr.losses`) is 004's multi-task sum; its
distillation term (off by default) runs a frozen copy of the starting model on
every training image, one more forward pass per image. Batch norms stay in eval mode throughout (running statistics
frozen; their affine weights train with their stage): batches of near-duplicate
pairs would skew the statistics, and training then computes what extraction
computes. Dropout and stochastic depth are off for the same reason, which also
makes a seeded CPU run repeatable bit for bit.

Early stopping (004 §3.3) reads a validation split of the *database*: each
held-out image, as a fixed simulated phone photo, searches the clean held-out
images; the figure is mAP@7 with its near-identical listings as relevant.
``OUT/weights.pt`` holds the best epoch's backbone (epoch 0 = the starting
weights, so a training that never helps returns its input, and says so).

A checkpoint (``OUT/checkpoint.pt``) is written atomically after each epoch; a
re-run with the same options resumes from it and, on the CPU with a seed, ends
with the same weights, bit for bit, as an uninterrupted run: every random
choice is drawn from ``(seed, epoch, index)``. The checkpoint is removed once
``weights.pt`` and ``train.json`` are written together (:func:`bpcr.fileio.write_group`).
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import io
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import __version__
from .backbones import load_backbone, state_digest
from .errors import BadInput
from .fileio import atomic_path, json_text, sha256_file, write_group
from .folders import FolderKind, check_output_folder
from .loader import cpu_threads, model_on, resolve_device
from .losses import DEFAULT_MARGIN, DEFAULT_TEMPERATURE, LOSSES, parse_loss
from .manifest import read_manifest
from .progress import Progress
from .pseudolabels import (DEFAULT_CATEGORIES, DEFAULT_MIN_SIZE, DEFAULT_NEGATIVE_TAU, DEFAULT_PAIR_TAU,
                           check_no_query_leak, description_vectors, partners, positive_pairs, pseudo_categories,
                           split_validation)
from .ranges import check_range
from .trainloop import Data, Network, run_epoch, trainable_names, validate

FORMAT = "bpcr-train/1"
CHECKPOINT_FORMAT = "bpcr-train-checkpoint/1"
TRAINED = FolderKind("bpcr training folder", ("train.json", "weights.pt", "checkpoint.pt"), any_marker=True,
                     replaced=False)
TRAIN_POOLINGS = ("gem", "mac")
# name -> default learning rate. On the demo, SGD at 0.01 lowered the validation mAP@7 within 16 steps of the
# last stage (0.378 -> 0.363), at 0.001 it held (0.378 -> 0.380): fine-tuning pretrained features wants small steps
# (004 §3.3 used 5e-5 on its own loss scale).
OPTIMIZERS = {"sgd": 0.001, "adamw": 1e-4}


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` wrote: ``weights`` (state dict), ``report`` (train.json) and its content."""

    weights: Path
    report: Path
    summary: dict[str, Any]


def train(
    manifest: str | Path,
    out: str | Path,
    backbone: str = "tf_efficientnet_lite0",
    weights: str | Path | None = None,
    *,
    epochs: int = 4,
    loss: str = "robust-contrastive+softmax",
    margin: float = DEFAULT_MARGIN,
    softmax_weight: float = 0.1,
    distill_weight: float = 0.0,
    temperature: float = DEFAULT_TEMPERATURE,
    pooling: str = "gem",
    trainable: str | int = "auto",
    optimizer: str = "sgd",
    lr: float | None = None,
    weight_decay: float = 1e-4,
    batch_size: int = 16,
    size: int = 224,
    images_per_epoch: int | None = None,
    pool_size: int | None = None,
    categories: int = DEFAULT_CATEGORIES,
    min_category_size: int = DEFAULT_MIN_SIZE,
    pair_tau: float = DEFAULT_PAIR_TAU,
    negative_tau: float = DEFAULT_NEGATIVE_TAU,
    val_share: float = 0.1,
    patience: int = 2,
    max_images: int | None = None,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    workers: int | None = None,
    queries: str | Path | None = None,
    ground_truth: str | Path | None = None,
    restart: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] | None = print,
    on_epoch: Callable[[int], None] | None = None,
) -> TrainResult:
    """Fine-tune ``backbone`` on the database ``manifest``; write ``out/weights.pt`` and ``out/train.json``.

    ``epochs``: at most this many passes of ``images_per_epoch`` anchors (default:
    every training image); ``pool_size`` images (default: twice the anchors; at
    least the anchors, at most 20,000) are embedded each epoch to mine hard
    negatives from. ``trainable``: ``"auto"``
    (the last stage on a CPU, everything on a GPU), ``"all"``, ``"last"`` or the
    number of final stages. ``lr`` (default 0.001 for SGD with momentum 0.9,
    1e-4 for AdamW) decays to 0 on a cosine over the planned steps.
    ``softmax_weight`` (default 0.1): the pseudo-category cross-entropy starts
    near ln C (3.8 for 44 categories) while the pair loss starts near 0.2; at
    weight 1 (and SGD at 0.01) the softmax drove the descriptors, and the
    demo's validation mAP@7 fell from 0.378 to 0.267 in one epoch; at 0.1 both
    terms are of one size. Training stops
    early once the validation mAP@7 has not improved for ``patience`` epochs.
    ``max_images`` trains on a seeded sample of the manifest. ``queries``: the
    query manifest to check against (default ``queries.csv`` beside
    ``manifest``); ``ground_truth``: one more file to check against. ``restart``
    discards a checkpoint made with other options. ``on_epoch(epoch)`` is called
    once that epoch's checkpoint is on disk. ``log`` hears what the run found and
    did (the categories, each epoch's losses and validation; None: silent);
    ``progress`` is told of each epoch's training images, with the epoch's running loss as
    its note (:mod:`bpcr.progress`).
    """
    started = time.perf_counter()
    say = log or (lambda message: None)
    pair_loss, use_softmax = _check_options(locals())
    dev = resolve_device(device)
    out = check_output_folder(out, "--out", TRAINED)
    man = read_manifest(manifest)
    leak = check_no_query_leak(man, queries, ground_truth)
    rows = np.arange(len(man))
    if max_images is not None and max_images < len(man):
        rows = np.sort(np.random.default_rng([seed, 11]).choice(len(man), max_images, replace=False))
    descriptions = [man.descriptions[r] for r in rows]
    x, terms = description_vectors(descriptions)
    cats = pseudo_categories(x, terms, categories, min_category_size, seed=seed)
    pairs = positive_pairs(x, pair_tau)
    train_rows, val_rows = split_validation(len(rows), pairs, val_share, seed)
    if len(train_rows) < 2 * batch_size:
        raise BadInput(manifest, None, f"{len(train_rows)} training images are too few for batches of {batch_size}")
    say(f"{len(rows)} database images: {cats.count} pseudo-categories, {len(pairs)} near-identical pairs, "
        f"{len(train_rows)} to train on, {len(val_rows)} held out for validation")
    for c, (words, n) in enumerate(zip(cats.top_words, cats.sizes)):
        say(f"  category {c:2d} ({n:5d}): {' '.join(words)}")
    mode = ("all" if dev.type == "cuda" else "last") if trainable == "auto" else trainable
    anchors = min(images_per_epoch or len(train_rows), len(train_rows))
    anchors -= anchors % batch_size
    if anchors == 0:
        raise BadInput(None, None, f"--images-per-epoch ({images_per_epoch}) must hold at least one batch "
                                   f"({batch_size})")
    options = {
        "manifest": {"file": man.path.name, "sha256": sha256_file(man.path), "rows": len(man)},
        "backbone": backbone, "weights": None if weights is None else str(weights), "epochs": epochs, "loss": loss,
        "margin": margin, "softmax_weight": softmax_weight, "distill_weight": distill_weight,
        "temperature": temperature, "pooling": pooling, "trainable": mode, "optimizer": optimizer,
        "lr": lr if lr is not None else OPTIMIZERS[optimizer], "weight_decay": weight_decay, "batch_size": batch_size,
        "size": size, "images_per_epoch": anchors, "pool_size": min(pool_size or 2 * anchors, len(train_rows)),
        "categories": categories, "min_category_size": min_category_size, "pair_tau": pair_tau,
        "negative_tau": negative_tau, "val_share": val_share, "patience": patience, "max_images": max_images,
        "seed": seed, "device": dev.type,
    }
    plan_digest = _digest(rows, cats.labels, pairs, train_rows, val_rows)
    net = load_backbone(backbone, weights, seed=seed)
    network = Network(net, pooling, cats.count, seed)
    names = trainable_names(net.model, mode)
    for name, param in net.model.named_parameters():
        param.requires_grad_(name in names)
    teacher = copy.deepcopy(net.model).requires_grad_(False).to(dev) if distill_weight > 0 else None
    # On the device before the optimizer exists, so a resumed optimizer's state lands beside its parameters.
    model_on(network, dev)  # channels-last: 0.58 of NCHW's step time on 2 CPU cores
    params = [p for p in network.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=options["lr"], momentum=0.9, weight_decay=weight_decay) if optimizer == "sgd"
           else torch.optim.AdamW(params, lr=options["lr"], weight_decay=weight_decay))
    data = Data(paths=[man.paths[r] for r in rows], ids=[man.ids[r] for r in rows], x=x, labels=cats.labels,
                partners=partners(len(rows), pairs), train_rows=train_rows, val_rows=val_rows, options=options)
    state = _resume(out, options, plan_digest, network, opt, restart, say)
    steps_per_epoch = anchors // batch_size
    say(f"training {sum(p.numel() for p in params):,} parameters ({mode}) of {net.timm_name} on {dev.type}, "
        f"{steps_per_epoch} steps of {batch_size} tuples per epoch")
    with cpu_threads(dev, threads):
        if state["history"] == [] and len(val_rows):
            figures = validate(network, data, dev, workers)
            state["history"].append({"epoch": 0, "val": figures})
            state["best"] = {"epoch": 0, "score": figures["map7"], "state": _backbone_state(network)}
            say(f"epoch 0 (start): val mAP@7 {figures['map7']:.4f}, recall@1 {figures['recall1']:.4f}")
        try:
            while state["epoch"] < epochs and not state["stopped"]:
                epoch = state["epoch"] + 1
                last = state["history"][-1] if state["history"] else None
                label = f"train epoch {epoch}/{epochs}" + (
                    f" (epoch {last['epoch']}: loss {last['train']['loss']:.3f})" if last and "train" in last else "")
                record = run_epoch(network, teacher, data, opt, epoch, steps_per_epoch, (pair_loss, use_softmax), dev,
                                   workers, progress, total_steps=epochs * steps_per_epoch, label=label)
                if len(val_rows):
                    tic = time.perf_counter()
                    record["val"] = validate(network, data, dev, workers)
                    record["seconds"]["val"] = time.perf_counter() - tic
                    record["seconds"]["total"] += record["seconds"]["val"]
                _advance(state, record, network, patience, len(val_rows) > 0)
                _save_checkpoint(out, state, options, plan_digest, network, opt)
                say(_epoch_line(record, epochs))
                if on_epoch is not None:
                    on_epoch(epoch)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"finished epochs are kept in {out / 'checkpoint.pt'}; "
                                    "run the same command again to resume") from None
    if state["best"] is None:
        state["best"] = {"epoch": state["epoch"], "score": None, "state": _backbone_state(network)}
    return _finish(out, state, options, leak, cats, pairs, data, names, net, started, say)


# ---------------------------------------------------------------- options, checkpoint, output


def check_train_options(options: Mapping[str, Any]) -> None:
    """Refuse (BadInput) keyword options of :func:`train` out of their ranges, before any work (a config's
    ``[[train]]``); options not given take their defaults."""
    defaults = {n: p.default for n, p in inspect.signature(train).parameters.items() if p.default is not p.empty}
    _check_options({**defaults, **options})


def _check_options(o: dict[str, Any]) -> tuple[str | None, bool]:
    check_range("--epochs", o["epochs"], 1, integer=True)
    check_range("--margin", o["margin"], 0, 2, low_open=True)
    for name in ("softmax_weight", "distill_weight", "weight_decay"):
        check_range(f"--{name.replace('_', '-')}", o[name], 0)
    check_range("--temperature", o["temperature"], 0, low_open=True)
    check_range("--lr", o["lr"], 0, low_open=True, optional=True)
    check_range("--batch-size", o["batch_size"], 2, integer=True)
    check_range("--size", o["size"], 32, 1024, integer=True)
    check_range("--images-per-epoch", o["images_per_epoch"], 1, integer=True, optional=True)
    check_range("--pool-size", o["pool_size"], 1, integer=True, optional=True)
    check_range("--max-images", o["max_images"], 2, integer=True, optional=True)
    check_range("--val-share", o["val_share"], 0, 1, high_open=True)
    check_range("--patience", o["patience"], 1, integer=True)
    check_range("--pair-tau", o["pair_tau"], 0, 1, high_open=True)
    check_range("--negative-tau", o["negative_tau"], 0, o["pair_tau"])
    check_range("--threads", o["threads"], 1, integer=True, optional=True)
    check_range("--workers", o["workers"], 0, integer=True, optional=True)
    if o["loss"] not in LOSSES:
        raise BadInput(None, None, f"unknown loss {o['loss']!r}; choose from {', '.join(LOSSES)}")
    if o["pooling"] not in TRAIN_POOLINGS:
        raise BadInput(None, None, f"training pools with {' or '.join(TRAIN_POOLINGS)}, not {o['pooling']!r}")
    if o["optimizer"] not in OPTIMIZERS:
        raise BadInput(None, None, f"unknown optimizer {o['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
    mode = o["trainable"]
    if not (mode in ("auto", "all", "last") or (str(mode).isdigit() and int(mode) >= 1)):
        raise BadInput(None, None, f"--trainable must be auto, all, last or a number of final stages, got {mode!r}")
    return parse_loss(o["loss"])


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def _backbone_state(network: "Network") -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in network.model.state_dict().items()}


def _advance(state: dict, record: dict, network: "Network", patience: int, validating: bool) -> None:
    state["epoch"] = record["epoch"]
    state["history"].append(record)
    if not validating:
        state["best"] = None
        return
    score = record["val"]["map7"]
    if state["best"] is None or score > state["best"]["score"] + 1e-9:
        state["best"] = {"epoch": record["epoch"], "score": score, "state": _backbone_state(network)}
    elif record["epoch"] - state["best"]["epoch"] >= patience:
        state["stopped"] = True


def _resume(out: Path, options: dict, plan_digest: str, network: "Network", opt: torch.optim.Optimizer,
            restart: bool, say: Callable[[str], None]) -> dict:
    fresh = {"epoch": 0, "stopped": False, "history": [], "best": None}
    path = out / "checkpoint.pt"
    if not path.is_file():
        return fresh
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable leftover starts afresh, with a warning
        say(f"warning: {path} is unreadable ({type(exc).__name__}); training starts afresh")
        return fresh
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        say(f"warning: {path} is not a training checkpoint; training starts afresh")
        return fresh
    if json_text(ckpt["options"]) != json_text(options) or ckpt["plan"] != plan_digest:
        if not restart:
            changed = sorted(k for k in options if ckpt["options"].get(k) != options[k]) or ["training data"]
            raise BadInput(path, None, f"an unfinished training with other settings ({', '.join(changed)}) is "
                                       "here; run with the same options to resume it, restart to discard it, "
                                       "or another --out")
        say(f"discarding the unfinished training in {path} (other settings)")
        return fresh
    network.load_state_dict(ckpt["network"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"])
    say(f"resuming after epoch {ckpt['epoch']} from {path}")
    return {"epoch": ckpt["epoch"], "stopped": ckpt["stopped"], "history": ckpt["history"], "best": ckpt["best"]}


def _save_checkpoint(out: Path, state: dict, options: dict, plan_digest: str, network: "Network",
                     opt: torch.optim.Optimizer) -> None:
    ckpt = {"format": CHECKPOINT_FORMAT, "options": options, "plan": plan_digest, "epoch": state["epoch"],
            "stopped": state["stopped"], "history": state["history"], "best": state["best"],
            "network": {k: v.detach().cpu() for k, v in network.state_dict().items()},
            "optimizer": opt.state_dict(), "rng": torch.get_rng_state()}
    with atomic_path(out / "checkpoint.pt") as tmp:
        torch.save(ckpt, tmp)


def _finish(out: Path, state: dict, options: dict, leak: dict, cats, pairs: np.ndarray, data: "Data",
            names: set[str], net, started: float, say: Callable[[str], None]) -> TrainResult:
    buf = io.BytesIO()
    torch.save(state["best"]["state"], buf)
    blob = buf.getvalue()
    net.model.load_state_dict(state["best"]["state"])
    history = state["history"]
    trained = [h for h in history if h["epoch"] > 0]
    summary = {
        "format": FORMAT, "bpcr_version": __version__, "torch": torch.__version__,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "options": options, "leak_check": leak,
        "categories": {"count": cats.count, "sizes": cats.sizes, "top_words": cats.top_words,
                       "without_category": int((cats.labels < 0).sum())},
        "pairs": {"near_identical": int(len(pairs)), "images_with_partner": int(sum(len(p) > 0 for p in data.partners)),
                  "self_pairs": "every anchor (simulated phone photo against its clean view)"},
        "split": {"train_images": int(len(data.train_rows)), "val_images": int(len(data.val_rows))},
        "trainable": {"parameters": int(sum(p.numel() for n, p in net.model.named_parameters() if n in names)),
                      "tensors": len(names),
                      "backbone_parameters": int(sum(p.numel() for p in net.model.parameters()))},
        "epochs": history, "epochs_run": state["epoch"], "stopped_early": bool(state["stopped"]),
        "best_epoch": state["best"]["epoch"], "best_val_map7": state["best"]["score"],
        "start_val_map7": history[0]["val"]["map7"] if history and history[0]["epoch"] == 0 else None,
        "seconds": {"training": sum(h["seconds"]["total"] for h in trained),
                    "this_call": time.perf_counter() - started},
        "weights": {"file": "weights.pt", "sha256": hashlib.sha256(blob).hexdigest(), "backbone": net.timm_name,
                    "state_sha256": state_digest(net.model), "pooling": options["pooling"],
                    "input_size": options["size"], "start": net.weights.as_meta()},
    }
    write_group({out / "weights.pt": blob, out / "train.json": json_text(summary), out / "checkpoint.pt": None})
    say(f"wrote {out / 'weights.pt'} (best epoch {summary['best_epoch']}) and {out / 'train.json'}")
    return TrainResult(out / "weights.pt", out / "train.json", summary)


def _epoch_line(record: dict, epochs: int) -> str:
    t = record["train"]
    val = record.get("val")
    tail = f", val mAP@7 {val['map7']:.4f} recall@1 {val['recall1']:.4f} loss {val['loss']:.4f}" if val else ""
    return (f"epoch {record['epoch']}/{epochs}: loss {t['loss']:.4f} (pairs {t['pair']:.4f}, softmax "
            f"{t['softmax']:.4f}, distill {t['distill']:.4f}), {record['images_per_s']:.1f} images/s{tail}")

