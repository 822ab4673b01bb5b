"""Issue 22: an installed wheel records honest provenance, and public functions answer bad
input with a ValueError/TypeError naming the parameter and its allowed range."""

from __future__ import annotations

import subprocess
from pathlib import Path

from klhuber import results

REPO = Path(__file__).resolve().parent.parent


# -------------------------------------------------------------------------------- provenance


def test_provenance_records_version_and_only_the_checkouts_commit(tmp_path, monkeypatch):
    import klhuber

    record = results.provenance(command="x")
    assert record["klhuber_version"] == klhuber.__version__
    assert record["versions"]["klhuber"] == klhuber.__version__
    assert results.CHECKOUT_ROOT == REPO
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert results.git_commit().startswith(head)
    # an installed wheel: no checkout, so no commit, even inside some other repository
    monkeypatch.setattr(results, "CHECKOUT_ROOT", None)
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("KLHUBER_GIT_COMMIT", raising=False)
    assert results.git_commit() is None
    assert results.provenance(command="x")["git_commit"] is None
    monkeypatch.setenv("KLHUBER_GIT_COMMIT", "abc123")
    assert results.git_commit() == "abc123"
    # a checkout nested in another repository (no .git of its own) records no commit either
    outer = tmp_path / "outer"
    (outer / "klhuber").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    monkeypatch.setattr(results, "CHECKOUT_ROOT", (outer / "klhuber").resolve())
    assert results.git_commit() == "abc123"


# ------------------------------------------------------------------------------ bad input

import math  # noqa: E402
import numbers  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Anything a caller might pass by mistake: wrong signs, zero, NaN, infinities, huge and tiny
#: numbers, fractions where integers belong, numpy scalars, strings, None, containers.
ANYTHING = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10**6, max_value=10**6),
    st.sampled_from([0, -1, 1.5, -0.0, 1e300, -1e300, 1e-320, float("nan"), float("inf"),
                     np.float32(-2.0), np.float64("nan"), np.int64(-3)]),
    st.text(max_size=3), st.none(), st.lists(st.floats(), max_size=2), st.booleans(),
)
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _finite_positive(v):
    return _real(v) and math.isfinite(v) and v > 0


def _positive_int(v):
    return _real(v) and math.isfinite(v) and float(v).is_integer() and v >= 1


def _expect_named_error(call, name):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert name in str(info.value), f"{name!r} not named in: {info.value}"


@pytest.fixture(scope="module")
def small_data():
    from klhuber import toy

    return toy.make_data(("laplace",), (1.0,), (0,), n=16, n_test=16)


@FUZZ
@given(value=ANYTHING, which=st.sampled_from(["alpha", "scale", "n", "k"]))
def test_theory_rmse_rejects_bad_input_by_name(value, which):
    from klhuber import toy

    ok = _positive_int if which in ("n", "k") else _finite_positive
    assume(not ok(value))
    kwargs = {"alpha": 1.0, "scale": 1.0, "n": 100, "k": 8, which: value}
    _expect_named_error(lambda: toy.theory_rmse("laplace", **kwargs), which)


@FUZZ
@given(value=ANYTHING)
def test_optimal_alpha_constant_rejects_bad_interval(value):
    from klhuber import toy

    assume(not (_finite_positive(value) and value < 1e3))
    _expect_named_error(lambda: toy.optimal_alpha_constant("laplace", lo=value), "lo")


@FUZZ
@given(seed=ANYTHING)
def test_make_data_rejects_bad_seeds(seed):
    from klhuber import toy

    assume(not (_real(seed) and math.isfinite(seed) and float(seed).is_integer() and seed >= 0))
    _expect_named_error(lambda: toy.make_data(("laplace",), (1.0,), [seed], n=8, n_test=8),
                        "seeds")


@FUZZ
@given(scale=ANYTHING)
def test_make_data_rejects_bad_scales(scale):
    from klhuber import toy

    assume(not (_finite_positive(scale) and scale <= toy.MAX_SCALE))
    _expect_named_error(lambda: toy.make_data(("laplace",), [scale], (0,), n=8, n_test=8),
                        "scales")


@FUZZ
@given(value=ANYTHING)
def test_gd_and_exact_grids_reject_bad_div_factor_and_tol(value, small_data):
    from klhuber import toy

    if not (_real(value) and not math.isnan(value) and value >= 1):
        _expect_named_error(lambda: toy.gd_grid(small_data, (1.0,), (0.1,), iterations=2,
                                                check_every=1, div_factor=value,
                                                progress=False), "div_factor")
    if not (_real(value) and math.isfinite(value) and value >= 0):
        _expect_named_error(lambda: toy.exact_grid(small_data, (1.0,), tol=value,
                                                   progress=False), "tol")


