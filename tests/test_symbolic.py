"""Tests for klhuber.symbolic: every statement of the paper's theory holds, and the checker can fail."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from fractions import Fraction

import pytest
import sympy as sp

from klhuber import symbolic
from klhuber.symbolic import ClaimResult

ALL_CLAIMS = [fn for fns in symbolic.CHAPTERS.values() for fn in fns]


def test_imports_without_torch():
    code = ("import sys, klhuber.symbolic; "
            "assert 'torch' not in sys.modules, 'klhuber.symbolic imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("claim", ALL_CLAIMS, ids=[fn.__name__ for fn in ALL_CLAIMS])
def test_claim_holds(claim):
    result = claim()
    assert isinstance(result, ClaimResult)
    assert result.holds, result.detail
    assert result.detail and result.reference and result.name
    assert all(isinstance(e, sp.Basic) for e in result.expressions.values())
    assert "✓" in result.to_markdown() and "✗" not in result.detail


def test_verify_all_count_and_time():
    start = time.perf_counter()
    results = symbolic.verify_all(dense_points=500)
    elapsed = time.perf_counter() - start
    assert len(results) == len(ALL_CLAIMS)
    assert all(r.holds for r in results), [r.name for r in results if not r.holds]
    assert all(r.control is True for r in results)  # every claim's negative control failed
    assert elapsed < 120, elapsed  # each claim runs twice: as stated and as its control
    assert any(r.ours for r in results)
    table = symbolic.summary_markdown(results)
    assert table.count("\n") == len(results) + 1


def test_verify_all_by_chapter_and_bad_chapter():
    results = symbolic.verify_all(chapters=["regression_to_kl"])
    assert [r.name for r in results] == [fn().name for fn in symbolic.CHAPTERS["regression_to_kl"]]
    with pytest.raises(ValueError, match="bounds"):
        symbolic.verify_all(chapters=["nope"])


def test_false_statement_fails():
    result = symbolic.claim_false_example()
    assert result.holds is False
    # it fails for the right reason: the gap H − D_{α,1/α} = α² f₁(y) is positive at y = 1/2
    y = symbolic.y
    f1 = y**2 / 2 - y + 1 - sp.exp(-y)
    assert sp.simplify(result.expressions["gap"] + f1) == 0
    assert result.detail.count("\n") == 0 and result.detail.startswith("✗ D_{α,1/α} − H_α ≥ 0")
    assert float(f1.subs(y, sp.Rational(1, 2))) > 0
    assert "✗" in result.to_markdown() and "FAILS" in result.to_markdown()


def test_table2_detects_a_wrong_entry():
    from klhuber.paper_values import tables

    table2 = copy.deepcopy(tables.TABLE2)
    table2["experiment_a"]["proposal"]["w~"] = Fraction(1, 5)  # printed value is 2/5
    result = symbolic.claim_table2(tables.TABLE1, table2)
    assert result.holds is False
    assert "experiment_a/proposal/w~" in result.detail


def test_interpreted_scales_formulas():
    s = symbolic.SYMBOLS
    scales = symbolic.interpreted_scales()
    assert set(scales) == {"x", "y", "w", "h"}
    label, pred = scales["x"]
    assert sp.simplify(label - s["alpha"] * s["sigma"] * s["w_a"]) == 0
    assert sp.simplify(pred - s["sigma"] * s["w_a"] / s["lam"]) == 0
    assert scales["h"][0].has(s["h_a"]) and not scales["h"][0].has(s["w_a"])
    # Experiment A, proposal, width: λ = 1/4, α = 1, σ_w = 1/10 -> (w_a/10, 2 w_a/5)
    values = {s["lam"]: sp.Rational(1, 4), s["alpha"]: 1, s["sigma"]: sp.Rational(1, 10)}
    assert scales["w"][0].subs(values) == s["w_a"] / 10
    assert scales["w"][1].subs(values) == 2 * s["w_a"] / 5
    kl = symbolic.interpreted_scales(loss="kl")
    assert sp.simplify(kl["x"][0] - label / 2) == 0 and kl["x"][1] == pred
    assert symbolic.interpreted_scales("linear") == scales


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"wh_target": "sqrt"}, "wh_target must be 'log' or 'linear', got 'sqrt'"),
    ({"loss": "l2"}, "loss must be 'huber' or 'kl', got 'l2'"),
])
def test_interpreted_scales_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        symbolic.interpreted_scales(**kwargs)


def test_dense_check_density_is_configurable():
    small = symbolic.claim_eq20_dense(points=50, alphas=(1.0,))
    assert small.holds
    assert "202 points" in small.detail


def test_expression_helpers_agree_with_definitions():
    x, a, b = sp.Symbol("x", real=True), sp.Symbol("a", positive=True), sp.Symbol("b", positive=True)
    d = symbolic.kl_huber_expr(x, a, b)
    assert sp.simplify(d.subs(x, 0)) == 0
    h = symbolic.huber_expr(sp.Rational(3), sp.Rational(1))
    assert h == sp.Rational(5, 2)
    # eq. 4 on both branches and both signs, against the closed forms x²/2 and α(|x| − α/2)
    for arg, a, want in [(sp.Rational(1, 2), 1, sp.Rational(1, 8)),
                         (sp.Rational(-3, 4), 2, sp.Rational(9, 32)),
                         (sp.Rational(-5), 2, 8), (2, 2, 2)]:
        assert symbolic.huber_expr(sp.S(arg), sp.S(a)) == want, (arg, a)
    kl = symbolic.laplace_kl_expr(sp.S(0), a, a)
    assert sp.simplify(kl) == 0


def test_markdown_rendering():
    result = symbolic.claim_scaling()
    md = result._repr_markdown_()
    assert md.startswith("**✓") and "$" in md and "Note on the paper" in md


def test_eq15_matches_torch_kl_divergence():
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    n = 2_000
    loc_p, loc_q = (torch.randn(n, generator=generator, dtype=torch.float64) * 3 for _ in range(2))
    scale_p, scale_q = (torch.rand(n, generator=generator, dtype=torch.float64) * 5 + 0.05
                        for _ in range(2))
    reference = torch.distributions.kl_divergence(torch.distributions.Laplace(loc_p, scale_p),
                                                  torch.distributions.Laplace(loc_q, scale_q))
    d, s1, s2 = sp.symbols("d s1 s2", real=True)
    eq15 = sp.lambdify((d, s1, s2), symbolic.laplace_kl_expr(d, s1, s2), "numpy")
    ours = torch.as_tensor(eq15((loc_p - loc_q).numpy(), scale_p.numpy(), scale_q.numpy()))
    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)


def test_paper_notes_markdown_lists_known_issues():
    results = [symbolic.claim_d_differentiable(), symbolic.claim_d_twice_differentiable(),
               symbolic.claim_upper_bound()]
    md = symbolic.paper_notes_markdown(results)
    assert md.count("\n- ") == 0  # the two Appendix B claims share one note; Claim 4 is correct
    assert "u → 0⁻" in md and "Claim 1" in md and "Claim 2" in md


# ---------------------------------------------------------------------------------------------
# Negative controls: each stated constant, perturbed alone, must make its claim fail
# ---------------------------------------------------------------------------------------------

_QUICK_KWARGS = {symbolic.claim_eq20_dense: {"points": 200},
                 symbolic.claim_minimax_alpha: {"grid": 20}}
#: claims whose per-constant controls take more than a few seconds (run in the slow suite)
_SLOW_CONTROLS = {symbolic.claim_kl_cross_entropy, symbolic.claim_laplace_kl,
                  symbolic.claim_upper_bound, symbolic.claim_bounds_tight,
                  symbolic.claim_monotone_in_alpha, symbolic.claim_size_interpretation,
                  symbolic.claim_eq20_dense, symbolic.claim_lower_bound}


def _each_constant_refutes(claim):
    kwargs = _QUICK_KWARGS.get(claim, {})
    result, _ = symbolic.negative_control(claim, **kwargs)
    assert not result.holds
    clean, stated = symbolic.negative_control(claim, index=-1, **kwargs)  # counts, perturbs none
    assert clean.holds and stated >= 1, f"{claim.__name__} states no constant"
    still_holding = []
    for index in range(stated):
        perturbed, _ = symbolic.negative_control(claim, index=index, **kwargs)
        if perturbed.holds:
            still_holding.append(index)
    assert not still_holding, f"{claim.__name__}: perturbing constant(s) {still_holding} passes"
    assert claim(**kwargs).holds  # the control leaves no trace


@pytest.mark.parametrize("claim", [c for c in ALL_CLAIMS if c not in _SLOW_CONTROLS],
                         ids=lambda c: c.__name__)
def test_every_stated_constant_is_compared(claim):
    _each_constant_refutes(claim)


@pytest.mark.slow
@pytest.mark.parametrize("claim", sorted(_SLOW_CONTROLS, key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_every_stated_constant_is_compared_slow(claim):
    _each_constant_refutes(claim)


def test_eq21_compares_both_scales_of_both_bounds():
    """The hole the issue found: the upper bound's label scale α/(2γ) was computed, never compared."""
    _, stated = symbolic.negative_control(symbolic.claim_scaling, index=-1)
    failing = [symbolic.negative_control(symbolic.claim_scaling, index=k)[0] for k in range(stated)]
    assert all(not r.holds for r in failing)
    # the label scale α/(2γ) of the upper bound is one of them: perturbing it fails that step
    steps = [r.detail for r in failing if "✗ eq. 20 applied to H_{α/γ}" in r.detail]
    assert len(steps) == 4  # α/γ, 1/(αγλ) of the lower bound; α/(2γ), 1/(αγλ) of the upper


