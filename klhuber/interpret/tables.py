"""Tables 1 and 2 of the paper, generated from the presets (never stored)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from klhuber.interpret._numbers import Number
from klhuber.interpret.presets import PAPER_PRESETS, get_preset
from klhuber.interpret.stage import STAGES, BoxLossConfig, interpret

__all__ = ["Table", "format_scale", "table1", "table2"]


def format_scale(coefficient: Number, symbol: str = "") -> str:
    """Format ``coefficient·symbol`` the way the paper prints Table 2.

    ``format_scale(Fraction(1, 9), "w_a") == "w_a/9"``, ``format_scale(Fraction(2, 5), "h_a")
    == "2h_a/5"``, ``format_scale(1, "w_a") == "w_a"``, ``format_scale(0, "w_a") == "0"``;
    without a symbol the number alone (``"1/9"``).  Floats, and fractions that would not read
    well (numerator above 9 or denominator above 1000), are printed with 4 significant digits.
    """
    if isinstance(coefficient, numbers.Integral):
        coefficient = Fraction(int(coefficient))
    if isinstance(coefficient, Fraction):
        if coefficient == 0:
            return "0"
        numerator, denominator = coefficient.numerator, coefficient.denominator
        if abs(numerator) > 9 and denominator > 1 or denominator > 1000:
            return format_scale(float(coefficient), symbol)  # 36/971 reads better as 0.03708
        head = symbol if numerator == 1 and symbol else f"{numerator}{symbol}"
        return head if denominator == 1 else f"{head}/{denominator}"
    if coefficient == 0:
        return "0"
    return f"{coefficient:.4g}{'·' + symbol if symbol else ''}"


@dataclass(frozen=True)
class Table:
    """A table generated from presets: ``cells[(preset, stage)][row]``."""

    title: str
    rows: tuple[str, ...]
    row_labels: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    cells: dict[tuple[str, str], dict[str, Any]]
    formatter: Callable[[str, Any], str]

    def value(self, preset: str, stage: str, row: str) -> Any:
        return self.cells[(preset, stage)][row]

    def as_nested(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{preset: {stage: {row: value}}}`` (the layout of ``klhuber.paper_values.tables``)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for (preset, stage), cells in self.cells.items():
            out.setdefault(preset, {})[stage] = dict(cells)
        return out

    def to_markdown(self, paper: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> str:
        """A markdown table; with ``paper``, cells that differ from it are marked ``≠ paper``."""
        header = "| | " + " | ".join(f"{p} ({s})" for p, s in self.columns) + " |"
        lines = [header, "|---" * (len(self.columns) + 1) + "|"]
        for row, label in zip(self.rows, self.row_labels):
            cells = []
            for preset, stage in self.columns:
                value = self.cells[(preset, stage)][row]
                text = self.formatter(row, value)
                if paper is not None and preset in paper:
                    expected = paper[preset][stage][row]
                    if expected != value:
                        text += f" (≠ paper {self.formatter(row, expected)})"
                cells.append(text)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _columns(names: Iterable[str | BoxLossConfig]) -> list[BoxLossConfig]:
    configs = [get_preset(n) for n in names]
    if not configs:
        raise ValueError("names must list at least one preset")
    return configs


_TABLE1_ROWS = ("lam", "alpha", "sigma_x", "sigma_y", "sigma_w", "sigma_h")
_TABLE1_LABELS = ("λ", "α", "σ_x", "σ_y", "σ_w", "σ_h")
_TABLE2_ROWS = ("x*", "y*", "w*", "h*", "x~", "y~", "w~", "h~")
_TABLE2_LABELS = ("x*", "y*", "w*", "h*", "x̃", "ỹ", "w̃", "h̃")


def table1(names: Iterable[str | BoxLossConfig] = PAPER_PRESETS, *,
           include_kind: bool = False) -> Table:
    """Table 1 ("List of Hyper-Parameters") generated from the presets ``names``.

    ``include_kind`` adds a ``loss`` row (huber / smooth_l1 / kl / l1 and the target).
    """
    configs = _columns(names)
    rows = _TABLE1_ROWS + (("loss",) if include_kind else ())
    labels = _TABLE1_LABELS + (("loss",) if include_kind else ())
    cells = {}
    for config in configs:
        for stage_name in STAGES:
            stage = config.stage(stage_name)
            values = dict(zip(_TABLE1_ROWS, (stage.lam, stage.alpha, *stage.sigma)))
            if include_kind:
                values["loss"] = stage.kind + ("" if stage.wh_target == "log" else ", linear w/h")
            cells[(config.name, stage_name)] = values

    def fmt(row: str, value: Any) -> str:
        return value if isinstance(value, str) else format_scale(value)

    columns = tuple((c.name, s) for c in configs for s in STAGES)
    return Table("Table 1: List of Hyper-Parameters", rows, labels, columns, cells, fmt)


def table2(names: Iterable[str | BoxLossConfig] = PAPER_PRESETS, *,
           anchor: tuple[Number, Number] | None = None) -> Table:
    """Table 2 (interpreted label/prediction scales) computed with :func:`interpret`.

    Without ``anchor`` the cells are the coefficients of :math:`w_a`/:math:`h_a` and print as
    the paper does (``w_a/9``); with ``anchor=(w_a, h_a)`` they are in the anchor's units.
    """
    configs = _columns(names)
    w, h = (1, 1) if anchor is None else anchor
    cells = {}
    for config in configs:
        for stage_name in STAGES:
            cells[(config.name, stage_name)] = interpret(config.stage(stage_name), w, h).as_dict()

    def fmt(row: str, value: Any) -> str:
        if anchor is not None:
            return format_scale(float(value))
        return format_scale(value, "w_a" if row[0] in "xw" else "h_a")

    columns = tuple((c.name, s) for c in configs for s in STAGES)
    title = "Table 2: Interpreted Scale of the Label and Prediction Uncertainties"
    if anchor is not None:
        title += f" (anchor {format_scale(w)}×{format_scale(h)})"
    return Table(title, _TABLE2_ROWS, _TABLE2_LABELS, columns, cells, fmt)