@FUZZ
@given(a=st.floats(min_value=1e-308, max_value=1e308),
       b=st.floats(min_value=1e-308, max_value=1e308))
def test_configure_answers_or_names_what_is_out_of_range(a, b):
    from klhuber.interpret import configure

    try:
        stage = configure(a, b)
    except ValueError as error:
        assert "label_noise" in str(error) or "implies" in str(error)
        assert "lam must be > 0" not in str(error)
        return
    for value in (stage.lam, stage.alpha, *stage.sigma):
        assert 0 < float(value) < math.inf


def test_configure_extreme_ratio_names_the_inputs():
    from klhuber.interpret import configure

    with pytest.raises(ValueError, match="label_noise / prediction_noise"):
        configure(1e-300, 1e300)


@FUZZ
@given(value=ANYTHING, which=st.sampled_from(["n_bootstrap", "confidence"]))
def test_fit_laplace_scale_rejects_bad_options(value, which):
    from klhuber.interpret import fit_laplace_scale

    if which == "n_bootstrap":
        assume(not (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                    and value >= 0))
    else:
        assume(not (_real(value) and 0 < value < 1))
    kwargs = {"n_bootstrap": 5, which: value}
    _expect_named_error(lambda: fit_laplace_scale([0.1, -0.3, 0.2], **kwargs), which)


def test_fit_laplace_scale_accepts_a_tensor_that_requires_grad():
    torch = pytest.importorskip("torch")
    from klhuber.interpret import fit_laplace_scale

    x = torch.tensor([0.1, -0.4, 0.3, 0.0], requires_grad=True)
    assert fit_laplace_scale(x, n_bootstrap=0).scale == fit_laplace_scale(
        x.detach().numpy(), n_bootstrap=0).scale
    _expect_named_error(lambda: fit_laplace_scale(torch.empty(4, device="meta")), "samples")
    _expect_named_error(lambda: fit_laplace_scale("abc"), "samples")


@FUZZ
@given(gamma=ANYTHING)
def test_hiou_loss_gamma(gamma):
    torch = pytest.importorskip("torch")
    from klhuber.related.harmonic import HIoULoss, hiou_loss

    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    if _real(gamma) and 0 <= gamma <= 1:
        assert torch.isfinite(hiou_loss(boxes, boxes + 0.5, gamma=gamma))
        HIoULoss(gamma=gamma)
        return
    _expect_named_error(lambda: hiou_loss(boxes, boxes, gamma=gamma), "gamma")
    _expect_named_error(lambda: HIoULoss(gamma=gamma), "gamma")


def test_hiou_loss_numpy_gamma_vmap_and_meta():
    torch = pytest.importorskip("torch")
    from klhuber.related.harmonic import hiou_loss

    pred = torch.tensor([[[0.0, 0.0, 2.0, 2.0]], [[1.0, 1.0, 3.0, 4.0]]])
    target = pred + 0.25
    batched = torch.vmap(lambda p, t: hiou_loss(p, t, gamma=np.float32(0.5)))(pred, target)
    assert torch.allclose(batched, torch.stack([hiou_loss(p, t) for p, t in zip(pred, target)]))
    meta = torch.empty(3, 4, device="meta")
    assert hiou_loss(meta, meta).device.type == "meta"
    _expect_named_error(lambda: hiou_loss([[0, 0, 1, 1]], pred[0]), "pred_boxes")
    _expect_named_error(lambda: hiou_loss(pred[0], torch.zeros(1, 3)), "target_boxes")


@FUZZ
@given(value=ANYTHING, which=st.sampled_from(["lr", "momentum", "gamma", "weight_decay"]))
def test_train_config_ranges(value, which):
    pytest.importorskip("torch")
    from klhuber.detection.engine import TrainConfig

    ok = {"lr": lambda v: _finite_positive(v),
          "momentum": lambda v: _real(v) and 0 <= v < 1,
          "gamma": lambda v: _real(v) and 0 < v <= 1,
          "weight_decay": lambda v: _real(v) and 0 <= v < math.inf}[which]
    assume(not ok(value))
    _expect_named_error(lambda: TrainConfig(**{which: value}), which)


# ------------------------------------------------- loss functions: shapes, init range, meta

SHAPES = st.lists(st.integers(min_value=1, max_value=4), min_size=0, max_size=3).map(tuple)


def _broadcasts(*shapes):
    torch = pytest.importorskip("torch")
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return False
    return True


