"""Box coders and box losses with every symmetry broken.

A distinct σ for each coordinate, anchors that are not square and not at the origin, residuals
of both signs and of different sizes per coordinate: swapping σ_w and σ_h, x and y, widths and
heights, or the sign of a residual changes every expected value here.  References are written
out with plain arithmetic (eq. 22, 24, 27, 28, Appendix D), independent of torchvision.
"""

from __future__ import annotations

import math

import pytest
import torch

from klhuber.detection import box_losses as bl

SIGMA = (0.1, 0.2, 0.3, 0.45)  # σx, σy, σw, σh: all different
ANCHOR = (3.0, -2.0, 7.0, 8.0)  # x1, y1, x2, y2: w_a = 4, h_a = 10, centre (5, 3)
BOXES = ((4.0, -1.0, 10.0, 5.0),  # wider than the anchor, shorter: w* = 6, h* = 6
         (2.5, 0.0, 5.0, 12.0))   # narrower and taller: w* = 2.5, h* = 12


def _codes(box, anchor, wh_target):
    """Eq. 22/24 (centres) and eq. 27/28 or Appendix D (sizes), weights 1/σ."""
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    xa, ya = anchor[0] + wa / 2, anchor[1] + ha / 2
    w, h = box[2] - box[0], box[3] - box[1]
    x, y = box[0] + w / 2, box[1] + h / 2
    size = (lambda r: math.log(r)) if wh_target == "log" else (lambda r: r - 1)
    sx, sy, sw, sh = SIGMA
    return [(x - xa) / (sx * wa), (y - ya) / (sy * ha), size(w / wa) / sw, size(h / ha) / sh]


def _decode(codes, anchor, wh_target):
    wa, ha = anchor[2] - anchor[0], anchor[3] - anchor[1]
    xa, ya = anchor[0] + wa / 2, anchor[1] + ha / 2
    sx, sy, sw, sh = SIGMA
    tx, ty, tw, th = codes
    inv = (lambda t: math.exp(t)) if wh_target == "log" else (lambda t: max(1 + t, 0.0))
    x, y = xa + tx * sx * wa, ya + ty * sy * ha
    w, h = inv(tw * sw) * wa, inv(th * sh) * ha
    return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]


@pytest.mark.parametrize("wh_target", ["log", "linear"])
def test_encode_with_distinct_sigma_and_non_square_anchor(wh_target):
    coder = bl.make_box_coder(SIGMA, wh_target)
    anchors = torch.tensor([ANCHOR] * len(BOXES), dtype=torch.float64)
    got = coder.encode_single(torch.tensor(BOXES, dtype=torch.float64), anchors)
    want = torch.tensor([_codes(b, ANCHOR, wh_target) for b in BOXES], dtype=torch.float64)
    torch.testing.assert_close(got, want)
    # both signs occur in every coordinate: the test sees a sign error in any of them
    assert (want > 0).any(0).all() and (want < 0).any(0).all()


@pytest.mark.parametrize("wh_target", ["log", "linear"])
def test_decode_with_distinct_sigma_and_non_square_anchor(wh_target):
    coder = bl.make_box_coder(SIGMA, wh_target)
    codes = [[0.7, -1.3, 0.9, -0.4], [-0.5, 0.8, -1.1, 1.6]]
    anchors = torch.tensor([ANCHOR, ANCHOR], dtype=torch.float64)
    got = coder.decode_single(torch.tensor(codes, dtype=torch.float64), anchors)
    want = torch.tensor([_decode(c, ANCHOR, wh_target) for c in codes], dtype=torch.float64)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("wh_target", ["log", "linear"])
def test_decode_inverts_encode(wh_target):
    coder = bl.make_box_coder(SIGMA, wh_target)
    anchors = torch.tensor([ANCHOR] * len(BOXES), dtype=torch.float64)
    boxes = torch.tensor(BOXES, dtype=torch.float64)
    torch.testing.assert_close(coder.decode_single(coder.encode_single(boxes, anchors), anchors),
                               boxes)


def test_linear_decode_clamps_each_size_on_its_own():
    coder = bl.make_box_coder(SIGMA, "linear")
    # t_w/w_w = -2 (negative width, clamped to 0); t_h/w_h = huge (clamped to exp(clip))
    codes = torch.tensor([[0.0, 0.0, -2.0 / SIGMA[2], 100.0 / SIGMA[3]]], dtype=torch.float64)
    box = coder.decode_single(codes, torch.tensor([ANCHOR], dtype=torch.float64))[0]
    assert box[2] - box[0] == 0
    torch.testing.assert_close(box[3] - box[1],
                               torch.tensor(10.0 * math.exp(bl.DEFAULT_XFORM_CLIP),
                                            dtype=torch.float64))


