"""API-level checks of klhuber.related.barron that mutation testing (module ``related``) found
missing: the dtype and device of the results (float32 and half inputs computed in float64 /
float32 and rounded once, a Python-float argument taking the dtype of the tensor ones), the
shape errors naming exactly the tensor arguments, gradients summed back to broadcast shapes and
to the parameters that need them, the tabulated log Z above alpha = 3 and in half precision, the
documented dtype rule of ``_work_dtype`` on MPS, and the default scale of ``nll``. References:
float64 evaluations of the same functions, SciPy quadrature (``log_partition_quad``), torch's
own broadcasting rules and the documented contracts."""

from __future__ import annotations

import re

import pytest
import torch

from klhuber.related import barron as B

F32, F64 = torch.float32, torch.float64


# --------------------------------------------------------------------------------------------
# dtypes: work dtype, rounding once, dtype of mixed arguments
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, expected", [
    (torch.float32, torch.float32), (torch.float16, torch.float32),
    (torch.bfloat16, torch.float32), (torch.float64, torch.float64)])
def test_work_dtype_on_mps_is_float32_for_float32_and_half(dtype, expected):
    """Documented: MPS has no float64, so float32 and half inputs are computed in float32
    there (a device object needs no MPS hardware)."""
    assert B._work_dtype(dtype, torch.device("mps")) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_work_dtype_off_mps_is_float64(dtype):
    assert B._work_dtype(dtype, torch.device("cpu")) == torch.float64


@pytest.mark.parametrize("alpha_kind", ["float", "tensor"])
def test_float32_huge_residuals_are_computed_in_float64(alpha_kind):
    """(x/c)^2 = 1e40 overflows float32 but not the float64 work dtype: the loss ~ z^{a/2}/a
    is finite (documented for |x| = 1e20), for 0-dim and vector x and scale."""
    alpha = 1.5 if alpha_kind == "float" else torch.tensor(1.5, dtype=F32)
    cases = [
        (torch.tensor([1e20, -3e19], dtype=F32), 1.0),                       # vector x, 0-dim c
        (torch.tensor(1e20, dtype=F32), torch.tensor([1.0, 2.0], dtype=F32)),  # 0-dim x, vector c
    ]
    for x, c in cases:
        out = B.general_loss(x, alpha, c)
        ref = B.general_loss(x.double(), 1.5, c.double() if isinstance(c, torch.Tensor) else c)
        assert out.dtype == F32
        assert torch.isfinite(out).all(), (x, c, out)
        torch.testing.assert_close(out, ref.float(), rtol=2**-23, atol=0)


def test_float32_loss_with_tensor_alpha_is_float64_rounded_once():
    """alpha = 0.1 as a float32 tensor: 2 - alpha is not a float32, so the computation must not
    round it; the result equals the float64 loss of the same (float32) inputs rounded once."""
    x = torch.linspace(-30, 30, 301, dtype=F32)
    for a in (0.1, 0.3, -1.7):
        alpha = torch.tensor(a, dtype=F32)
        out = B.general_loss(x, alpha, 0.7)
        ref = B.general_loss(x.double(), alpha.double(), torch.tensor(0.7, dtype=F32).double())
        assert out.dtype == F32
        assert torch.equal(out, ref.float()), a