@FUZZ
@given(shapes=st.lists(SHAPES, min_size=4, max_size=4))
def test_laplace_kl_shapes_broadcast_or_are_named(shapes):
    torch = pytest.importorskip("torch")
    from klhuber import laplace_kl

    loc_p, scale_p, loc_q, scale_q = (torch.full(s, v) for s, v in zip(shapes, (0.1, 1.0, 0.0, 2.0)))
    if _broadcasts(*shapes):
        out = laplace_kl(loc_p, scale_p, loc_q, scale_q)
        assert out.shape == torch.broadcast_shapes(*shapes) and bool(torch.isfinite(out).all())
        return
    with pytest.raises(ValueError) as info:
        laplace_kl(loc_p, scale_p, loc_q, scale_q)
    message = str(info.value)
    assert "broadcast" in message
    for name, shape in zip(("loc_p", "scale_p", "loc_q", "scale_q"), shapes):
        assert f"{name} {shape}" in message


@FUZZ
@given(shapes=st.lists(SHAPES, min_size=3, max_size=3), alpha_tensor=st.booleans())
def test_general_loss_shapes_broadcast_or_are_named(shapes, alpha_tensor):
    torch = pytest.importorskip("torch")
    from klhuber.related.barron import general_loss, general_loss_derivative, nll

    x = torch.full(shapes[0], 0.5, dtype=torch.float64)
    alpha = torch.full(shapes[1], 1.0, dtype=torch.float64) if alpha_tensor else 1.0
    scale = torch.full(shapes[2], 2.0, dtype=torch.float64)
    used = [shapes[0], shapes[2]] + ([shapes[1]] if alpha_tensor else [])
    for fn in (general_loss, general_loss_derivative, nll):
        if _broadcasts(*used):
            assert fn(x, alpha, scale).shape == torch.broadcast_shapes(*used)
            continue
        with pytest.raises(ValueError) as info:
            fn(x, alpha, scale)
        message = str(info.value)
        assert "broadcast" in message and f"x {shapes[0]}" in message
        assert f"scale {shapes[2]}" in message


@FUZZ
@given(value=ANYTHING, which=st.sampled_from(["alpha", "beta"]))
def test_adaptive_kl_huber_loss_initial_scales(value, which):
    torch = pytest.importorskip("torch")
    from klhuber import AdaptiveKLHuberLoss

    fi = torch.finfo(torch.get_default_dtype())
    if _real(value) and 0 < value <= fi.max and float(torch.tensor(float(value))) > 0:
        scale = getattr(AdaptiveKLHuberLoss(**{which: value}), which)
        assert bool(torch.isfinite(scale)) and float(scale.detach()) > 0
        return
    _expect_named_error(lambda: AdaptiveKLHuberLoss(**{which: value}), which)


def test_adaptive_losses_name_overflow_and_bad_shapes():
    torch = pytest.importorskip("torch")
    from klhuber import AdaptiveKLHuberLoss
    from klhuber.related.barron import AdaptiveLoss

    with pytest.raises(ValueError, match=r"alpha must be in \[.*3\.4e\+38\].*float32"):
        AdaptiveKLHuberLoss(alpha=1e39)
    with pytest.raises(ValueError, match="beta must be in"):
        AdaptiveKLHuberLoss(beta=1e-50)
    for bad in [(-1,), (0,), (2, -3)]:
        with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
            AdaptiveKLHuberLoss(shape=bad)
    for bad in [(1.5,), None, ("a",), (True,)]:
        _expect_named_error(lambda bad=bad: AdaptiveKLHuberLoss(shape=bad), "shape")
    assert AdaptiveKLHuberLoss(shape=3).alpha.shape == (3,)
    assert AdaptiveKLHuberLoss(shape=(2, 1)).beta.shape == (2, 1)
    _expect_named_error(lambda: AdaptiveLoss(num_dims=1.5), "num_dims")
    _expect_named_error(lambda: AdaptiveLoss(num_dims=-1), "num_dims")
    _expect_named_error(lambda: AdaptiveLoss(scale_init=1e39, dtype=torch.float32), "scale_init")
    _expect_named_error(lambda: AdaptiveLoss(alpha_hi=1e39, dtype=torch.float32), "alpha_hi")


def test_kl_huber_on_meta_tensors_gives_meta_results():
    torch = pytest.importorskip("torch")
    from klhuber import kl_huber, kl_huber_derivative, kl_huber_loss, laplace_kl

    for n in (5, 100_000):  # small and chunk-sized inputs
        x = torch.empty(n, device="meta", requires_grad=True)
        t = torch.empty(n, device="meta")
        for reduction in ("none", "mean", "sum"):
            for impl in ("default", "autograd"):
                out = kl_huber_loss(x, t, 0.5, 2.0, reduction, impl=impl)
                assert out.device.type == "meta"
                assert out.shape == ((n,) if reduction == "none" else ())
        out = kl_huber_loss(x, t)
        out.backward()
        assert x.grad.device.type == "meta" and x.grad.shape == (n,)
        assert kl_huber(x, 1.0).shape == (n,)
    half = torch.empty(3, 2, device="meta", dtype=torch.float16)
    assert kl_huber(half, 1.0).dtype == torch.float16
    assert kl_huber_derivative(half, 1.0, order=2).shape == (3, 2)
    alpha = torch.empty(2, device="meta")
    assert kl_huber(half.float(), alpha, 1.0).shape == (3, 2)
    assert laplace_kl(half.float(), 1.0, 0.0, alpha).shape == (3, 2)


