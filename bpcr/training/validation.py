"""``bpcr train``'s validation: retrieval on held-out product groups of the database, shaped like the task.

The figure early stopping and ``choose`` read (:mod:`bpcr.training.train`); never a query.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from bpcr.evaluation.metrics import map_at_k
from bpcr.features.pooling import l2n
from bpcr.training.loop import CATEGORY_SCALE, Data, Network, embed
from bpcr.training.losses import PAIR_LOSSES, category_softmax
from bpcr.training.pseudolabels import negative_rules

VAL_CAP = 1000  # validation images used at most (a seeded sample of the held-out ones)


def validate(network: Network, data: Data, dev: torch.device, workers: int | None) -> dict[str, float]:
    """Retrieval on held-out product groups, shaped like the task: mAP@7, recall@1 and the loss.

    A group is a held-out image with its near-identical listings (the validation split holds groups whole:
    :func:`bpcr.training.pseudolabels.split_validation`). One query per group, the fixed simulated photo of
    its first image, searches the clean held-out images; every image of the group is relevant; mAP@7 is
    :func:`bpcr.evaluation.metrics.map_at_k`, the leaderboard's. The loss is the run's pair loss (robust
    contrastive for "softmax") over each held-out photo's clean view and its nearest negative, plus the softmax
    over the photos.
    """
    o = data.options
    rows = data.val_rows
    if len(rows) > VAL_CAP:
        rows = np.sort(np.random.default_rng([o.seed, 13]).choice(rows, VAL_CAP, replace=False))
    clean = embed(network, data, rows, dev, workers)
    photos = embed(network, data, rows, dev, workers, phone_seed=o.seed)
    if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(photos))):  # a diverged network retrieves nothing
        return {"map7": 0.0, "recall1": 0.0, "loss": float("nan"), "images": int(len(rows)), "queries": 0,
                "diverged": True}
    sims = photos.astype(np.float64) @ clean.astype(np.float64).T
    ids = np.asarray([data.ids[r] for r in rows])
    groups = validation_groups(data, rows)
    ranking, relevant = {}, {}
    for members in groups:
        i = members[0]
        order = np.lexsort((ids, -sims[i]))[:7]
        ranking[ids[i]] = list(ids[order])
        relevant[ids[i]] = [ids[m] for m in members]
    hits = [float(ranking[q][0] in relevant[q]) for q in ranking]
    neg = negative_rules(data.x, data.labels, rows, rows, distinctive=data.distinctive,
                         negative_tau=o.negative_tau, tau=o.pair_tau) == 0
    masked = np.where(neg, sims, -np.inf)
    hardest = masked.argmax(axis=1)
    has_neg = np.isfinite(masked[np.arange(len(rows)), hardest])
    pair_name = o.loss.split("+")[0] if o.loss != "softmax" else "robust-contrastive"
    q = torch.from_numpy(photos)
    qa = torch.cat([q, q[torch.from_numpy(has_neg)]])
    cb = torch.from_numpy(np.concatenate([clean, clean[hardest[has_neg]]]))
    y = torch.cat([torch.ones(len(rows)), torch.zeros(int(has_neg.sum()))])
    loss = float(PAIR_LOSSES[pair_name](qa, cb, y, o.margin))
    if "softmax" in o.loss:
        cls = network.classifier.detach().float().cpu()
        logits = CATEGORY_SCALE * q @ l2n(cls).T
        loss += o.softmax_weight * float(category_softmax(logits, torch.as_tensor(data.labels[rows])))
    return {"map7": map_at_k(ranking, relevant) if ranking else 0.0, "recall1": float(np.mean(hits)) if hits else 0.0,
            "loss": loss, "images": int(len(rows)), "queries": len(ranking)}


def validation_groups(data: Data, rows: np.ndarray) -> list[list[int]]:
    """The product groups among ``rows`` (positions in ``rows``, each group sorted, groups by first member): an
    image and its near-identical listings, joined transitively."""
    from scipy.sparse.csgraph import connected_components

    position = {int(r): i for i, r in enumerate(rows)}
    edges = np.array([(i, position[int(p)]) for i, r in enumerate(rows) for p in data.partners[int(r)]
                      if int(p) in position], dtype=np.int64).reshape(-1, 2)
    graph = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(rows), len(rows)))
    _, label = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for i, group in enumerate(label.tolist()):
        groups.setdefault(group, []).append(i)
    return sorted(groups.values())
