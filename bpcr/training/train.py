"""`bpcr train`: fine-tune a backbone on the database alone (004 §3.2-3.3, 002 App. A, 003 §3.1).

Training signal (:mod:`bpcr.training.pseudolabels`; never the queries, never the
ground truth: :func:`~bpcr.training.leakguard.check_no_query_leak` runs first):
pseudo-categories clustered from the descriptions, positive pairs of
near-identical descriptions, and hard negatives mined each epoch with the
current network. Each training *tuple* is

- ``q``: a simulated phone photo (:func:`bpcr.training.augment.phone_photo`) of an anchor image,
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
descriptor. The loss (:mod:`bpcr.training.losses`) is 004's multi-task sum; its
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
``weights.pt`` and ``train.json`` are written together (:func:`bpcr.io.fileio.write_group`).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bpcr import __version__
from bpcr.dataset.manifest import Manifest, read_manifest
from bpcr.device import cpu_threads, resolve_device
from bpcr.errors import BadInput
from bpcr.features.backbones import Backbone, load_backbone, state_digest
from bpcr.features.loader import model_on
from bpcr.io.fileio import atomic_path, json_text, sha256_file, write_group
from bpcr.io.folders import FolderKind, check_output_folder
from bpcr.progress import Progress
from bpcr.training.loop import Data, Network, run_epoch, trainable_names
from bpcr.training.validation import validate
from bpcr.training.options import OPTIMIZERS, TrainOptions, check_train_options, grid_points, recorded
from bpcr.training.trunk import Split, build_views, split
from bpcr.training.leakguard import check_no_query_leak
from bpcr.training.pseudolabels import (RULES, description_vectors, distinctive_terms, partners,
                                        positive_pairs, pseudo_categories, split_validation)

FORMAT = "bpcr-train/1"
CHECKPOINT_FORMAT = "bpcr-train-checkpoint/1"
CHECKPOINT_KEYS = {"options", "plan", "epoch", "stopped", "history", "best", "network", "optimizer", "rng"}
TRAINED = FolderKind("bpcr training folder", ("train.json", "weights.pt", "checkpoint.pt"), any_marker=True,
                     replaced=False)
@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` wrote: ``weights`` (state dict), ``report`` (train.json) and its content."""

    weights: Path
    report: Path
    summary: dict[str, Any]


def train(manifest: str | Path, out: str | Path, options: TrainOptions = TrainOptions(), *,
          queries: str | Path | None = None, ground_truth: str | Path | None = None, restart: bool = False,
          progress: Progress | None = None, log: Callable[[str], None] | None = print,
          on_epoch: Callable[[int], None] | None = None, cache_dir: str | Path | None = None) -> TrainResult:
    """Fine-tune a backbone on the database ``manifest`` as ``options`` say; write ``out/weights.pt`` and
    ``out/train.json``.

    ``queries``: the query manifest to check against (default ``queries.csv`` beside ``manifest``);
    ``ground_truth``: one more file to check against. ``restart`` discards a checkpoint made with other
    options. ``on_epoch(epoch)`` is called once that epoch's checkpoint is on disk. ``cache_dir``: where the frozen
    trunk's outputs are kept (:mod:`bpcr.training.trunk`; default ``.trunk-cache`` beside ``out``). ``log`` hears what the
    run found and did (the categories, each epoch's losses and validation; None: silent); ``progress`` is
    told of each epoch's training images, with the epoch's running loss as its note (:mod:`bpcr.progress`).
    """
    started = time.perf_counter()
    say = log or (lambda message: None)
    loss = check_train_options(options)
    if options.choose:
        return _choose(manifest, out, options, queries=queries, ground_truth=ground_truth, restart=restart,
                       progress=progress, log=log, cache_dir=cache_dir)
    dev = resolve_device(options.device)
    out = check_output_folder(out, "--out", TRAINED)
    man = read_manifest(manifest)
    leak = check_no_query_leak(man, queries, ground_truth)
    plan = _plan(man, options, dev, say)
    net, network, names, teacher, opt = _model(plan.options, plan.cats.count, dev)
    parts = _trunk(plan.options, net, names, dev)
    plan = dataclasses.replace(plan, options=dataclasses.replace(plan.options,
                                                                 trunk_cache="off" if parts is None else "on"))
    data = Data(paths=[man.paths[r] for r in plan.rows], ids=[man.ids[r] for r in plan.rows], x=plan.x,
                labels=plan.cats.labels, partners=partners(len(plan.rows), plan.pairs), train_rows=plan.train_rows,
                val_rows=plan.val_rows, options=plan.options, distinctive=distinctive_terms(plan.x))
    if parts is not None:
        with cpu_threads(dev, options.threads):
            data.views = build_views(parts, net.normalise, data.paths, data.train_rows, data.val_rows,
                                     plan.options.size, plan.options.views, plan.options.seed,
                                     Path(cache_dir) if cache_dir is not None else out.parent / ".trunk-cache", dev,
                                     plan.options.batch_size, progress, say)
        data.head = parts.head
    record = {"manifest": {"file": man.path.name, "sha256": sha256_file(man.path), "rows": len(man)},
              **recorded(plan.options)}
    state = _resume(out, record, plan.digest, network, opt, restart, say)
    steps_per_epoch = plan.options.images_per_epoch // plan.options.batch_size
    say(f"training {sum(p.numel() for p in opt.param_groups[0]['params']):,} parameters ({plan.options.trainable}) "
        f"of {net.timm_name} on {dev.type}, {steps_per_epoch} steps of {plan.options.batch_size} tuples per epoch")
    with cpu_threads(dev, options.threads):
        _fit(out, state, record, plan.digest, network, teacher, data, opt, loss, dev, steps_per_epoch, progress,
             say, on_epoch)
    if state["best"] is None:
        state["best"] = {"epoch": state["epoch"], "score": None, "state": _backbone_state(network)}
    return _finish(out, state, record, leak, plan.cats, plan.pairs, data, names, net, started, say)


