"""Training losses, one pure function per equation (``bpcr train``).

Pair losses take two batches of descriptors ``x_p, x_q: (B, D)`` and labels
``y: (B,)`` (1: the pair shows one product, 0: two different products) and
return the mean over the B pairs. The squared Euclidean distance
``d2 = ||x_p - x_q||^2`` is paper 004's; on the L2-normalised descriptors the
kit trains, ``d2 = 2 - 2 cos`` lies in [0, 4], so the margin ``m`` lies in
(0, 2]: ``m = 1`` means "negatives until their cosine falls to 0.5".

Classification losses take logits ``(B, C)``. :func:`multitask` is 004 §3.3's
weighted sum of them all.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bpcr.training.options import TrainOptions

# Declared once, with their ranges and help, in bpcr.training.options.
DEFAULT_MARGIN = TrainOptions.margin
DEFAULT_TEMPERATURE = TrainOptions.temperature


def squared_distances(x_p: Tensor, x_q: Tensor) -> Tensor:
    """``||x_p - x_q||^2`` row by row: (B, D), (B, D) -> (B,)."""
    if x_p.shape != x_q.shape or x_p.dim() != 2:
        raise ValueError(f"pair descriptors must both be (B, D), got {tuple(x_p.shape)} and {tuple(x_q.shape)}")
    return (x_p - x_q).pow(2).sum(dim=1)


def _check_pairs(y: Tensor, d2: Tensor, margin: float) -> Tensor:
    if margin <= 0:
        raise ValueError(f"the margin must be > 0, got {margin}")
    if y.shape != d2.shape:
        raise ValueError(f"labels must be (B,) = {tuple(d2.shape)}, got {tuple(y.shape)}")
    return y.to(d2.dtype)


def contrastive(x_p: Tensor, x_q: Tensor, y: Tensor, margin: float = DEFAULT_MARGIN) -> Tensor:
    """The contrastive loss, 004 §3.1 (eq 1), mean over pairs.

    ``L(Y=1) = d2``; ``L(Y=0) = max(0, m^2 - d2)``, with ``d2 = ||x_p - x_q||^2``.
    A positive pair is always pulled together, however far apart it is.
    An empty batch gives 0.
    """
    d2 = squared_distances(x_p, x_q)
    y = _check_pairs(y, d2, margin)
    if d2.numel() == 0:
        return d2.sum()
    loss = y * d2 + (1 - y) * (margin * margin - d2).clamp_min(0)
    return loss.mean()


def robust_contrastive(x_p: Tensor, x_q: Tensor, y: Tensor, margin: float = DEFAULT_MARGIN) -> Tensor:
    """The robust contrastive loss, 004 §3.2 (eq 2), mean over pairs.

    ``L(Y=1) = min(m^2, d2)``; ``L(Y=0) = max(0, m^2 - d2)``. A positive pair
    farther apart than the margin costs a constant m^2 and gives no gradient:
    two listings too different to look alike (or a wrong textual match) stop
    pulling the network (004 Figure 3). The paper leaves the gradient at exactly
    ``d2 = m^2`` open; here it is that of ``d2`` (``torch.clamp``'s convention).
    """
    d2 = squared_distances(x_p, x_q)
    y = _check_pairs(y, d2, margin)
    if d2.numel() == 0:
        return d2.sum()
    m2 = margin * margin
    loss = y * d2.clamp_max(m2) + (1 - y) * (m2 - d2).clamp_min(0)
    return loss.mean()


def category_softmax(logits: Tensor, labels: Tensor) -> Tensor:
    """Softmax cross-entropy over pseudo-categories: 002 App. A.3 ("Perfect-30K"), 003 §3.1 / §4.2.

    ``logits: (B, C)``, ``labels: (B,)`` in ``0..C-1``, or ``-1`` for an image
    without a category (no usable description), which is left out. Mean over
    the labelled images; 0 (with a gradient of zeros) when none is labelled.
    """
    keep = labels >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


def distillation(student_logits: Tensor, teacher_logits: Tensor,
                 temperature: float = DEFAULT_TEMPERATURE) -> Tensor:
    """KL(teacher || student) at temperature T, times T^2 (Hinton et al. 2015), mean over images.

    The offline stand-in for 004 §3.3's ImageNet softmax. 004 regularises its
    fine-tuning with a softmax loss on ImageNet images and their labels
    ("background negative pairs"), to keep the network from forgetting what it
    knew. ImageNet is not at hand offline, so this is not that loss: the
    student's ImageNet predictions (its frozen classifier on its current
    features) are pulled towards those of the frozen starting model on the
    *same product images*. It keeps the features close to their ImageNet
    meaning as 004's term does, but with soft labels on product images
    instead of true labels on ImageNet images.

    ``student_logits, teacher_logits: (B, K)``; the teacher carries no gradient.
    """
    if temperature <= 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = temperature
    log_q = F.log_softmax(student_logits / t, dim=1)
    log_p = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (t * t)


def multitask(pair_loss: Tensor, softmax_loss: Tensor, distill_loss: Tensor,
              softmax_weight: float, distill_weight: float) -> Tensor:
    """004 §3.3's multi-task objective: the pair loss plus weighted classification losses.

    ``pair_loss + softmax_weight * softmax_loss + distill_weight * distill_loss``.
    004 sums its siamese loss and its two softmax losses with equal weight; the
    weights are parameters here because the pseudo-category softmax and the
    distillation stand in for 004's single ImageNet softmax.
    """
    return pair_loss + softmax_weight * softmax_loss + distill_weight * distill_loss


# The pair losses by name (``--loss`` is "<pair>", "<pair>+softmax" or "softmax").
PAIR_LOSSES = {"contrastive": contrastive, "robust-contrastive": robust_contrastive}
