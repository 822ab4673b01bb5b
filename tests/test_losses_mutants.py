"""Checks of klhuber.losses that mutation testing (``make mutants``, module ``losses``) found
missing: the errors name the parameter they are about, the modules keep what they are given
(default scale, buffers, reduction, implementation), and smooth L1 with a zero tensor scale has
finite gradients. Each compares with an independent reference (torch's own losses or the
closed form)."""

from __future__ import annotations

import re

import pytest
import torch

from klhuber import losses

X = torch.tensor([-2.5, -0.4, 0.0, 0.3, 1.7], dtype=torch.float64)
T = torch.tensor([0.5, -1.0, 0.2, 0.3, -0.6], dtype=torch.float64)


# ------------------------------------------------------------------ errors name their parameter


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: losses.smooth_l1([1.0], 1.0), TypeError, "x must be a torch.Tensor, got list"),
    (lambda: losses.smooth_l1(X, -1.0), ValueError, "beta must be in [0, inf) (beta >= 0), got -1.0"),
    (lambda: losses.huber(X, 0.0), ValueError, "alpha must be in (0, inf) (alpha > 0), got 0.0"),
    (lambda: losses.kl_huber(X, 1.0, -2), ValueError, "beta must be in (0, inf) (beta > 0), got -2"),
    (lambda: losses.HuberLoss(alpha=0.0), ValueError,
     "alpha must be in (0, inf) (alpha > 0), got 0.0"),
    (lambda: losses.HuberLoss(alpha=-1), ValueError,
     "alpha must be in (0, inf) (alpha > 0), got -1"),
])
def test_errors_name_the_parameter_and_its_range(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


# ------------------------------------------------------------------------------- HuberLoss


def test_huber_loss_module_defaults_to_alpha_one_like_torch():
    got = losses.HuberLoss()(X, T)
    want = torch.nn.functional.huber_loss(X, T, delta=1.0)
    assert torch.equal(got, want)


def test_huber_loss_module_keeps_a_tensor_alpha_as_a_buffer_and_its_reduction():
    alpha = torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0], dtype=torch.float64)
    module = losses.HuberLoss(alpha=alpha, reduction="sum")
    assert set(dict(module.named_buffers())) == {"alpha"}
    assert torch.equal(module.alpha, alpha) and module.alpha is not alpha
    want = sum(torch.nn.functional.huber_loss(X[i:i + 1], T[i:i + 1], delta=float(a),
                                              reduction="sum") for i, a in enumerate(alpha))
    torch.testing.assert_close(module(X, T), want, rtol=1e-15, atol=0)
    # a float alpha with reduction "none": elementwise, as torch's
    elementwise = losses.HuberLoss(alpha=0.5, reduction="none")(X, T)
    assert torch.equal(elementwise,
                       torch.nn.functional.huber_loss(X, T, delta=0.5, reduction="none"))


# ------------------------------------------------------------------------------ KLHuberLoss


def test_kl_huber_loss_module_passes_its_impl(monkeypatch):
    seen = []
    real = losses.kl_huber_loss

    def spy(*args, **kwargs):
        seen.append(kwargs.get("impl"))
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "kl_huber_loss", spy)
    for impl in ("autograd", "fused"):
        losses.KLHuberLoss(alpha=0.5, beta=2.0, impl=impl)(X, T)
    assert seen == ["autograd", "fused"]


def test_adaptive_module_repr_shows_its_shape_reduction_and_objective():
    module = losses.AdaptiveKLHuberLoss(shape=(3,), reduction="sum")
    assert "shape=(3,), reduction='sum', objective='nll'" in repr(module)


# ------------------------------------------------------------------------------ smooth L1


def test_smooth_l1_with_a_zero_tensor_beta_is_l1_with_finite_gradients():
    x = X.clone().requires_grad_(True)
    beta = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    value = losses.smooth_l1(x, beta)
    want = torch.stack([torch.nn.functional.smooth_l1_loss(X[i], torch.zeros(()).double(),
                                                           beta=float(b))
                        for i, b in enumerate(beta)])
    torch.testing.assert_close(value, want, rtol=1e-15, atol=0)
    value.sum().backward()
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.tensor([-1.0, -1.0, 0.0, 0.3, 1.0]).double())


def _d(x, alpha, beta):
    """D_{α,β}(x) of eq. 16, written out."""
    return (alpha * torch.exp(-x.abs() / alpha) + x.abs() - alpha) / beta


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_kl_huber_loss_module_with_a_learnable_alpha_adds_the_kl_terms(reduction):
    # one learnable scale: objective "kl" = D + α/β − 1 − log(α/β) (eq. 15), elementwise
    # before the reduction
    alpha = torch.nn.Parameter(torch.tensor([0.5, 1.0, 2.0, 0.25, 3.0], dtype=torch.float64))
    beta = 2.0
    module = losses.KLHuberLoss(alpha=alpha, beta=beta, reduction=reduction)
    assert module.objective == "kl"
    a = alpha.detach()
    want = _d(X - T, a, beta) + a / beta - 1 - torch.log(a / beta)
    want = {"none": want, "sum": want.sum(), "mean": want.mean()}[reduction]
    torch.testing.assert_close(module(X, T), want, rtol=1e-13, atol=1e-15)


def test_kl_huber_loss_module_computes_the_terms_in_the_inputs_precision(monkeypatch):
    # float32 learnable scales, float64 inputs: the terms are computed in float64 (the scales
    # are converted first), so they match the closed form to float64 rounding
    alpha = torch.nn.Parameter(torch.full((5,), 0.5))
    beta = torch.nn.Parameter(torch.full((5,), 2.0))
    module = losses.KLHuberLoss(alpha=alpha, beta=beta, reduction="none", impl="autograd")
    assert module.objective == "nll"
    out = module(X, T)
    assert out.dtype == torch.float64
    # cross-entropy: D + α/β + log(2β)
    want = _d(X - T, 0.5, 2.0) + 0.25 + torch.log(torch.tensor(4.0, dtype=torch.float64))
    torch.testing.assert_close(out, want, rtol=1e-13, atol=1e-15)
    seen = []
    real = losses.kl_huber_loss
    monkeypatch.setattr(losses, "kl_huber_loss",
                        lambda *a, **k: seen.append(k.get("impl")) or real(*a, **k))
    module(X, T)
    assert seen == ["autograd"]
