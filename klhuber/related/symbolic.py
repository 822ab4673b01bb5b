r"""sympy checks of the Harmonic-loss supplement, in the style of :mod:`klhuber.symbolic`.

Each function states one claim of the supplement of Wang & Zhang,
checks it with sympy (plus a dense numerical check where a claim is an inequality), and returns a
:class:`klhuber.symbolic.ClaimResult`. :func:`verify_all` runs them all.
"""

from __future__ import annotations

import dataclasses
import time

import sympy as sp

from klhuber.symbolic import ClaimResult

__all__ = [
    "harmonic_classification_gradient",
    "harmonic_convergence",
    "harmonic_convergence_threshold",
    "harmonic_regression_gradient",
    "hiou_gradient",
    "hiou_monotonicity",
    "verify_all",
]

t = sp.Symbol("t", real=True)
p = sp.Symbol("p", positive=True)
x, y = sp.symbols("x y", positive=True)
u = sp.Symbol(r"\mathrm{IoU}", nonnegative=True)  # one symbol, printed upright
gamma = sp.Symbol("gamma", real=True)
L = sp.Function("L")


def _is_zero(expr: sp.Expr) -> bool:
    return sp.simplify(expr) == 0


def harmonic_regression_gradient() -> ClaimResult:
    r"""Supplement eq. 1–5: with :math:`\beta_r = e^{-\mathcal L(t)}`, :math:`\beta_c = p` and
    :math:`\mathrm{CE} = -\log p`, :math:`\partial\mathcal L_{Har}/\partial t =
    (1 + p + e^{-\mathcal L(t)}\log p)\,\mathcal L'(t)` (gradient taken through :math:`\beta_r`)."""
    loss = (1 + sp.exp(-L(t))) * (-sp.log(p)) + (1 + p) * L(t)
    grad = sp.diff(loss, t)
    eq5 = (1 + p + sp.exp(-L(t)) * sp.log(p)) * sp.diff(L(t), t)
    holds = _is_zero(grad - eq5)
    return ClaimResult(
        name="Harmonic loss: gradient w.r.t. the regression offset (eq. 5)",
        reference="Wang & Zhang, supplement eq. 1-5",
        expressions={"L_Har": loss, "dL_Har/dt": sp.simplify(grad), "eq. 5": eq5},
        holds=holds,
        detail="d/dt[(1+e^{-L(t)})(-log p) + (1+p)L(t)] - (1+p+e^{-L}log p)L'(t) simplifies to 0"
               if holds else "the derivative differs from eq. 5")


def harmonic_classification_gradient() -> ClaimResult:
    r"""Supplement eq. 10: :math:`\partial\mathcal L_{Har}/\partial p = \mathcal L_{reg} -
    (1 + e^{-\mathcal L_{reg}})/p` (gradient taken through :math:`\beta_c = p`)."""
    lreg = sp.Symbol(r"\mathcal{L}_{reg}", nonnegative=True)
    loss = (1 + sp.exp(-lreg)) * (-sp.log(p)) + (1 + p) * lreg
    grad = sp.diff(loss, p)
    eq10 = lreg - (1 + sp.exp(-lreg)) / p
    holds = _is_zero(grad - eq10)
    return ClaimResult(
        name="Harmonic loss: gradient w.r.t. the class score (eq. 10)",
        reference="Wang & Zhang, supplement eq. 10",
        expressions={"dL_Har/dp": grad, "eq. 10": eq10},
        holds=holds,
        detail="the derivative equals eq. 10" if holds else "the derivative differs from eq. 10")


