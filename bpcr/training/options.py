"""The options of ``bpcr train``, each declared once (:mod:`bpcr.options`): the CLI, a config's ``[[train]]``
and ``train.json`` are derived from :class:`TrainOptions`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from bpcr.errors import BadInput
from bpcr.options import check, option
from bpcr.ranges import SEED_MAX, check_range

TRAIN_POOLINGS = ("gem", "mac")
# The loss names (``--loss`` is "<pair>", "<pair>+softmax" or "softmax"; the pair losses are bpcr.training.losses').
LOSSES = ("robust-contrastive+softmax", "robust-contrastive", "contrastive+softmax", "contrastive", "softmax")
# name -> default learning rate. On the demo, SGD at 0.01 lowered the validation mAP@7 within 16 steps of the
# last stage (0.378 -> 0.363), at 0.001 it held (0.378 -> 0.380): fine-tuning pretrained features wants small steps
# (004 §3.3 used 5e-5 on its own loss scale).
OPTIMIZERS = {"sgd": 0.001, "adamw": 1e-4}
TRUNK_CACHE = ("auto", "on", "off")  # bpcr.training.trunk
# Options that change how fast a training runs, never what it computes: train.json and the checkpoint leave them out.
RUNTIME = ("threads", "workers")


@dataclass(frozen=True)
class TrainOptions:
    """How ``bpcr train`` fine-tunes a backbone (004 §3.2-3.3, 002 App. A, 003 §3.1).

    ``epochs``: at most this many passes of ``images_per_epoch`` anchors (default: every training image);
    ``pool_size`` images (default: twice the anchors; at least the anchors, at most 20,000) are embedded each
    epoch to mine hard negatives from. ``trainable``: ``"auto"`` (the last stage on a CPU, everything on a
    GPU), ``"all"``, ``"last"`` or the number of final stages. ``lr`` (default 0.001 for SGD with momentum
    0.9, 1e-4 for AdamW) decays to 0 on a cosine over the planned steps. ``softmax_weight`` (default 0.1): the
    pseudo-category cross-entropy starts near ln C (3.8 for 44 categories) while the pair loss starts near
    0.2; at weight 1 (and SGD at 0.01) the softmax drove the descriptors, and the demo's validation mAP@7 fell
    from 0.378 to 0.267 in one epoch; at 0.1 both terms are of one size. Training stops early once the
    validation mAP@7 has not improved for ``patience`` epochs. ``max_images`` trains on a seeded sample of
    the manifest. Every field's help says the rest.
    """

    backbone: str = option("tf_efficientnet_lite0", "Any timm backbone `extract` takes.")
    weights: str | None = option(None, "Starting weights: FILE, hub or none (default: the bundled ImageNet weights).")
    epochs: int = option(4, "Epochs (early stopping on a held-out share of the database may stop sooner).",
                         low=1, integer=True)
    loss: str = option("robust-contrastive+softmax", "Loss: {choices}.", choices=LOSSES,
                       paper="004 §3.2-3.3, 002, 003")
    margin: float = option(1.0, "Contrastive margin m.", low=0, high=2, low_open=True, paper="004 §3.2")
    softmax_weight: float = option(0.1, "Weight of the pseudo-category softmax in the multi-task sum.", low=0,
                                   paper="004 §3.3")
    distill_weight: float = option(0.0, "Weight of distillation towards the starting model's ImageNet predictions.",
                                   low=0, paper="004 §3.3")
    temperature: float = option(2.0, "Temperature of the distillation's softened predictions.",
                                low=0, low_open=True, cli=False)
    pooling: str = option("gem", "Pooling of the trained descriptor: {choices}.", choices=TRAIN_POOLINGS, cli=False)
    trainable: str | int = option("auto", "auto (the last stage on a CPU, all on a GPU), all, last, head (the "
                                          "layers after the last stage: EfficientNet's conv_head) or a number of "
                                          "final stages.", cli=False)
    optimizer: str = option("sgd", "Optimizer: {choices} (cosine-decayed learning rate).", choices=tuple(OPTIMIZERS))
    lr: float | None = option(None, "Learning rate (default: 0.001 for sgd, 0.0001 for adamw).", low=0,
                              low_open=True)
    weight_decay: float = option(1e-4, "Weight decay.", low=0, cli=False)
    batch_size: int = option(16, "Images per step.", low=2, integer=True)
    size: int = option(224, "Input size in pixels.", low=32, high=1024, integer=True)
    images_per_epoch: int | None = option(None, "Training images drawn per epoch (default: all).", low=1,
                                          integer=True)
    pool_size: int | None = option(None, "Images searched for each epoch's hard negatives (default: twice the "
                                         "images per epoch).", low=1, integer=True)
    categories: int = option(44, "Pseudo-categories mined from the descriptions.", low=2,
                             integer=True, paper="002 App. A")
    min_category_size: int = option(20, "Images a pseudo-category needs; smaller ones are merged "
                                                      "or dropped.", low=1, integer=True)
    pair_tau: float = option(0.9, "Text cosine above which two listings are a positive pair.",
                             low=0, high=1, high_open=True, cli=False)
    negative_tau: float = option(0.5, "Text cosine below which two listings of one "
                                                       "pseudo-category may be negatives (at most pair_tau).",
                                 low=0, cli=False)
    val_share: float = option(0.1, "Share of the database held out for early stopping.", low=0, high=1,
                              high_open=True, cli=False)
    patience: int = option(2, "Epochs without a better validation mAP@7 before training stops.", low=1,
                           integer=True, cli=False, paper="004 §3.3")
    max_images: int | None = option(None, "Train on a seeded sample of this many database images.", low=2,
                                    integer=True, cli=False)
    trunk_cache: str = option("auto", "Run the frozen trunk once per image view and train on its kept outputs: "
                                      "{choices} (auto: on a CPU, when the backbone splits and distillation is off).",
                              choices=TRUNK_CACHE, cli=False)
    views: int = option(4, "Simulated phone photos kept per training image on the cached path.", low=1, high=64,
                        integer=True, cli=False)
    choose: dict[str, list] | None = option(None, "Options to choose on the database's validation split, {name: "
                                                  "[values]}: every combination trains, the best validation mAP@7 "
                                                  "is kept, train.json lists the grid.", cli=False)
    seed: int = option(0, "Seed of sampling, augmentation and initialisation.", low=0, high=SEED_MAX, integer=True)
    device: str = option("auto", "auto (CUDA when present), cpu or cuda[:N].")
    threads: int | None = option(None, "CPU threads of the network (default: every core).", low=1, integer=True,
                                 cli=False)
    workers: int | None = option(None, "Decoding processes (default: chosen by the device).", low=0, integer=True,
                                 cli=False)


# The options ``choose`` may vary: what a training does, never what it trains on or how fast it runs.
CHOOSABLE = ("margin", "lr", "softmax_weight", "epochs", "trainable", "optimizer", "weight_decay", "views")


def grid_points(options: TrainOptions) -> list[dict[str, Any]]:
    """Every combination of ``options.choose``, in the order given (the first value of each first); each checked
    as an option (BadInput for a name not in :data:`CHOOSABLE`, an empty list or a value out of range)."""
    import itertools

    grid = options.choose or {}
    for name, values in grid.items():
        if name not in CHOOSABLE:
            raise BadInput(None, None, f"choose: {name!r} cannot be chosen; choose among {', '.join(CHOOSABLE)}")
        if not isinstance(values, (list, tuple)) or not values:
            raise BadInput(None, None, f"choose: {name} needs a non-empty list of values")
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    for point in points:
        check_train_options(dataclasses.replace(options, choose=None, **point))
    return points


def check_train_options(options: TrainOptions) -> tuple[str | None, bool]:
    """Refuse (BadInput) options out of their ranges, before any work; returns the loss as
    :func:`parse_loss` splits it (pair loss, whether the softmax is on)."""
    check(options)
    if options.choose:
        grid_points(options)
    check_range("--negative-tau", options.negative_tau, 0, options.pair_tau)
    mode = options.trainable
    if not (mode in ("auto", "all", "last", "head") or (str(mode).isdigit() and int(mode) >= 1)):
        raise BadInput(None, None, f"--trainable must be auto, all, last, head or a number of final stages, got "
                                   f"{mode!r}")
    return parse_loss(options.loss)


def parse_loss(name: str) -> tuple[str | None, bool]:
    """A loss name -> (pair loss name or None, whether the pseudo-category softmax is on)."""
    if name not in LOSSES:
        raise BadInput(None, None, f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    if name == "softmax":
        return None, True
    pair, _, extra = name.partition("+")
    return pair, extra == "softmax"


def recorded(options: TrainOptions) -> dict[str, Any]:
    """The options as ``train.json`` and the checkpoint record them (runtime-only ones left out)."""
    record = {k: v for k, v in dataclasses.asdict(options).items() if k not in RUNTIME}
    record["weights"] = None if options.weights is None else str(options.weights)
    return record
