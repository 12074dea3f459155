"""Training losses (bpcr.training.losses) on distances and logits checked by hand."""
from __future__ import annotations

import math

import pytest
import torch

from bpcr.errors import BadInput
from bpcr.training.options import parse_loss
from bpcr.training.losses import (category_softmax, contrastive, distillation, multitask, robust_contrastive,
                         squared_distances)

M = 1.2  # margin: m^2 = 1.44


def _f(t: torch.Tensor) -> float:
    return t.detach().item()


def _pair(q):
    """x_p at the origin, x_q given: d2 = |q|^2."""
    x_p = torch.zeros(1, 2, requires_grad=True)
    x_q = torch.tensor([q], requires_grad=True)
    return x_p, x_q


@pytest.mark.parametrize("loss", [contrastive, robust_contrastive])
def test_inside_the_margin_both_losses_agree(loss):
    # d2 = 0.6^2 + 0.8^2 = 1.0 < m^2 = 1.44
    x_p, x_q = _pair([0.6, 0.8])
    assert _f(loss(x_p, x_q, torch.tensor([1]), M)) == pytest.approx(1.0)
    assert _f(loss(x_p, x_q, torch.tensor([0]), M)) == pytest.approx(1.44 - 1.0)


def test_beyond_the_margin():
    # d2 = 1.5^2 + 2^2 = 6.25 > 1.44
    x_p, x_q = _pair([1.5, 2.0])
    assert _f(contrastive(x_p, x_q, torch.tensor([1]), M)) == pytest.approx(6.25)
    assert _f(robust_contrastive(x_p, x_q, torch.tensor([1]), M)) == pytest.approx(1.44)  # the cap, 004 §3.2
    assert _f(contrastive(x_p, x_q, torch.tensor([0]), M)) == 0.0
    assert _f(robust_contrastive(x_p, x_q, torch.tensor([0]), M)) == 0.0


def test_capped_positive_gives_no_gradient():
    x_p, x_q = _pair([1.5, 2.0])
    robust_contrastive(x_p, x_q, torch.tensor([1]), M).backward()
    assert torch.count_nonzero(x_p.grad) == 0 and torch.count_nonzero(x_q.grad) == 0
    x_p, x_q = _pair([1.5, 2.0])
    contrastive(x_p, x_q, torch.tensor([1]), M).backward()
    assert torch.allclose(x_q.grad, torch.tensor([[3.0, 4.0]]))  # d(d2)/dx_q = 2 (x_q - x_p)


def test_gradients_inside_the_margin_by_hand():
    x_p, x_q = _pair([0.6, 0.8])
    robust_contrastive(x_p, x_q, torch.tensor([1]), M).backward()
    assert torch.allclose(x_q.grad, torch.tensor([[1.2, 1.6]])) and torch.allclose(x_p.grad, -x_q.grad)
    x_p, x_q = _pair([0.6, 0.8])
    robust_contrastive(x_p, x_q, torch.tensor([0]), M).backward()  # m^2 - d2: pushes apart
    assert torch.allclose(x_q.grad, torch.tensor([[-1.2, -1.6]]))
    x_p, x_q = _pair([1.5, 2.0])
    robust_contrastive(x_p, x_q, torch.tensor([0]), M).backward()  # separated negative: no gradient
    assert torch.count_nonzero(x_q.grad) == 0


def test_mean_over_a_mixed_batch():
    x_p = torch.zeros(4, 2)
    x_q = torch.tensor([[0.6, 0.8], [1.5, 2.0], [0.6, 0.8], [1.5, 2.0]])
    y = torch.tensor([1, 1, 0, 0])
    assert squared_distances(x_p, x_q).tolist() == pytest.approx([1.0, 6.25, 1.0, 6.25])
    assert _f(contrastive(x_p, x_q, y, M)) == pytest.approx((1.0 + 6.25 + 0.44 + 0.0) / 4)
    assert _f(robust_contrastive(x_p, x_q, y, M)) == pytest.approx((1.0 + 1.44 + 0.44 + 0.0) / 4)
    assert _f(robust_contrastive(x_p[:0], x_q[:0], y[:0], M)) == 0.0
    with pytest.raises(ValueError):
        contrastive(x_p, x_q, y, margin=0.0)


def test_category_softmax_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]], requires_grad=True)
    # row 0, label 1: p = 3/4; row 1 unlabelled (-1) is left out
    assert _f(category_softmax(logits, torch.tensor([1, -1]))) == pytest.approx(math.log(4 / 3))
    none = category_softmax(logits, torch.tensor([-1, -1]))
    none.backward()
    assert _f(none) == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_distillation_by_hand():
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[math.log(3.0), 0.0]])
    # T = 1: p = (1/2, 1/2), q = (3/4, 1/4); KL(p||q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    assert _f(distillation(student, teacher, 1.0)) == pytest.approx(0.5 * math.log(4 / 3))
    # T = 2: q = softmax(ln3/2, 0) = (r, 1-r) with r = sqrt3/(1+sqrt3); times T^2 = 4
    r = math.sqrt(3) / (1 + math.sqrt(3))
    kl = 0.5 * math.log(0.5 / r) + 0.5 * math.log(0.5 / (1 - r))
    assert _f(distillation(student, teacher, 2.0)) == pytest.approx(4 * kl)
    assert _f(distillation(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    distillation(s, t, 1.0).backward()
    assert t.grad is None and s.grad is not None  # the teacher is a fixed target


def test_multitask_sum_and_names():
    assert _f(multitask(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0), 0.5, 0.25)) == 3.0
    assert parse_loss("robust-contrastive+softmax") == ("robust-contrastive", True)
    assert parse_loss("contrastive") == ("contrastive", False)
    assert parse_loss("softmax") == (None, True)
    with pytest.raises(BadInput):
        parse_loss("triplet")
