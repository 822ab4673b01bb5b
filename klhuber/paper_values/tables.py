"""Tables 1 and 2 of Meyer (CVPR 2021), as printed, for side-by-side display and tests only.

Nothing in the library reads these values to compute anything: :mod:`klhuber.interpret`
generates both tables from its presets, and ``tests/test_interpret.py`` and the
``case_study`` chapter compare the generated tables with the ones below, in exact rational
arithmetic.

Table 2 entries are stored as the rational coefficient of the anchor size they multiply:
rows ``x*``, ``w*``, ``x~`` and ``w~`` are multiples of the anchor width :math:`w_a`, rows
``y*``, ``h*``, ``y~``, ``h~`` multiples of the anchor height :math:`h_a` (``*`` = the label
distribution, ``~`` = the prediction distribution).  ``TABLE2_PRINTED`` keeps the cells'
text as printed (LaTeX dollars removed) so that the formatting can be compared as well.
"""

from __future__ import annotations

from fractions import Fraction as F

__all__ = [
    "PRESET_COLUMNS",
    "STAGES",
    "TABLE1",
    "TABLE1_ROWS",
    "TABLE2",
    "TABLE2_PRINTED",
    "TABLE2_ROWS",
]

#: Column groups of both tables, in the paper's order (the paper's headers in comments).
PRESET_COLUMNS: tuple[str, ...] = (
    "publication",  # Publication
    "implementation",  # Implementation
    "experiment_a",  # Experiment A
    "experiment_b",  # Experiment B
    "experiment_c",  # Experiment C
)
#: Sub-columns of every group: the region proposal network and the detection network.
STAGES: tuple[str, ...] = ("proposal", "detection")

#: Row keys of Table 1 ("List of Hyper-Parameters").
TABLE1_ROWS: tuple[str, ...] = ("lam", "alpha", "sigma_x", "sigma_y", "sigma_w", "sigma_h")


def _t1(lam: F, alpha: F, sx: F, sy: F, sw: F, sh: F) -> dict[str, F]:
    return dict(zip(TABLE1_ROWS, (lam, alpha, sx, sy, sw, sh)))


#: Table 1 of the paper: ``TABLE1[preset][stage][row]``.
TABLE1: dict[str, dict[str, dict[str, F]]] = {
    "publication": {
        "proposal": _t1(F(10), F(1), F(1), F(1), F(1), F(1)),
        "detection": _t1(F(10), F(1), F(1), F(1), F(1), F(1)),
    },
    "implementation": {
        "proposal": _t1(F(1), F(1, 9), F(1), F(1), F(1), F(1)),
        "detection": _t1(F(1), F(1), F(1, 10), F(1, 10), F(1, 5), F(1, 5)),
    },
    "experiment_a": {
        "proposal": _t1(F(1, 4), F(1), F(1, 20), F(1, 20), F(1, 10), F(1, 10)),
        "detection": _t1(F(1, 2), F(1), F(1, 20), F(1, 20), F(1, 10), F(1, 10)),
    },
    "experiment_b": {
        "proposal": _t1(F(1, 2), F(1), F(1, 20), F(1, 20), F(1, 10), F(1, 10)),
        "detection": _t1(F(1), F(1), F(1, 20), F(1, 20), F(1, 10), F(1, 10)),
    },
    "experiment_c": {
        "proposal": _t1(F(1, 4), F(1), F(1, 20), F(1, 20), F(1, 10), F(1, 10)),
        "detection": _t1(F(1), F(1), F(1, 20), F(1, 20), F(1, 10), F(1, 10)),
    },
}

#: Row keys of Table 2 ("Interpreted Scale of the Label and Prediction Uncertainties").
TABLE2_ROWS: tuple[str, ...] = ("x*", "y*", "w*", "h*", "x~", "y~", "w~", "h~")

#: Table 2 as printed (cell text, LaTeX dollars removed): ``TABLE2_PRINTED[preset][stage][row]``.
TABLE2_PRINTED: dict[str, dict[str, dict[str, str]]] = {
    "publication": {
        "proposal": dict(zip(TABLE2_ROWS, (
            "w_a", "h_a", "w_a", "h_a", "w_a/10", "h_a/10", "w_a/10", "h_a/10"))),
        "detection": dict(zip(TABLE2_ROWS, (
            "w_a", "h_a", "w_a", "h_a", "w_a/10", "h_a/10", "w_a/10", "h_a/10"))),
    },
    "implementation": {
        "proposal": dict(zip(TABLE2_ROWS, (
            "w_a/9", "h_a/9", "w_a/9", "h_a/9", "w_a", "h_a", "w_a", "h_a"))),
        "detection": dict(zip(TABLE2_ROWS, (
            "w_a/10", "h_a/10", "w_a/5", "h_a/5", "w_a/10", "h_a/10", "w_a/5", "h_a/5"))),
    },
    "experiment_a": {
        "proposal": dict(zip(TABLE2_ROWS, (
            "w_a/20", "h_a/20", "w_a/10", "h_a/10", "w_a/5", "h_a/5", "2w_a/5", "2h_a/5"))),
        "detection": dict(zip(TABLE2_ROWS, (
            "w_a/20", "h_a/20", "w_a/10", "h_a/10", "w_a/10", "h_a/10", "w_a/5", "h_a/5"))),
    },
    "experiment_b": {
        "proposal": dict(zip(TABLE2_ROWS, (
            "w_a/20", "h_a/20", "w_a/10", "h_a/10", "w_a/10", "h_a/10", "w_a/5", "h_a/5"))),
        "detection": dict(zip(TABLE2_ROWS, (
            "w_a/20", "h_a/20", "w_a/10", "h_a/10", "w_a/20", "h_a/20", "w_a/10", "h_a/10"))),
    },
    "experiment_c": {
        "proposal": dict(zip(TABLE2_ROWS, (
            "w_a/20", "h_a/20", "w_a/10", "h_a/10", "w_a/5", "h_a/5", "2w_a/5", "2h_a/5"))),
        "detection": dict(zip(TABLE2_ROWS, (
            "w_a/20", "h_a/20", "w_a/10", "h_a/10", "w_a/20", "h_a/20", "w_a/10", "h_a/10"))),
    },
}


def _coefficient(text: str) -> F:
    """The rational coefficient of a printed cell such as ``"2w_a/5"`` or ``"h_a"``."""
    for symbol in ("w_a", "h_a"):
        if symbol in text:
            numerator, _, denominator = text.partition("/")
            numerator = numerator.replace(symbol, "") or "1"
            return F(int(numerator), int(denominator or 1))
    raise ValueError(f"not a Table 2 cell: {text!r}")


#: Table 2 as rational coefficients of the anchor size: ``TABLE2[preset][stage][row]``.
TABLE2: dict[str, dict[str, dict[str, F]]] = {
    preset: {
        stage: {row: _coefficient(cell) for row, cell in cells.items()}
        for stage, cells in stages.items()
    }
    for preset, stages in TABLE2_PRINTED.items()
}
