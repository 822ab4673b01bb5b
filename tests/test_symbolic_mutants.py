"""Checks of klhuber.symbolic that mutation testing (``make mutants``, module ``symbolic``) found
missing: Table 2's defaults are the paper's tables, and each table can be replaced on its own."""

from __future__ import annotations

import copy
import time
from fractions import Fraction

import mpmath
import pytest
import sympy as sp

from klhuber import symbolic
from klhuber.paper_values import tables as paper


def test_table2_from_formulas_defaults_to_the_papers_table1():
    computed = symbolic.table2_from_formulas()
    assert computed == symbolic.table2_from_formulas(paper.TABLE1)
    assert set(computed) == set(paper.TABLE1)
    # Implementation, RPN: sigma = 1, alpha = 1/9, lambda = 1: label w_a/9, prediction w_a
    cells = computed["implementation"]["proposal"]
    assert sp.simplify(cells["x*"] - symbolic.w_a / 9) == 0
    assert sp.simplify(cells["x~"] - symbolic.w_a) == 0


def test_claim_table2_uses_the_paper_for_whichever_table_is_not_given():
    assert symbolic.claim_table2().holds
    assert symbolic.claim_table2(table1=paper.TABLE1).holds
    assert symbolic.claim_table2(table2=paper.TABLE2).holds
    wrong2 = copy.deepcopy(paper.TABLE2)
    preset = next(iter(wrong2))
    stage = next(iter(wrong2[preset]))
    wrong2[preset][stage]["h~"] = Fraction(wrong2[preset][stage]["h~"]) * 2
    assert not symbolic.claim_table2(table2=wrong2).holds  # paper's Table 1 against it
    wrong1 = copy.deepcopy(paper.TABLE1)
    wrong1[preset][stage]["lam"] = Fraction(wrong1[preset][stage]["lam"]) * 3
    assert not symbolic.claim_table2(table1=wrong1).holds  # against the paper's Table 2
    assert symbolic.claim_table2(table1=wrong1,
                                 table2=symbolic_table2_as_multiples(wrong1)).holds


def symbolic_table2_as_multiples(table1):
    """Table 2 of ``table1`` as the paper stores it: rational multiples of the anchor size."""
    out = {}
    for preset, stages in symbolic.table2_from_formulas(table1).items():
        for stage, cells in stages.items():
            out.setdefault(preset, {})[stage] = {
                key: Fraction(str(sp.nsimplify(val / (symbolic.w_a if key[0] in "xw"
                                                      else symbolic.h_a))))
                for key, val in cells.items()}
    return out


def test_claim_table2_compares_every_cell_and_states_one():
    result = symbolic.claim_table2()
    n_cells = 8 * sum(len(stages) for stages in paper.TABLE1.values())
    assert f"all {n_cells} entries of Table 2" in result.detail
    # one stated constant stands for the whole table; perturbing it must break the claim
    assert symbolic.negative_control(symbolic.claim_table2, -1)[1] == 1
    assert not symbolic.negative_control(symbolic.claim_table2, 0)[0].holds


def test_claim_table2_of_empty_tables_does_not_hold():
    assert not symbolic.claim_table2(table1={}, table2={}).holds


def test_perturb_keeps_python_numbers_python_floats_and_moves_zero_to_one_seventh():
    assert symbolic._perturb(mpmath.mpf(0)) == mpmath.mpf(1) / 7
    assert symbolic._perturb(mpmath.mpf(7)) == 8
    for value, expected in ((3, 3 * 8 / 7), (0, 1 / 7), (0.5, 0.5 * 8 / 7)):
        result = symbolic._perturb(value)
        assert type(result) is float and result == expected
    assert symbolic._perturb((2, sp.Integer(0))) == (16 / 7, symbolic.PERTURBATION - 1)