def harmonic_convergence() -> ClaimResult:
    r"""Supplement eq. 7–10 (convergence argument).

    With :math:`F(x, y) = (1 + e^{-y})x + (1 + e^{-x})y` (eq. 7; x = CE, y = :math:`\mathcal
    L_{reg}`): (a) :math:`\partial F/\partial x = 1 + e^{-y} - y e^{-x}` (eq. 8);
    (b) :math:`\partial F/\partial x = (1 + e^{-y})\,e^{-x}(e^{x} - e^{x_0})` with
    :math:`x_0 = \ln y - \ln(1 + e^{-y})`, so F increases in x iff :math:`x > x_0` (eq. 9);
    (c) eq. 10 is :math:`-e^{x}\,\partial F/\partial x` with :math:`p = e^{-x}`, so eq. 10 is
    negative exactly when eq. 9 holds (the supplement's "same as Eq. (9)").
    """
    start = time.perf_counter()
    F = (1 + sp.exp(-y)) * x + (1 + sp.exp(-x)) * y
    dFdx = sp.diff(F, x)
    eq8 = 1 + sp.exp(-y) - y * sp.exp(-x)
    a = _is_zero(dFdx - eq8)
    x0 = sp.log(y) - sp.log(1 + sp.exp(-y))
    factored = (1 + sp.exp(-y)) * sp.exp(-x) * (sp.exp(x) - sp.exp(x0))
    b = _is_zero(sp.expand(sp.simplify(factored - eq8)))
    lreg = sp.Symbol(r"\mathcal{L}_{reg}", positive=True)
    eq10 = lreg - (1 + sp.exp(-lreg)) / p
    c = _is_zero((eq10 - (-sp.exp(x) * eq8)).subs({p: sp.exp(-x), lreg: y}))
    holds = bool(a and b and c)
    return ClaimResult(
        name="Harmonic loss: increasing in CE iff CE > ln L_reg - ln(1+e^{-L_reg}) (eq. 7-10)",
        reference="Wang & Zhang, supplement eq. 7-10",
        expressions={"F": F, "dF/dx": dFdx, "eq. 8": eq8, "x0": x0, "factored dF/dx": factored},
        holds=holds,
        detail=(f"eq. 8 {'ok' if a else 'FAILS'}; factorisation (sign of dF/dx = sign of x - x0, "
                f"eq. 9) {'ok' if b else 'FAILS'}; eq. 10 = -e^x * eq. 8 with p = e^-x "
                f"{'ok' if c else 'FAILS'}"),
        paper_note="eq. 9 needs y = L_reg > 0 (ln y); for y = 0, dF/dx = 2 > 0 for every x.",
        seconds=time.perf_counter() - start)


def harmonic_convergence_threshold() -> ClaimResult:
    r"""Our addition to eq. 9 ("basically always true during training"): the condition
    :math:`\mathrm{CE} > \ln\mathcal L_{reg} - \ln(1 + e^{-\mathcal L_{reg}})` holds for *every*
    CE ≥ 0 iff the right-hand side is ≤ 0, i.e. iff :math:`\mathcal L_{reg} \le y^* = 1 +
    W(1/e) pprox 1.2785` (W: Lambert W; the right-hand side is increasing in
    :math:`\mathcal L_{reg}`)."""
    start = time.perf_counter()
    x0 = sp.log(y) - sp.log(1 + sp.exp(-y))
    y_star = 1 + sp.LambertW(sp.exp(-1))
    at_star = sp.N(x0.subs(y, y_star), 50)
    slope = sp.simplify(sp.diff(x0, y))
    increasing = _is_zero(slope - (1 / y + 1 / (sp.exp(y) + 1)))  # both terms > 0
    holds = bool(abs(at_star) < sp.Float(1e-40) and increasing)
    return ClaimResult(
        name="Harmonic loss: eq. 9 holds for all CE >= 0 iff L_reg <= 1 + W(1/e)",
        reference="Wang & Zhang, supplement eq. 9 (made precise)",
        expressions={"x0(L_reg)": x0, "dx0/dL_reg": slope, "y*": y_star},
        holds=holds,
        detail=(f"x0(y*) = {float(at_star):.1e} (50 digits), x0 increasing in L_reg "
                f"{'ok' if increasing else 'FAILS'}; y* = {float(sp.N(y_star)):.6f}"),
        ours=True,
        seconds=time.perf_counter() - start)


def hiou_gradient() -> ClaimResult:
    r"""Supplement eq. 11–12: :math:`\frac{d}{d\,\mathrm{IoU}}(1+\mathrm{IoU})^{\gamma}(1-\mathrm{IoU})
    = (1+\mathrm{IoU})^{\gamma-1}((\gamma-1) - (\gamma+1)\mathrm{IoU})`."""
    loss = (1 + u) ** gamma * (1 - u)
    grad = sp.diff(loss, u)
    eq12 = (1 + u) ** (gamma - 1) * ((gamma - 1) - (gamma + 1) * u)
    holds = _is_zero(sp.powsimp(sp.expand(grad - eq12), force=True)) or _is_zero(
        sp.simplify(grad / (1 + u) ** (gamma - 1) - ((gamma - 1) - (gamma + 1) * u)))
    return ClaimResult(
        name="HIoU loss: derivative w.r.t. IoU (eq. 12)",
        reference="Wang & Zhang, supplement eq. 11-12",
        expressions={"L_HIoU": loss, "dL/dIoU": grad, "eq. 12": eq12},
        holds=bool(holds),
        detail="the derivative equals eq. 12" if holds else "the derivative differs from eq. 12")


