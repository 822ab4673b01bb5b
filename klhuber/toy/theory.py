r"""Asymptotic theory: the variance of the M-estimator and the best alpha, :math:`\alpha^* = c_f s`.

For noise of scale :math:`s` from a location-scale family :math:`f`, the M-estimator of a loss
with transition point :math:`\alpha` has the asymptotic variance :math:`V(\alpha) =
E[\psi_\alpha(\epsilon)^2] / E[\psi_\alpha'(\epsilon)]^2` (:func:`asymptotic_variance`), and
:math:`V(\alpha; s) = s^2 V(\alpha/s; 1)`, so the :math:`\alpha` minimising it is
:math:`c_f s` (:func:`optimal_alpha_constant`); :func:`theory_rmse` turns :math:`V` into a test
RMSE.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from klhuber.toy._common import (
    _check_finite_at_least,
    _check_positive_grid,
    _check_positive_int,
)
from klhuber.toy.data import K_PAPER, N_TRAIN, STUDENT_T_DF, _check_family
from klhuber.toy.formulas import ALPHA_LOSSES, LOSS_ALIASES

__all__ = ["asymptotic_variance", "optimal_alpha_constant", "theory_rmse"]




def _scipy_dist(family: str, scale: float = 1.0) -> Any:
    from scipy import stats

    _check_family(family)
    return {
        "laplace": stats.laplace,
        "logistic": stats.logistic,
        "cauchy": stats.cauchy,
        "normal": stats.norm,
    }.get(family, lambda scale: stats.t(STUDENT_T_DF, scale=scale))(scale=scale)


def asymptotic_variance(family: str, alpha: float, scale: float = 1.0, loss: str = "huber") -> float:
    """:math:`V(\\alpha) = E[\\psi_\\alpha(\\epsilon)^2] / E[\\psi_\\alpha'(\\epsilon)]^2` for noise
    ``family`` with ``scale`` (numerical integration; ``loss`` is ``"huber"`` or ``"kl_lower"``).

    For a linear model with features of Gram matrix :math:`G`, the M-estimator is asymptotically
    normal with covariance :math:`V(\\alpha) G^{-1} / N`, so the expected squared test error is
    about :math:`V(\\alpha) K / N` with orthonormal features (:func:`theory_rmse`).
    """
    from scipy import integrate

    _check_positive_grid(alpha, "alpha")
    _check_positive_grid(scale, "scale")
    name = LOSS_ALIASES.get(loss, loss) if isinstance(loss, str) else loss
    if name not in ALPHA_LOSSES:
        raise ValueError(f"loss must be one of {ALPHA_LOSSES}, got {loss!r}")
    a, d = float(alpha), _scipy_dist(family, scale)
    if name == "huber":
        e2 = 2 * integrate.quad(lambda e: e * e * d.pdf(e), 0, a, limit=200)[0] + 2 * a * a * d.sf(a)
        ep = _central_mass(d, a)
    else:
        e2 = 2 * integrate.quad(lambda e: (a * math.expm1(-e / a)) ** 2 * d.pdf(e), 0, np.inf,
                                limit=400)[0]
        ep = 2 * integrate.quad(lambda e: math.exp(-e / a) * d.pdf(e), 0, np.inf, limit=400)[0]
    return float(e2 / ep**2)


def _central_mass(d: Any, a: float) -> float:
    """:math:`P(|\\epsilon| < a)` for a symmetric ``d``, accurate for every ``a`` > 0.

    ``2 * (cdf(a) - 0.5)`` cancels when ``a`` is far below the noise scale (it lost all digits
    at ``a = 1e-8``), so below the upper quartile the density is integrated instead; above it,
    ``1 - 2 * sf(a)`` has no cancellation.
    """
    from scipy import integrate

    tail = float(d.sf(a))
    if tail > 0.25:
        return 2 * integrate.quad(d.pdf, 0, a, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    return 1 - 2 * tail


@functools.lru_cache(maxsize=65536)
def _unit_variance(family: str, u: float, loss: str) -> float:
    return asymptotic_variance(family, u, 1.0, loss)


def theory_rmse(family: str, alpha: float, scale: float, n: int = N_TRAIN, k: int = K_PAPER,
                loss: str = "huber") -> float:
    """Asymptotic test RMSE :math:`\\sqrt{V(\\alpha) K / N}` (orthonormal features).

    Uses :math:`V(\\alpha; s) = s^2 V(\\alpha/s; 1)` (location-scale equivariance).
    ``alpha`` and ``scale`` must be finite and > 0 (with a finite ratio), ``n`` and ``k``
    integers >= 1.
    """
    _check_family(family)
    _check_finite_at_least(alpha, "alpha", 0.0, strict=True)
    _check_finite_at_least(scale, "scale", 0.0, strict=True)
    n = _check_positive_int(n, "n")
    k = _check_positive_int(k, "k")
    u = float(np.float64(alpha) / np.float64(scale))
    if not 0 < u < math.inf:
        raise ValueError(f"alpha / scale must be a positive finite number, got "
                         f"alpha={alpha!r}, scale={scale!r}")
    return math.sqrt(scale * scale * _unit_variance(family, u, loss) * k / n)


def optimal_alpha_constant(family: str, loss: str = "huber", *, lo: float = 1e-3,
                           hi: float = 1e3) -> dict[str, Any]:
    """The :math:`c_f` with :math:`\\alpha^*(s) = c_f\\,s` minimising :math:`V` (unit scale).

    Searches :math:`\\alpha \\in [lo, hi]` (log scale).  When the minimum is at an end of the
    interval, ``c`` is reported as the limit (0: L1 / the median is best, e.g. Laplace;
    ``inf``: L2 / the mean is best, e.g. Normal) and ``boundary`` says which.
    """
    from scipy import optimize

    _check_family(family)
    lo = _check_finite_at_least(lo, "lo", 0.0, strict=True)
    hi = _check_finite_at_least(hi, "hi", 0.0, strict=True)
    if not lo < hi:
        raise ValueError(f"lo must be < hi (the search interval [lo, hi]), got lo={lo!r}, "
                         f"hi={hi!r}")

    def f(la: float) -> float:
        return asymptotic_variance(family, math.exp(la), 1.0, loss)

    res = optimize.minimize_scalar(f, bounds=(math.log(lo), math.log(hi)), method="bounded",
                                   options={"xatol": 1e-6})
    c = math.exp(res.x)
    boundary = None
    v_l1 = _v_limit(family, "l1")
    v_l2 = _v_limit(family, "l2")
    # a minimum at an end of the interval, or one no better than a limit (flat plateau), is the limit
    if c < lo * 1.01 or res.fun >= v_l1 * (1.0 - 1e-9):
        c, boundary = 0.0, "lower"
    elif c > hi / 1.01 or res.fun >= v_l2 * (1.0 - 1e-9):
        c, boundary = math.inf, "upper"
    return {"family": family, "loss": loss, "c": c, "boundary": boundary, "v_min": float(res.fun),
            "v_l1": v_l1, "v_l2": v_l2}


def _v_limit(family: str, which: str) -> float:
    d = _scipy_dist(family)
    if which == "l1":  # median: 1 / (4 f(0)^2)
        return float(1.0 / (4.0 * d.pdf(0.0) ** 2))
    var = float(d.var())
    return var if math.isfinite(var) else math.inf
