"""klhuber.losses with every symmetry broken, on the small- and the large-tensor path.

D_{α,β} is even and D' is odd, so a kernel that drops a sign, swaps α and β or mirrors x < 0
onto x > 0 passes any test that only looks at |x|, at α = β or at one side.  Here the residuals
are all negative or all positive (separately), α ≠ β, and every special case of α is checked:
0 (the L1 limit), small, 1, large, and a tensor α.  Every test runs twice: with the fused C++
kernel the default call takes for number scales (where a compiler is present), and without it,
where tensors of at least 65 536 elements take the chunked CPU path and smaller ones the plain
path.  All are compared with the same reference, a float64 NumPy evaluation of eq. 16 and of
its derivative (Appendix B) written out here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from klhuber import _fused, losses

SMALL, LARGE = 1_000, 70_000  # LARGE is above the chunked path's threshold (65 536)
BETA = 0.7


@pytest.fixture(autouse=True, params=["kernel", "no-kernel"])
def cpu_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default call's CPU route: the fused kernel, or (kernel unavailable) the chunked and
    plain torch paths."""
    if request.param == "kernel" and _fused.cpu_kernel() is None:
        pytest.skip("no C++ compiler: the fused kernel is unavailable")
    if request.param == "no-kernel":
        monkeypatch.setattr(_fused, "cpu_kernel", lambda: None)
    return request.param


def _residuals(n: int, sign: int, alpha: float) -> np.ndarray:
    """|x|/α from 1e-3 to 30 (quadratic and linear regime), with one sign."""
    scale = alpha if alpha > 0 else 1.0
    rng = np.random.default_rng(n + (sign > 0))
    return sign * scale * np.exp(rng.uniform(np.log(1e-3), np.log(30.0), n))


