"""Checks of klhuber.symbolic that mutation testing (``make mutants``, module ``symbolic``) found
missing: Table 2's defaults are the paper's tables, and each table can be replaced on its own."""

from __future__ import annotations

import copy
from fractions import Fraction

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