def hiou_monotonicity(n_gamma: int = 52, n_iou: int = 201) -> ClaimResult:
    r"""Supplement eq. 13: :math:`d\mathcal L_{HIoU}/d\,\mathrm{IoU} \le 0` iff
    :math:`\mathrm{IoU} \ge (\gamma-1)/(\gamma+1)` (for :math:`\gamma > -1`); hence the loss is
    non-increasing on all of [0, 1] iff :math:`\gamma \le 1`.

    Checked symbolically: the sign of eq. 12 is that of the affine factor
    :math:`(\gamma-1) - (\gamma+1)\mathrm{IoU}`, whose maximum on [0, 1] is at an end point,
    :math:`\max(\gamma - 1, -2)`, which is ≤ 0 iff :math:`\gamma \le 1` — for every real γ, not
    only γ > −1 as the supplement's division by γ + 1 assumes. Also on a dense grid of
    γ ∈ [−3, 2.1] and IoU ∈ [0, 1]."""
    lin = (gamma - 1) - (gamma + 1) * u
    root = sp.solve(sp.Eq(lin, 0), u)
    a = len(root) == 1 and _is_zero(root[0] - (gamma - 1) / (gamma + 1))
    positive_factor = (1 + u) ** (gamma - 1)
    b = _is_zero(sp.diff((1 + u) ** gamma * (1 - u), u) / positive_factor - lin)
    g = sp.Symbol("gamma", real=True)  # prints as γ
    ends = sp.Max(lin.subs({u: 0, gamma: g}), lin.subs({u: 1, gamma: g}))
    cond = sp.solve_univariate_inequality(ends <= 0, g, relational=False)
    c = cond == sp.Interval(-sp.oo, 1)
    grad = sp.lambdify((u, gamma), sp.diff((1 + u) ** gamma * (1 - u), u), "math")
    ok = True
    for i in range(n_gamma):
        gv = -3.0 + 5.1 * i / (n_gamma - 1)
        non_increasing = all(grad(j / (n_iou - 1), gv) <= 1e-15 for j in range(n_iou))
        ok &= non_increasing == (gv <= 1 + 1e-12)
    holds = bool(a and b and c and ok)
    return ClaimResult(
        name="HIoU loss: monotone decreasing in IoU iff gamma <= 1 (eq. 13)",
        reference="Wang & Zhang, supplement eq. 12-13",
        expressions={"sign factor": lin, "threshold IoU": root[0] if root else sp.nan,
                     "max over IoU in [0,1]": ends},
        holds=holds,
        detail=(f"root (gamma-1)/(gamma+1) {'ok' if a else 'FAILS'}; eq. 12 = (1+IoU)^(gamma-1) "
                f"x sign factor {'ok' if b else 'FAILS'}; max(gamma-1, -2) <= 0 iff gamma <= 1 "
                f"{'ok' if c else 'FAILS'}; dense grid gamma in [-3, 2.1] x IoU in [0, 1] "
                f"{'ok' if ok else 'FAILS'}"),
        paper_note="eq. 13 divides by gamma + 1 (valid for gamma > -1); the conclusion "
                   "gamma <= 1 nevertheless holds for every real gamma. hiou_loss accepts "
                   "gamma in [0, 1].")


def verify_all() -> list[ClaimResult]:
    """All claims of the supplement (Wang and Zhang) that can be checked symbolically (with their wall times)."""
    results = []
    for check in (harmonic_regression_gradient, harmonic_classification_gradient,
                  harmonic_convergence, harmonic_convergence_threshold, hiou_gradient,
                  hiou_monotonicity):
        start = time.perf_counter()
        result = check()
        results.append(dataclasses.replace(result, seconds=time.perf_counter() - start))
    return results