def test_zero_takes_the_cheap_expansion_first_and_simplifies_only_when_needed(monkeypatch):
    assert not symbolic._zero(sp.Integer(1))
    assert symbolic._zero(sp.sin(symbolic.x) ** 2 + sp.cos(symbolic.x) ** 2 - 1)  # simplify
    assert not symbolic._zero(sp.sin(symbolic.x) ** 2)

    def no_simplify(expr):
        raise AssertionError("simplify called although expansion decides")

    monkeypatch.setattr(symbolic.sp, "simplify", no_simplify)
    assert symbolic._zero(0)
    assert symbolic._zero((symbolic.x + 1) ** 2 - symbolic.x ** 2 - 2 * symbolic.x - 1)


def test_pos_also_tries_the_factorisation():
    quotient = (symbolic.xp ** 2 - 1) / (symbolic.xp - 1)  # = xp + 1 after cancelling
    assert quotient.is_positive is None and sp.expand(quotient).is_positive is None
    assert symbolic._pos(quotient)
    assert not symbolic._pos(-quotient)


def _fake_claim(name: str, constants: int, calls: list, keyword: str | None = None,
                holds: bool = True):
    """A claim stating ``constants`` constants (each 1, checked equal to 1) that records how it
    is called: with which keyword value and whether under a negative control."""

    def claim(**kwargs):
        calls.append((name, kwargs.get(keyword) if keyword else None,
                      symbolic._CONTROL.get() is not None))
        start = time.perf_counter()
        proof = symbolic._Proof()
        for i in range(constants):
            proof.check(f"constant {i}", symbolic._stated(1) == 1)
        if not holds:
            proof.check("a failing step", False)
        return symbolic._result(name, "test", proof, {}, start)

    return claim


@pytest.fixture()
def fake_chapters(monkeypatch):
    """verify_all on three fast fake claims: two standing in for the claims it passes a
    density to (eq. 20 dense, minimax), one that states no constant and does not hold."""
    calls: list = []
    dense = _fake_claim("dense", 1, calls, keyword="points")
    minimax = _fake_claim("minimax", 2, calls, keyword="grid")
    empty = _fake_claim("empty", 0, calls, holds=False)
    monkeypatch.setattr(symbolic, "claim_eq20_dense", dense)
    monkeypatch.setattr(symbolic, "claim_minimax_alpha", minimax)
    monkeypatch.setattr(symbolic, "CHAPTERS", {"one": (dense,), "two": (minimax, empty)})
    return calls


def test_verify_all_passes_its_densities_to_the_claim_and_to_its_control(fake_chapters):
    results = symbolic.verify_all()  # every chapter, default densities
    assert [r.name for r in results] == ["dense", "minimax", "empty"]
    assert fake_chapters == [("dense", 2000, False), ("dense", 2000, True),
                             ("minimax", 60, False), ("minimax", 60, True),
                             ("empty", None, False), ("empty", None, True)]
    fake_chapters.clear()
    symbolic.verify_all(dense_points=7, minimax_grid=5, chapters=["two", "one"])
    assert fake_chapters == [("minimax", 5, False), ("minimax", 5, True),
                             ("empty", None, False), ("empty", None, True),
                             ("dense", 7, False), ("dense", 7, True)]


def test_verify_all_reports_each_negative_control(fake_chapters):
    dense, minimax, empty = symbolic.verify_all()
    line = ("✓ negative control: with its {} stated constants perturbed (× 8/7) the statement "
            "fails, as it must")
    assert dense.holds and dense.control is True  # one stated constant is enough
    assert dense.detail == "✓ constant 0\n" + line.format(1)
    assert minimax.holds and minimax.detail.endswith("\n" + line.format(2))
    # no stated constant: the control cannot fail, whatever the claim itself does
    assert not empty.holds and empty.control is False
    assert empty.detail == ("✗ a failing step\n✗ negative control: with its 0 stated constants "
                            "perturbed (× 8/7) the statement still holds: its checks cannot fail")
    plain = symbolic.verify_all(controls=False)
    assert [r.control for r in plain] == [None, None, None]
    assert plain[0].detail == "✓ constant 0"