@dataclass(frozen=True)
class _Plan:
    """The training data a run draws on, and its options with every default resolved."""

    rows: np.ndarray
    x: Any
    cats: Any
    pairs: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    options: TrainOptions
    digest: str


def _plan(man: Manifest, o: TrainOptions, dev: torch.device, say: Callable[[str], None]) -> _Plan:
    """Pseudo-categories, pairs and the validation split from the descriptions; the resolved options."""
    rows = np.arange(len(man))
    if o.max_images is not None and o.max_images < len(man):
        rows = np.sort(np.random.default_rng([o.seed, 11]).choice(len(man), o.max_images, replace=False))
    descriptions = [man.descriptions[r] for r in rows]
    x, terms = description_vectors(descriptions)
    cats = pseudo_categories(x, terms, o.categories, o.min_category_size, seed=o.seed)
    pairs = positive_pairs(x, o.pair_tau)
    train_rows, val_rows = split_validation(len(rows), pairs, o.val_share, o.seed)
    if len(train_rows) < 2 * o.batch_size:
        raise BadInput(man.path, None, f"{len(train_rows)} training images are too few for batches of {o.batch_size}")
    say(f"{len(rows)} database images: {cats.count} pseudo-categories, {len(pairs)} near-identical pairs, "
        f"{len(train_rows)} to train on, {len(val_rows)} held out for validation")
    for c, (words, n) in enumerate(zip(cats.top_words, cats.sizes)):
        say(f"  category {c:2d} ({n:5d}): {' '.join(words)}")
    mode = ("all" if dev.type == "cuda" else "last") if o.trainable == "auto" else o.trainable
    anchors = min(o.images_per_epoch or len(train_rows), len(train_rows))
    anchors -= anchors % o.batch_size
    if anchors == 0:
        raise BadInput(None, None, f"--images-per-epoch ({o.images_per_epoch}) must hold at least one batch "
                                   f"({o.batch_size})")
    resolved = dataclasses.replace(o, trainable=mode, lr=o.lr if o.lr is not None else OPTIMIZERS[o.optimizer],
                                   images_per_epoch=anchors, pool_size=min(o.pool_size or 2 * anchors, len(train_rows)),
                                   device=dev.type)
    return _Plan(rows, x, cats, pairs, train_rows, val_rows, resolved,
                 _digest(rows, cats.labels, pairs, train_rows, val_rows))


def _model(o: TrainOptions, n_categories: int, dev: torch.device
           ) -> tuple[Backbone, Network, set[str], Any, torch.optim.Optimizer]:
    """The starting backbone, the network trained over it, its trainable tensors, the teacher and the optimizer."""
    net = load_backbone(o.backbone, o.weights, seed=o.seed)
    network = Network(net, o.pooling, n_categories, o.seed)
    names = trainable_names(net.model, o.trainable)
    for name, param in net.model.named_parameters():
        param.requires_grad_(name in names)
    teacher = copy.deepcopy(net.model).requires_grad_(False).to(dev) if o.distill_weight > 0 else None
    # On the device before the optimizer exists, so a resumed optimizer's state lands beside its parameters.
    model_on(network, dev)  # channels-last: 0.58 of NCHW's step time on 2 CPU cores
    params = [p for p in network.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=o.lr, momentum=0.9, weight_decay=o.weight_decay) if o.optimizer == "sgd"
           else torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay))
    return net, network, names, teacher, opt


