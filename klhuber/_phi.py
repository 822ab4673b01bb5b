r"""The polynomial approximations of :math:`\varphi(u) = (e^{-u} - 1 + u)/u^2` that every
implementation of :math:`D_{\alpha,\beta}` (eq. 16 of Meyer, CVPR 2021) evaluates below the
switch point ``t``: the eager kernels, the chunked CPU engine, the fused C++ kernel and the
compiled forward, and the :math:`g(v) = e^{-v} - 1 + v` of :mod:`klhuber.related.barron`."""

from __future__ import annotations

import torch
from torch import Tensor

# Polynomial approximations of phi(u) = (e^{-u} - 1 + u) / u^2 on [0, t).
#
# Taylor: phi(u) = sum_k (-u)^k / (k + 2)!.  Terms are kept until the truncation error is far
# below the unit roundoff of the dtype on [0, t).  The switch point t balances the polynomial
# against the cancellation of the direct branch |x| - alpha (1 - e^{-u}), whose relative error is
# about eps * u / g(u) (4.7 eps at u = 0.5, 2.7 eps at u = 1).


#: dtype -> (switch point t, coefficients c_0..c_n of phi in powers of u).  Near-minimax
#: (Chebyshev-node interpolation of phi computed with mpmath at 50 digits); maximum relative
#: error of the polynomial on [0, t]: 1.5e-17 (float64, degree 9 on [0, 0.5]) and 3.4e-10
#: (float32, degree 7 on [0, 1.5]).  Above t the direct branch amplifies the error of exp by
#: e^{-t}/g(t) (5.7 at t = 0.5, 0.31 at t = 1.5), so a 2-ulp exp (CUDA's expf) stays far
#: inside the float32 tolerance.  ``tests/test_losses.py`` re-checks both against mpmath.
PHI_U: dict[torch.dtype, tuple[float, tuple[float, ...]]] = {
    torch.float64: (0.5, (0.5, -0.16666666666666538, 0.04166666666658176, -0.008333333331155702,
                          0.0013888888604959755, -0.00019841248546681163, 2.4800612832459925e-05,
                          -2.7529613436538965e-06, 2.7077661631340097e-07,
                          -2.0367831165025622e-08)),
    torch.float32: (1.5, (0.4999999998734488, -0.16666665585560606, 0.04166651445294726,
                          -0.008332512549877314, 0.0013866992055587442, -0.00019520182875867133,
                          2.2131919772375405e-05, -1.533940728078253e-06)),
}


#: The same polynomials in powers of nu = -u (all coefficients positive).
PHI: dict[torch.dtype, tuple[float, tuple[float, ...]]] = {
    dt: (t, tuple(c * (-1) ** k for k, c in enumerate(cs))) for dt, (t, cs) in PHI_U.items()
}


def opmath(dtype: torch.dtype) -> torch.dtype:
    """Computation dtype: float16/bfloat16 are evaluated in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def horner(u: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    """The polynomial with coefficients ``coeffs`` (lowest degree first) at ``u``."""
    p = torch.full_like(u, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        p = p * u + c
    return p
