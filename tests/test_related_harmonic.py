"""Tests for klhuber.related.harmonic (Harmonic loss, HIoU loss) and klhuber.related.symbolic."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from klhuber.related import harmonic as H

F64 = torch.float64


def _smooth_l1(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t.abs() < 1, 0.5 * t**2, t.abs() - 0.5)


def _setup(n: int = 7, c: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=F64, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=g)
    offsets = (2 * torch.randn(n, generator=g, dtype=F64)).requires_grad_()
    return logits, labels, offsets


def test_values_match_definition():
    logits, labels, t = _setup()
    reg = _smooth_l1(t)
    ce = F.cross_entropy(logits, labels, reduction="none")
    p = torch.softmax(logits, -1).gather(1, labels[:, None])[:, 0]
    want = (1 + torch.exp(-reg)) * ce + (1 + p) * reg
    got = H.harmonic_loss(logits, labels, reg, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(H.harmonic_loss(logits, labels, reg), want.mean())
    torch.testing.assert_close(H.HarmonicLoss(reduction="sum")(logits, labels, reg), want.sum())


def test_regression_gradient_is_supplement_eq5():
    logits, labels, t = _setup()
    reg = _smooth_l1(t)
    (g,) = torch.autograd.grad(H.harmonic_loss(logits, labels, reg, reduction="sum"), t)
    p = torch.softmax(logits, -1).gather(1, labels[:, None])[:, 0].detach()
    dl = torch.clamp(t.detach(), -1, 1)  # Smooth L1 derivative
    eq5 = (1 + p + torch.exp(-reg.detach()) * torch.log(p)) * dl
    torch.testing.assert_close(g, eq5, rtol=1e-12, atol=1e-14)
    # detaching beta_r drops the e^{-L} log p term
    reg = _smooth_l1(t)
    (g2,) = torch.autograd.grad(H.harmonic_loss(logits, labels, reg, detach="beta_r",
                                                reduction="sum"), t)
    torch.testing.assert_close(g2, (1 + p) * dl, rtol=1e-12, atol=1e-14)


def test_classification_gradient_is_supplement_eq10():
    # differentiate w.r.t. p directly: write the logits so that softmax gives p exactly
    p = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=F64, requires_grad=True)
    lreg = torch.tensor([0.1, 0.8, 2.0, 0.01], dtype=F64)
    logits = torch.stack([torch.log(p), torch.log1p(-p)], dim=1)
    labels = torch.zeros(4, dtype=torch.long)
    (g,) = torch.autograd.grad(H.harmonic_loss(logits, labels, lreg, reduction="sum"), p)
    torch.testing.assert_close(g, lreg - (1 + torch.exp(-lreg)) / p.detach(), rtol=1e-12, atol=1e-14)
    logits = torch.stack([torch.log(p), torch.log1p(-p)], dim=1)
    (g2,) = torch.autograd.grad(H.harmonic_loss(logits, labels, lreg, detach="both",
                                                reduction="sum"), p)
    torch.testing.assert_close(g2, -(1 + torch.exp(-lreg)) / p.detach(), rtol=1e-12, atol=1e-14)


def test_harmonic_bad_input():
    logits, labels, t = _setup()
    reg = _smooth_l1(t)
    with pytest.raises(ValueError, match="detach"):
        H.harmonic_loss(logits, labels, reg, detach="some")
    with pytest.raises(ValueError, match="reg_loss"):
        H.harmonic_loss(logits, labels, -reg - 1)
    with pytest.raises(ValueError, match="cls_logits"):
        H.harmonic_loss(logits[0], labels, reg)
    with pytest.raises(ValueError, match="reduction"):
        H.harmonic_loss(logits, labels, reg, reduction="avg")


def test_iou_and_hiou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]], dtype=F64)
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 3.0, 3.0]], dtype=F64)
    iou = H.box_iou_pairwise(a, b)
    torch.testing.assert_close(iou, torch.tensor([1 / 7, 1.0, 0.0], dtype=F64))
    for gamma in (0.0, 0.25, 0.5, 1.0):
        got = H.hiou_loss(a, b, gamma=gamma, reduction="none")
        torch.testing.assert_close(got, (1 + iou) ** gamma * (1 - iou))
    torch.testing.assert_close(H.hiou_loss(a, b, 0.0), (1 - iou).mean())
    torch.testing.assert_close(H.HIoULoss(0.5, "sum")(a, b), H.hiou_loss(a, b, 0.5, "sum"))


def test_hiou_gradient_is_supplement_eq12_and_monotone():
    iou = torch.linspace(0, 1, 101, dtype=F64, requires_grad=True)
    for gamma in (-2.0, 0.0, 0.5, 1.0, 1.5, 3.0):
        (g,) = torch.autograd.grad(H.hiou_from_iou(iou, gamma).sum(), iou)
        i = iou.detach()
        eq12 = (1 + i) ** (gamma - 1) * ((gamma - 1) - (gamma + 1) * i)
        torch.testing.assert_close(g, eq12, rtol=1e-12, atol=1e-14)
        assert bool((g <= 1e-15).all()) == (gamma <= 1)


def test_hiou_bad_input():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match="gamma"):
        H.hiou_loss(a, a, gamma=1.5)
    with pytest.raises(ValueError, match="gamma"):
        H.hiou_loss(a, a, gamma=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        H.HIoULoss(gamma=2.0)
    with pytest.raises(ValueError, match="(pred|target)_boxes must satisfy x2 >= x1"):
        H.hiou_loss(torch.tensor([[2.0, 0.0, 1.0, 2.0]]), a)
    with pytest.raises(ValueError, match="(pred|target)_boxes must satisfy x2 >= x1"):
        H.hiou_loss(a, torch.tensor([[0.0, 3.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match="shape"):
        H.hiou_loss(a[0], a[0])
    with pytest.raises(ValueError, match="iou"):
        H.hiou_from_iou(torch.tensor([1.5]), 0.5)
    with pytest.raises(ValueError, match="gamma"):
        H.hiou_from_iou(torch.tensor([0.5]), math.nan)


def test_hiou_trains_boxes():
    target = torch.tensor([[10.0, 10.0, 30.0, 40.0]])
    pred = torch.tensor([[12.0, 5.0, 35.0, 38.0]], requires_grad=True)
    opt = torch.optim.SGD([pred], lr=20.0)
    start = H.hiou_loss(pred, target, 0.5).item()
    for _ in range(50):
        opt.zero_grad()
        H.hiou_loss(pred, target, 0.5).backward()
        opt.step()
    assert H.hiou_loss(pred, target, 0.5).item() < 0.5 * start


def test_symbolic_claims_hold():
    from klhuber.related import symbolic

    results = symbolic.verify_all()
    assert len(results) == 6
    for r in results:
        assert r.holds, (r.name, r.detail)
        assert r.expressions