def _choose(manifest: str | Path, out: str | Path, options: TrainOptions, **kwargs: Any) -> TrainResult:
    """Train every point of ``options.choose`` into ``OUT-grid/<i>/`` and keep the one with the best validation mAP@7
    (held-out product groups of the database, never queries; ties go to the earlier point) as ``OUT``; its
    train.json adds the grid, each point's figure and the choice."""
    say = kwargs.get("log") or (lambda message: None)
    out = check_output_folder(out, "--out", TRAINED)
    points = grid_points(options)
    results = []
    for i, point in enumerate(points):
        shown = ", ".join(f"{k}={v}" for k, v in point.items())
        say(f"grid point {i + 1}/{len(points)}: {shown}")
        result = train(manifest, out.with_name(f"{out.name}-grid") / str(i),
                       dataclasses.replace(options, choose=None, **point), **kwargs)
        results.append({"point": point, "best_val_map7": result.summary["best_val_map7"],
                        "best_epoch": result.summary["best_epoch"], "folder": str(result.weights.parent)})
        say(f"grid point {i + 1}/{len(points)}: {shown}: best validation mAP@7 {result.summary['best_val_map7']}")
    best = max(range(len(results)), key=lambda i: (results[i]["best_val_map7"] or 0.0, -i))
    folder = Path(results[best]["folder"])
    summary = json.loads((folder / "train.json").read_text(encoding="utf-8"))
    summary["options"]["choose"] = options.choose
    summary["grid"] = {"chosen_on": "validation mAP@7 on held-out product groups of the database (never queries)",
                       "points": results, "chosen": results[best]["point"]}
    write_group({out / "weights.pt": (folder / "weights.pt").read_bytes(), out / "train.json": json_text(summary),
                 out / "checkpoint.pt": None})
    say(f"chose {results[best]['point']} (validation mAP@7 {results[best]['best_val_map7']}); wrote {out}")
    return TrainResult(out / "weights.pt", out / "train.json", summary)


def _trunk(o: TrainOptions, net: Backbone, names: set[str], dev: torch.device) -> Split | None:
    """The frozen trunk and trained head when training runs on cached trunk outputs (``trunk_cache``), else None."""
    if o.trunk_cache == "off" or (o.trunk_cache == "auto" and dev.type != "cpu"):
        return None
    parts = split(net.model, names) if o.distill_weight == 0 else None
    if parts is None and o.trunk_cache == "on":
        why = ("distillation reads the full input" if o.distill_weight > 0 else
               f"{net.timm_name} is not a plain chain of stages with a frozen part before {o.trainable!r}")
        raise BadInput(None, None, f"--trunk-cache on: {why}; use auto or off")
    return parts


def _fit(out: Path, state: dict, record: dict, digest: str, network: Network, teacher: Any, data: Data,
         opt: torch.optim.Optimizer, loss: tuple[str | None, bool], dev: torch.device, steps_per_epoch: int,
         progress: Progress | None, say: Callable[[str], None], on_epoch: Callable[[int], None] | None) -> None:
    """Validate the start, then run epochs until ``epochs`` or early stopping, checkpointing after each."""
    o = data.options
    if state["history"] == [] and len(data.val_rows):
        figures = validate(network, data, dev, o.workers)
        state["history"].append({"epoch": 0, "val": figures})
        state["best"] = {"epoch": 0, "score": figures["map7"], "state": _backbone_state(network)}
        say(f"epoch 0 (start): val mAP@7 {figures['map7']:.4f}, recall@1 {figures['recall1']:.4f}")
    try:
        while state["epoch"] < o.epochs and not state["stopped"]:
            epoch = state["epoch"] + 1
            last = state["history"][-1] if state["history"] else None
            label = f"train epoch {epoch}/{o.epochs}" + (
                f" (epoch {last['epoch']}: loss {last['train']['loss']:.3f})" if last and "train" in last else "")
            epoch_record = run_epoch(network, teacher, data, opt, epoch, steps_per_epoch, loss, dev, o.workers, progress,
                                total_steps=o.epochs * steps_per_epoch, label=label)
            if len(data.val_rows):
                tic = time.perf_counter()
                epoch_record["val"] = validate(network, data, dev, o.workers)
                epoch_record["seconds"]["val"] = time.perf_counter() - tic
                epoch_record["seconds"]["total"] += epoch_record["seconds"]["val"]
            _advance(state, epoch_record, network, o.patience, len(data.val_rows) > 0)
            _save_checkpoint(out, state, record, digest, network, opt)
            say(_epoch_line(epoch_record, o.epochs))
            if on_epoch is not None:
                on_epoch(epoch)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"finished epochs are kept in {out / 'checkpoint.pt'}; "
                                "run the same command again to resume") from None


# ---------------------------------------------------------------- options, checkpoint, output


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
    missing = sorted(CHECKPOINT_KEYS - set(ckpt))
    if missing or not _fits(ckpt["network"], network):
        what = f"lacks {', '.join(missing)}" if missing else "holds another network"
        say(f"warning: {path} {what}; training starts afresh")
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


def _fits(saved: object, network: "Network") -> bool:
    """Whether a checkpoint's network state has exactly this network's tensors, by name and shape."""
    own = network.state_dict()
    return isinstance(saved, dict) and set(saved) == set(own) and all(
        isinstance(v, torch.Tensor) and v.shape == own[k].shape for k, v in saved.items())


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
    rules = record.get("negative_rules") or {}
    mined = (f"; negatives {record['hard_negatives_found']}/{record['anchors']}, candidates passed over: "
             + ", ".join(f"{rule} {rules.get(rule, 0)}" for rule in RULES)) if rules else ""
    return (f"epoch {record['epoch']}/{epochs}: loss {t['loss']:.4f} (pairs {t['pair']:.4f}, softmax "
            f"{t['softmax']:.4f}, distill {t['distill']:.4f}), {record['images_per_s']:.1f} images/s{tail}{mined}")