def _d(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    if alpha == 0:
        return np.abs(x) / beta
    u = np.abs(x) / alpha
    return alpha * (np.expm1(-u) + u) / beta


def _d1(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    if alpha == 0:
        return np.sign(x) / beta
    return -np.sign(x) * np.expm1(-np.abs(x) / alpha) / beta


def _d2(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.exp(-np.abs(x) / alpha) / (alpha * beta)


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}


ALPHAS = [0.0, 0.05, 1.0, 3.0]


@pytest.mark.parametrize("n", [SMALL, LARGE], ids=["small", "large"])
@pytest.mark.parametrize("sign", [-1, 1], ids=["x<0", "x>0"])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_gradient_one_sign_at_a_time(n, sign, alpha, dtype):
    x_np = _residuals(n, sign, alpha)
    x = torch.tensor(x_np, dtype=dtype, requires_grad=True)
    value = losses.kl_huber(x, alpha, BETA)
    torch.testing.assert_close(value.detach(), torch.tensor(_d(x_np, alpha, BETA), dtype=dtype),
                               **_tol(dtype))
    (grad,) = torch.autograd.grad(value.sum(), x)
    want = _d1(x_np, alpha, BETA)
    assert np.all(np.sign(want) == sign)
    torch.testing.assert_close(grad, torch.tensor(want, dtype=dtype), **_tol(dtype))
    torch.testing.assert_close(losses.kl_huber_derivative(x.detach(), alpha, BETA),
                               torch.tensor(want, dtype=dtype), **_tol(dtype))
    if alpha > 0:
        torch.testing.assert_close(losses.kl_huber_derivative(x.detach(), alpha, BETA, order=2),
                                   torch.tensor(_d2(x_np, alpha, BETA), dtype=dtype),
                                   **_tol(dtype))


@pytest.mark.parametrize("n", [SMALL, LARGE], ids=["small", "large"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_loss_of_input_minus_target_is_not_target_minus_input(n, reduction):
    """The residual is input − target: the gradient w.r.t. input is D'(input − target) and
    w.r.t. target its negative, with a target that is not zero and residuals of both signs."""
    rng = np.random.default_rng(7)
    target_np = rng.normal(2.0, 1.0, n)
    resid = np.concatenate([_residuals(n // 2, -1, 1.3), _residuals(n - n // 2, 1, 1.3)])
    inp = torch.tensor(target_np + resid, requires_grad=True)
    target = torch.tensor(target_np, requires_grad=True)
    out = losses.kl_huber_loss(inp, target, 1.3, BETA, reduction=reduction)
    values = _d(resid, 1.3, BETA)
    want = {"none": values, "sum": values.sum(), "mean": values.mean()}[reduction]
    torch.testing.assert_close(out.detach(), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-9, atol=1e-12)
    g_in, g_t = torch.autograd.grad(out.sum(), (inp, target))
    d1 = _d1(resid, 1.3, BETA) / (n if reduction == "mean" else 1)
    torch.testing.assert_close(g_in, torch.tensor(d1), rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(g_t, torch.tensor(-d1), rtol=1e-8, atol=1e-14)


def test_alpha_and_beta_are_not_interchangeable():
    x = torch.tensor([-2.0, -0.3, 0.4, 1.9], dtype=torch.float64)
    a, b = 0.5, 2.0
    torch.testing.assert_close(losses.kl_huber(x, a, b),
                               torch.tensor(_d(x.numpy(), a, b)), rtol=1e-12, atol=0)
    assert not torch.allclose(losses.kl_huber(x, a, b), losses.kl_huber(x, b, a))


@pytest.mark.parametrize("n", [SMALL, LARGE], ids=["small", "large"])
def test_tensor_alpha_per_element(n):
    rng = np.random.default_rng(3)
    x_np = np.concatenate([_residuals(n // 2, -1, 1.0), _residuals(n - n // 2, 1, 1.0)])
    a_np = rng.uniform(0.1, 4.0, n)
    x = torch.tensor(x_np, requires_grad=True)
    value = losses.kl_huber(x, torch.tensor(a_np), BETA)
    u = np.abs(x_np) / a_np
    torch.testing.assert_close(value.detach(), torch.tensor(a_np * (np.expm1(-u) + u) / BETA),
                               rtol=1e-9, atol=1e-12)
    (grad,) = torch.autograd.grad(value.sum(), x)
    torch.testing.assert_close(grad, torch.tensor(-np.sign(x_np) * np.expm1(-u) / BETA),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sign", [-1, 1], ids=["x<0", "x>0"])
def test_huber_and_smooth_l1_one_sign_at_a_time(sign):
    x_np = _residuals(SMALL, sign, 1.0)
    x = torch.tensor(x_np, requires_grad=True)
    alpha = 0.8
    h = np.where(np.abs(x_np) <= alpha, x_np**2 / 2, alpha * (np.abs(x_np) - alpha / 2))
    value = losses.huber(x, alpha)
    torch.testing.assert_close(value.detach(), torch.tensor(h), rtol=1e-12, atol=1e-15)
    (grad,) = torch.autograd.grad(value.sum(), x)
    torch.testing.assert_close(grad, torch.tensor(np.clip(x_np, -alpha, alpha)),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(losses.smooth_l1(x.detach(), alpha), torch.tensor(h / alpha),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("n", [SMALL, LARGE], ids=["small", "large"])
def test_bounds_of_eq20_on_both_sides(n):
    alpha = 1.7
    x_np = np.concatenate([_residuals(n // 2, -1, alpha), _residuals(n - n // 2, 1, alpha)])
    lower, upper = losses.huber_bounds(torch.tensor(x_np), alpha)
    torch.testing.assert_close(lower, torch.tensor(_d(x_np, alpha, 1 / alpha)), rtol=1e-9,
                               atol=1e-12)
    torch.testing.assert_close(upper, torch.tensor(_d(x_np, alpha / 2, 1 / alpha)), rtol=1e-9,
                               atol=1e-12)