def test_a_negative_zero_alpha_is_the_l1_limit_like_zero():
    # alpha = -0.0 passes the range check (it equals 0); as a tensor it used to give -inf
    # (|x| / -0.0) on the default path. Every zero is the L1 limit |x| / beta, with its gradient.
    import torch

    from klhuber import losses

    x = torch.tensor([-2.0, 0.0, 0.5], dtype=torch.float64)
    want = x.abs() / 1.3
    for alpha in (torch.tensor(-0.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64),
                  -0.0, 0.0):
        for impl in ("default", "autograd"):
            xs = x.clone().requires_grad_()
            value = losses.kl_huber(xs, alpha, 1.3, impl=impl)
            (grad,) = torch.autograd.grad(value.sum(), xs)
            torch.testing.assert_close(value, want, rtol=1e-15, atol=0)
            torch.testing.assert_close(grad, torch.sign(x) / 1.3, rtol=1e-15, atol=0)


def test_an_overflowing_x_over_beta_gives_inf_or_the_value_never_nan():
    # The documented limit of the quadratic branch, (|x|/beta) u phi(u): where |x|/beta exceeds
    # the dtype's range, D may come out inf although it is representable; it must never be NaN
    # or a wrong finite number. Reference: D = alpha g(u) / beta with mpmath.
    import mpmath
    import torch

    from klhuber import losses

    mpmath.mp.dps = 40
    cases = [(torch.float32, 1e30, 1e36, 1e-10), (torch.float32, 3e38, 3.4e38, 0.5),
             (torch.float64, 1e300, 1e305, 1e-10)]
    for dtype, x, alpha, beta in cases:
        xt = torch.tensor([x], dtype=dtype)
        x_ = mpmath.mpf(float(xt))  # x as stored in the dtype
        u = x_ / alpha
        want = float(alpha * (mpmath.exp(-u) - 1 + u) / beta)
        for as_tensor in (False, True):
            a = torch.tensor(alpha, dtype=dtype) if as_tensor else alpha
            b = torch.tensor(beta, dtype=dtype) if as_tensor else beta
            if as_tensor:  # the scales as stored in the dtype
                want = float(mpmath.mpf(float(a)) * (mpmath.exp(-x_ / float(a)) - 1 + x_ / float(a))
                             / float(b))
            for impl in ("default", "autograd"):
                got = float(losses.kl_huber(xt, a, b, impl=impl))
                assert got == math.inf or math.isclose(got, want, rel_tol=8 * torch.finfo(
                    dtype).eps), (dtype, x, alpha, beta, as_tensor, impl, got, want)


def test_the_alpha_gradient_at_a_zero_tensor_alpha_is_the_one_sided_limit():
    # D = (alpha e^{-|x|/alpha} + |x| - alpha)/beta has dD/dalpha -> -1/beta as alpha -> 0+ for
    # x != 0, and D = 0 for every alpha at x = 0: every implementation gives those
    import torch

    from klhuber import losses

    x = torch.tensor([0.5, 0.0, -2.0], dtype=torch.float64)
    for beta in (1.0, 2.5, torch.tensor(2.5, dtype=torch.float64)):
        for impl in ("default", "autograd"):
            alpha = torch.zeros(3, dtype=torch.float64, requires_grad=True)
            value = losses.kl_huber(x, alpha, beta, impl=impl)
            torch.testing.assert_close(value, x.abs() / beta, rtol=0, atol=0)
            (grad,) = torch.autograd.grad(value.sum(), alpha)
            want = torch.tensor([-1.0, 0.0, -1.0], dtype=torch.float64) / beta
            torch.testing.assert_close(grad, want, rtol=1e-15, atol=0, msg=f"{impl} {beta}")
    # and the one-sided difference quotient agrees
    h = 1e-9
    d = (losses.kl_huber(x, h, 2.5) - losses.kl_huber(x, 0.0, 2.5)) / h
    torch.testing.assert_close(d, torch.tensor([-0.4, 0.0, -0.4], dtype=torch.float64),
                               rtol=1e-6, atol=1e-12)