def test_decode_against_unit_box_is_the_unit_anchor():
    coder = bl.make_box_coder(SIGMA, "log")
    codes = [[0.7, -1.3, 0.9, -0.4]]
    got = bl.decode_against_unit_box(coder, torch.tensor(codes, dtype=torch.float64))
    want = torch.tensor([_decode(codes[0], (0.0, 0.0, 1.0, 1.0), "log")], dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_weights_and_sigma_keep_the_coordinate_order():
    loss = bl.BoxRegressionLoss("huber", 1.0, 1.0, SIGMA, "linear")
    assert loss.weights == pytest.approx([1 / s for s in SIGMA])
    assert loss.sigma == pytest.approx(SIGMA)
    assert loss.box_coder().weights == pytest.approx([1 / s for s in SIGMA])
    assert isinstance(loss.box_coder(), bl.LinearWHBoxCoder)
    assert not isinstance(bl.BoxRegressionLoss("huber", 1.0, 1.0, SIGMA).box_coder(),
                          bl.LinearWHBoxCoder)


def _huber(r, a):
    return r * r / 2 if abs(r) <= a else a * (abs(r) - a / 2)


def _kl_upper(r, a):  # D_{α/2, 1/α}
    b = a / 2
    return a * (b * math.exp(-abs(r) / b) + abs(r) - b)


# residuals of both signs, inside and outside the quadratic zone, different per coordinate
RESIDUALS = [[-2.5, 0.3, 1.7, -0.05], [0.9, -1.4, -0.2, 3.0]]


@pytest.mark.parametrize("kind", ["huber", "smooth_l1", "kl", "l1"])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_loss_of_asymmetric_residuals(kind, alpha):
    lam = 1.7
    loss = bl.BoxRegressionLoss(kind, lam, alpha, SIGMA)
    target = torch.tensor([[0.1, -0.2, 0.3, 0.05], [-0.6, 0.4, 0.0, -1.0]], dtype=torch.float64)
    pred = target + torch.tensor(RESIDUALS, dtype=torch.float64)
    ref = {"huber": lambda r: lam / alpha * _huber(r, alpha),
           "smooth_l1": lambda r: lam * _huber(r, alpha) / alpha,
           "kl": lambda r: lam / alpha * _kl_upper(r, alpha),
           "l1": lambda r: lam * abs(r)}[kind]
    want = torch.tensor([[ref(r) for r in row] for row in RESIDUALS], dtype=torch.float64)
    got = loss.elementwise(pred, target)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(loss.per_sample(pred, target), want.sum(1))
    torch.testing.assert_close(loss(pred, target), want.sum())
    # the gradient: sign and size per coordinate (d/dr of the reference, by central differences)
    pred = pred.clone().requires_grad_(True)
    loss(pred, target).backward()
    eps = 1e-6
    num = [[(ref(r + eps) - ref(r - eps)) / (2 * eps) for r in row] for row in RESIDUALS]
    torch.testing.assert_close(pred.grad, torch.tensor(num, dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)


def test_kl_is_an_upper_bound_of_huber_on_both_sides():
    target = torch.zeros(1, 4, dtype=torch.float64)
    for alpha in (0.5, 2.0):
        huber = bl.BoxRegressionLoss("huber", 1.0, alpha, SIGMA)
        kl = bl.BoxRegressionLoss("kl", 1.0, alpha, SIGMA)
        for sign in (-1, 1):
            pred = sign * torch.tensor([RESIDUALS[0]], dtype=torch.float64).abs()
            assert (kl.elementwise(pred, target) >= huber.elementwise(pred, target)).all()


def test_smooth_l1_with_alpha_zero_is_l1():
    target = torch.zeros(2, 4, dtype=torch.float64)
    pred = torch.tensor(RESIDUALS, dtype=torch.float64)
    got = bl.BoxRegressionLoss("smooth_l1", 2.0, 0.0, SIGMA).elementwise(pred, target)
    torch.testing.assert_close(got, 2.0 * pred.abs())
    assert bl.BoxRegressionLoss("l1", 2.0, 5.0, SIGMA).alpha == 0.0