@pytest.mark.parametrize("fn", [B.general_loss, B.nll])
def test_python_float_x_takes_the_dtype_of_tensor_parameters(fn):
    """The result dtype comes from the first floating tensor among (x, alpha, scale), as the
    docstring of _prepare says: a float x with float64 parameters gives float64."""
    alpha = torch.tensor([0.5, 1.5], dtype=F64)
    out = fn(0.3, alpha, torch.tensor(0.9, dtype=F64))
    assert out.dtype == F64
    ref = fn(torch.tensor(0.3, dtype=F64), alpha, 0.9)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("fn", [B.general_loss, B.nll])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_outputs_keep_the_input_dtype(fn, dtype):
    x = torch.tensor([-2.0, 0.5, 3.0], dtype=dtype)
    for alpha in (1.5, torch.tensor([0.5, 1.0, 4.0], dtype=dtype)):
        assert fn(x, alpha, torch.tensor(0.5, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nll_in_half_is_the_float32_value_rounded_once(dtype):
    """nll of half inputs is computed in float32 and rounded once: with scale 0.01 the terms
    rho, log c = -4.6 and log Z nearly cancel, so summing half-rounded terms would be off by
    several ulp."""
    x = torch.linspace(0.0, 0.12, 41).to(dtype)
    alpha = torch.tensor([0.25, 0.5, 1.5, 2.5], dtype=dtype)[:, None]
    scale = torch.tensor(0.01, dtype=dtype)
    out = B.nll(x, alpha, scale)
    ref = B.nll(x.double(), alpha.double(), scale.double())
    assert out.dtype == dtype
    # one rounding of a float32 value: within one half-ulp step of the float64 value
    err = (out.double() - ref).abs()
    ulp = torch.finfo(dtype).eps * ref.abs().clamp_min(2.0 ** -14)
    assert bool((err <= ulp).all()), float((err / ulp).max())


# --------------------------------------------------------------------------------------------
# log Z: dtypes, alpha > 3, devices
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_log_partition_keeps_dtype_and_matches_quadrature(dtype):
    """Half inputs are interpolated in float32 (a half grid would merge the 0.0005-spaced
    knots near 2) and rounded once; float32/float64 and Python floats keep their dtype."""
    alphas = [0.0002, 0.7, 1.999, 2.0004, 2.6, 3.0, 3.3, 5.0, 12.0, 700.0]
    a = torch.tensor(alphas, dtype=dtype)
    out = B.log_partition(a)
    assert out.dtype == dtype
    ref = torch.tensor([B.log_partition_quad(float(v)) for v in a.double()], dtype=F64)
    tol = {torch.float64: 1e-6, torch.float32: 1e-6}.get(dtype, 0.0)
    err = (out.double() - ref).abs()
    # half: the float32 value rounded once (one ulp step), plus the table's 1e-6
    bound = tol + (torch.finfo(dtype).eps * ref.abs() + 1e-6 if tol == 0.0 else 0.0)
    assert bool((err <= bound).all()), (dtype, err)


@pytest.mark.parametrize("alpha", [3.0001, 4.0, 5.0, 10.0, 30.0, 1000.0])
def test_log_partition_above_three_matches_quadrature(alpha):
    """Above alpha = 3 the table is in w = 1/alpha; documented error below 1e-6."""
    assert B.log_partition(alpha).dtype == torch.get_default_dtype()
    out = B.log_partition(torch.tensor(alpha, dtype=F64))
    assert abs(float(out) - B.log_partition_quad(alpha)) < 1e-6


def test_log_partition_of_a_python_float_is_on_the_cpu_under_a_default_device():
    """A Python-float alpha is computed on the CPU (as its tables), whatever the default
    device; here the default device is 'meta', which would carry no value."""
    ref = B.log_partition(0.5)
    with torch.device("meta"):
        out = B.log_partition(0.5)
    assert out.device.type == "cpu"
    assert torch.equal(out, ref)


# --------------------------------------------------------------------------------------------
# nll: default scale
# --------------------------------------------------------------------------------------------
def test_nll_default_scale_is_one():
    x = torch.tensor([-1.5, 0.2, 4.0], dtype=F64)
    for alpha in (0.5, torch.tensor([0.0, 1.0, 3.5], dtype=F64)):
        assert torch.equal(B.nll(x, alpha), B.nll(x, alpha, 1.0))


# --------------------------------------------------------------------------------------------
# shape errors: name the arguments, list exactly the tensor arguments' shapes
# --------------------------------------------------------------------------------------------
SHAPE_CASES = [
    # (x, alpha, scale, listed shapes)
    (torch.zeros(3), torch.ones(4), 1.0, "x (3,), alpha (4,)"),
    (torch.zeros(3), 1.0, torch.ones(4), "x (3,), scale (4,)"),
    (torch.zeros(3), torch.ones(3), torch.ones(4), "x (3,), alpha (3,), scale (4,)"),
    (torch.zeros(2, 3), torch.ones(2), torch.ones(3), "x (2, 3), alpha (2,), scale (3,)"),
]


@pytest.mark.parametrize("fn", [B.general_loss, B.nll])
@pytest.mark.parametrize("x, alpha, scale, shapes", SHAPE_CASES)
def test_shape_errors_list_exactly_the_tensor_arguments(fn, x, alpha, scale, shapes):
    msg = f"x, alpha, scale must have shapes that broadcast together; got {shapes}"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        fn(x, alpha, scale)


def test_nll_reports_the_shape_error_before_value_errors():
    """Shapes are checked first: a non-broadcasting negative alpha or scale reports shapes."""
    with pytest.raises(ValueError, match="broadcast"):
        B.nll(torch.zeros(3), torch.full((4,), -1.0), 1.0)
    with pytest.raises(ValueError, match="broadcast"):
        B.nll(torch.zeros(3), 1.0, torch.full((4,), -1.0))
    with pytest.raises(ValueError, match="broadcast"):
        B.nll(torch.zeros(3), torch.ones(3), torch.full((4,), -1.0))


# --------------------------------------------------------------------------------------------
# gradients: broadcast shapes, which parameters get one, devices
# --------------------------------------------------------------------------------------------
def _fd(f, v: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences of sum(f(v)) in every entry of v (float64)."""
    out = torch.empty_like(v)
    for i in range(v.numel()):
        e = torch.zeros_like(v).view(-1)
        e[i] = h
        e = e.view_as(v)
        out.view(-1)[i] = (f(v + e).sum() - f(v - e).sum()) / (2 * h)
    return out


@pytest.mark.parametrize("alpha", [0.5, 1.5, "tensor"])
def test_gradients_are_summed_to_the_broadcast_shapes(alpha):
    """x (2, 3), scale (1, 3) and 0-dim, alpha (2, 1): each gradient has its input's shape and
    equals float64 central differences of the summed loss."""
    x = torch.tensor([[-2.0, 0.3, 1.7], [0.9, -0.4, 3.0]], dtype=F64)
    a = torch.tensor([[0.5], [1.5]], dtype=F64) if alpha == "tensor" else alpha
    for c in (torch.tensor([[0.8, 1.1, 1.9]], dtype=F64), torch.tensor(1.3, dtype=F64)):
        xg, cg = x.clone().requires_grad_(), c.clone().requires_grad_()
        ag = a.clone().requires_grad_() if alpha == "tensor" else a
        B.general_loss(xg, ag, cg).sum().backward()
        assert xg.grad.shape == x.shape and cg.grad.shape == c.shape
        torch.testing.assert_close(xg.grad, _fd(lambda v, c=c: B.general_loss(v, a, c), x),
                                   rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(cg.grad, _fd(lambda v: B.general_loss(x, a, v), c),
                                   rtol=1e-7, atol=1e-9)
        if alpha == "tensor":
            assert ag.grad.shape == a.shape
            torch.testing.assert_close(ag.grad, _fd(lambda v, c=c: B.general_loss(x, v, c), a),
                                       rtol=1e-6, atol=1e-9)


def test_alpha_gets_its_gradient_when_scale_is_fixed():
    """The alpha-gradient is returned whenever alpha requires grad, whatever scale needs."""
    x = torch.tensor([-2.0, 0.3, 1.7], dtype=F64)
    a = torch.tensor([0.5, 1.5, 3.0], dtype=F64, requires_grad=True)
    for c in (1.2, torch.tensor(1.2, dtype=F64)):
        a.grad = None
        B.general_loss(x, a, c).sum().backward()
        assert a.grad is not None
        torch.testing.assert_close(a.grad, _fd(lambda v: B.general_loss(x, v, 1.2), a.detach()),
                                   rtol=1e-6, atol=1e-9)


def test_backward_with_a_float_alpha_stays_on_the_input_device():
    """With a Python-float alpha, backward builds alpha on x's device (meta here: shapes only;
    a CPU alpha would mix devices)."""
    x = torch.empty(2, 3, device="meta", requires_grad=True)
    c = torch.empty(3, device="meta", requires_grad=True)
    B.general_loss(x, 0.5, c).sum().backward()
    assert x.grad.device.type == "meta" and x.grad.shape == (2, 3)
    assert c.grad.device.type == "meta" and c.grad.shape == (3,)


@pytest.mark.parametrize("alpha", [1e-5, 1e-4, 2.9999, 3.0, 3.002, 3.005])
def test_log_partition_at_the_ends_of_the_tables_matches_quadrature_to_1e8(alpha):
    """At the first and last knots of the alpha table ([0, 3]) and of the w = 1/alpha table
    (alpha just above 3) the spline uses its own end segment: the documented measured
    interpolation error (8e-9) holds there too (quadrature accurate to ~1e-13)."""
    out = B.log_partition(torch.tensor(alpha, dtype=F64))
    assert abs(float(out) - B.log_partition_quad(alpha)) < 1e-8


def test_float32_log_partition_gradient_at_knots_is_float64_rounded():
    """At round alphas (knots of the table, e.g. AdaptiveLoss's starting alpha = 1) the spline's
    derivative is its tangent, which float32 keeps to a few ulp of the float64 gradient."""
    knots = [0.5, 1.0, 1.5, 2.5, 2.05]
    a32 = torch.tensor(knots, dtype=F32, requires_grad=True)
    a64 = torch.tensor(knots, dtype=F64, requires_grad=True)
    g32, = torch.autograd.grad(B.log_partition(a32).sum(), a32)
    g64, = torch.autograd.grad(B.log_partition(a64).sum(), a64)
    torch.testing.assert_close(g32.double(), g64, rtol=5e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_log_partition_is_the_float32_value_rounded_once(dtype):
    """Documented: half inputs are computed in float32 (also the singular term
    (alpha - 2) log|alpha - 2| / 4) and rounded once, so the result equals the float32 result
    of the same alphas, rounded; every half alpha in [0, 3.5] is checked."""
    a = torch.linspace(0, 3.5, 20001, dtype=F64).to(dtype).unique()
    out = B.log_partition(a)
    assert out.dtype == dtype
    assert torch.equal(out, B.log_partition(a.float()).to(dtype))
