"""Barron's general loss (klhuber.related.barron) against closed forms written out here, with
every symmetry broken: a scale c ≠ 1, x < 0 and x > 0 separately, every special α (−∞, −2, 0,
1, 2, +∞) and general ones on both sides of each, on number and tensor α paths."""

from __future__ import annotations

import math

import mpmath
import pytest
import torch

from klhuber.related import barron as B

C = 1.7
XS = {-1: [-9.0, -2.2, -0.6, -0.01], 1: [0.02, 0.7, 2.5, 11.0]}


def rho(x: float, a: float, c: float = C) -> float:
    """Barron (2019), eq. 1 and its limits, evaluated with mpmath at 40 digits."""
    mpmath.mp.dps = 40
    z = (mpmath.mpf(x) / c) ** 2
    if a == 2:
        return float(z / 2)
    if a == 0:
        return float(mpmath.log(z / 2 + 1))
    if a == -math.inf:
        return float(1 - mpmath.exp(-z / 2))
    if a == math.inf:
        return float(mpmath.exp(z / 2) - 1)
    b = abs(mpmath.mpf(a) - 2)
    return float(b / a * ((z / b + 1) ** (mpmath.mpf(a) / 2) - 1))


def drho(x: float, a: float, c: float = C) -> float:
    mpmath.mp.dps = 40
    xm = mpmath.mpf(x)
    z = (xm / c) ** 2
    if a == 2:
        return float(xm / c**2)
    if a == -math.inf:
        return float(xm / c**2 * mpmath.exp(-z / 2))
    if a == math.inf:
        return float(xm / c**2 * mpmath.exp(z / 2))
    b = abs(mpmath.mpf(a) - 2)
    return float(xm / c**2 * (z / b + 1) ** (mpmath.mpf(a) / 2 - 1))


ALPHAS = [-math.inf, -5.0, -2.0, -0.7, 0.0, 0.4, 1.0, 1.5, 2.0, 2.5, 4.0, math.inf]


@pytest.mark.parametrize("sign", [-1, 1], ids=["x<0", "x>0"])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("tensor_alpha", [False, True], ids=["number", "tensor"])
def test_value_and_derivative_one_side_at_a_time(sign, alpha, tensor_alpha):
    xs = [v for v in XS[sign] if not (alpha == math.inf and abs(v) > 5)]  # exp(z/2) overflows
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    a = torch.full_like(x, alpha).detach() if tensor_alpha else alpha
    value = B.general_loss(x, a, C)
    want = torch.tensor([rho(v, alpha) for v in xs], dtype=torch.float64)
    torch.testing.assert_close(value.detach(), want, rtol=1e-11, atol=1e-300)
    (grad,) = torch.autograd.grad(value.sum(), x)
    dwant = torch.tensor([drho(v, alpha) for v in xs], dtype=torch.float64)
    assert bool((torch.sign(dwant) == sign).all())
    torch.testing.assert_close(grad, dwant, rtol=1e-10, atol=1e-300)
    torch.testing.assert_close(B.general_loss_derivative(x.detach(), alpha, C), dwant,
                               rtol=1e-10, atol=1e-300)


def test_scale_is_not_squared_twice_or_ignored():
    x = torch.tensor([0.5, -3.0], dtype=torch.float64)
    for alpha in (-2.0, 0.0, 1.0, 2.0):
        for c in (0.3, 1.0, 4.0):
            want = torch.tensor([rho(v, alpha, c) for v in x.tolist()], dtype=torch.float64)
            torch.testing.assert_close(B.general_loss(x, alpha, c), want, rtol=1e-11, atol=0)