def test_perturb_rules():
    assert symbolic._perturb(0) == pytest.approx(1 / 7)
    assert symbolic._perturb(7.0) == pytest.approx(8.0)
    assert symbolic._perturb(sp.Integer(7)) == 8
    assert symbolic._perturb(sp.S(0)) == sp.Rational(1, 7)
    assert symbolic._perturb([sp.Integer(7), 0]) == [8, pytest.approx(1 / 7)]
    import mpmath

    assert symbolic._perturb(mpmath.mpf(7)) == 8 and symbolic._perturb(mpmath.mpf(0)) > 0
    assert symbolic._stated(3) == 3  # no control active
    assert symbolic._stated(3, perturbed=1) == 3


def test_verify_all_runs_the_controls_and_flags_a_check_that_cannot_fail(monkeypatch):
    results = symbolic.verify_all(chapters=["laplace_kl"])
    assert all(r.control is True and r.holds for r in results)
    assert all("negative control" in r.detail.splitlines()[-1] for r in results)
    assert all(r.control is None for r in symbolic.verify_all(chapters=["laplace_kl"],
                                                              controls=False))

    def vacuous():  # a "proof" whose steps do not depend on any stated constant
        p = symbolic._Proof()
        p.check("1 = 1", sp.S(1) == 1)
        return symbolic._result("vacuous", "none", p, {}, 0.0)

    def insensitive():  # states a constant but never compares it
        p = symbolic._Proof()
        symbolic._stated(sp.Rational(1, 2))
        p.check("1 = 1", True)
        return symbolic._result("insensitive", "none", p, {}, 0.0)

    monkeypatch.setitem(symbolic.CHAPTERS, "fake", (vacuous, insensitive))
    for result in symbolic.verify_all(chapters=["fake"]):
        assert result.control is False and result.holds is False
        assert "✗ negative control" in result.detail and "cannot fail" in result.detail
