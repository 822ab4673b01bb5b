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




def _scipy_dist(family: str) -> Any:
    """The unit-scale noise distribution of ``family`` (scipy.stats, frozen)."""
    from scipy import stats

    _check_family(family)
    if family == "student_t":
        return stats.t(STUDENT_T_DF)
    return {"laplace": stats.laplace, "logistic": stats.logistic, "cauchy": stats.cauchy,
            "normal": stats.norm}[family]()


def asymptotic_variance(family: str, alpha: float, scale: float = 1.0, loss: str = "huber") -> float:
    """:math:`V(\\alpha) = E[\\psi_\\alpha(\\epsilon)^2] / E[\\psi_\\alpha'(\\epsilon)]^2` for noise
    ``family`` with ``scale`` (numerical integration; ``loss`` is ``"huber"`` or ``"kl_lower"``).

    For a linear model with features of Gram matrix :math:`G`, the M-estimator is asymptotically
    normal with covariance :math:`V(\\alpha) G^{-1} / N`, so the expected squared test error is
    about :math:`V(\\alpha) K / N` with orthonormal features (:func:`theory_rmse`).

    Computed at unit scale, :math:`V(\\alpha; s) = s^2 V(\\alpha/s; 1)`, for every ratio
    :math:`r = \\alpha/s` that is a positive float: below :math:`r = 1` both moments are
    divided by their leading power of :math:`r` and integrated in :math:`v = \\epsilon/r` (so
    nothing underflows and no narrow peak is missed), above it the integrals are split where
    the density and :math:`\\psi` change.  The limits are the L1 variance :math:`1/(4f(0)^2)`
    as :math:`r \\to 0` and the noise variance as :math:`r \\to \\infty`.  Relative error below :math:`3 \\cdot 10^{-14}` from
    :math:`r = 10^{-200}` to :math:`10^{100}` (tested against closed forms and mpmath; measured
    at most :math:`1.1 \\cdot 10^{-14}`); :math:`r` above :math:`10^{100}` raises ``ValueError``.
    """
    _check_positive_grid(alpha, "alpha")
    _check_positive_grid(scale, "scale")
    name = LOSS_ALIASES.get(loss, loss) if isinstance(loss, str) else loss
    if name not in ALPHA_LOSSES:
        raise ValueError(f"loss must be one of {ALPHA_LOSSES}, got {loss!r}")
    s = float(scale)
    r, d = float(alpha) / s, _scipy_dist(family)
    if not r <= MAX_ALPHA_OVER_SCALE:
        raise ValueError(f"alpha/scale must be at most {MAX_ALPHA_OVER_SCALE:g} (V is then the "
                         f"noise variance, or grows like alpha for Cauchy noise), got "
                         f"alpha={alpha!r}, scale={scale!r}")
    e2, ep = (_huber_moments if name == "huber" else _kl_moments)(d, r)
    return float(s * s * (e2 / (ep * ep)))


#: the largest alpha/scale :func:`asymptotic_variance` accepts (beyond it the products of the
#: integrands overflow)
MAX_ALPHA_OVER_SCALE = 1e100
#: where a unit-scale density's integrals are split: its upper quantiles of these tail masses
_SPLIT_MASSES = (0.25, 1e-2, 1e-4, 1e-8, 1e-12, 1e-16, 1e-30, 1e-60, 1e-100, 1e-200, 1e-300)


def _quad(g: Any, lo: float, hi: float, points: Any = ()) -> float:
    """``quad`` of ``g`` on [lo, hi] (finite), split at the ``points`` inside it."""
    from scipy import integrate

    inner = sorted(float(p) for p in points if lo < p < hi)
    return integrate.quad(g, lo, hi, points=inner or None, limit=200, epsabs=0.0,
                          epsrel=1e-12)[0]


def _integral(g: Any, hi: float, marks: Any) -> float:
    """:math:`\\int_0^{hi} g(e)\\,de` for an integrand with features at unit scale (the
    density's bulk) and at the ``marks`` above it: [0, 1] as it is, [1, hi] in
    :math:`t = \\log e`, split at the marks, so that a feature far out (a tail quantile,
    :math:`\\alpha`) is not missed by a rule spread over a long interval."""
    head = _quad(g, 0.0, min(hi, 1.0), marks)
    if hi <= 1.0:
        return head
    logs = [math.log(m) for m in marks if 1.0 < m < hi]
    return head + _quad(lambda t: g(math.exp(t)) * math.exp(t), 0.0, math.log(hi), logs)


def _huber_moments(d: Any, r: float) -> tuple[float, float]:
    """Huber's :math:`E[\\psi^2] = E[\\min(\\epsilon^2, r^2)]` and :math:`E[\\psi'] = P(|\\epsilon| < r)`
    at unit scale, both divided by :math:`r^2` and :math:`r` when :math:`r < 1` (their ratio
    is the same)."""
    if r < 1:  # in v = e/r on [0, 1]: 2 r int v^2 f(rv) dv + 2 sf(r), and 2 int f(rv) dv
        e2 = 2 * r * _quad(lambda v: v * v * d.pdf(r * v), 0.0, 1.0) + 2 * float(d.sf(r))
        return e2, 2 * _quad(lambda v: d.pdf(r * v), 0.0, 1.0)
    sf = float(d.sf(r))  # at most 0.27 for r >= 1: 1 - 2 sf does not cancel
    tail = 2 * r * (r * sf)  # r (r sf): no r^2 overflow (Cauchy: ~ r/pi)
    e2 = 2 * _integral(lambda e: e * e * d.pdf(e), r, d.isf(_SPLIT_MASSES)) + tail
    return e2, 1 - 2 * sf


def _kl_moments(d: Any, r: float) -> tuple[float, float]:
    """The lower KL bound's :math:`E[\\psi^2] = E[r^2 (1 - e^{-|\\epsilon|/r})^2]` and
    :math:`E[\\psi'] = E[e^{-|\\epsilon|/r}]` at unit scale, divided by :math:`r^2` and
    :math:`r` when :math:`r < 1`."""
    if r < 1:
        # e2/r^2 = 2 int (1 - e^{-e/r})^2 f(e) de: in v = e/r up to 40 (the rest is sf(40 r)
        # to within e^{-40}); ep/r = 2 int e^{-v} f(rv) dv, cut where e^{-v} underflows
        e2 = 2 * (r * _quad(lambda v: math.expm1(-v) ** 2 * d.pdf(r * v), 0.0, 40.0)
                  + float(d.sf(40 * r)))
        return e2, 2 * _quad(lambda v: math.exp(-v) * d.pdf(r * v), 0.0, 746.0, (1, 10, 40))

    # up to 1e20 times the last feature, beyond which the rest is below 1e-20 of either moment
    # (psi^2 <= r^2, e^{-e/r} <= 1); r^2 <= 1e200 does not overflow
    marks = [*d.isf(_SPLIT_MASSES), r, 40 * r]
    hi = 1e20 * max(r, float(d.isf(1e-12)))
    e2 = 2 * _integral(lambda e: (r * math.expm1(-e / r)) ** 2 * d.pdf(e), hi, marks)
    ep = 2 * _integral(lambda e: math.exp(-e / r) * d.pdf(e), hi, marks)
    return e2, ep


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
