"""``klhuber interpret``: Tables 1 and 2 for box-loss presets, as text, markdown or JSON."""

from __future__ import annotations

import argparse
import json
import sys
import unicodedata
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from klhuber.interpret._numbers import Number
from klhuber.interpret.presets import PAPER_PRESETS, PRESETS, get_preset
from klhuber.interpret.stage import STAGES
from klhuber.interpret.tables import table1, table2

__all__ = ["configure_parser"]


def _parse_anchor(text: str) -> tuple[Number, Number]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) == 1:
            w = h = Fraction(parts[0])
        elif len(parts) == 2:
            w, h = Fraction(parts[0]), Fraction(parts[1])
        else:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"anchor must look like 64x64 or 64 (width x height, > 0), got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"anchor width and height must be > 0, got {text!r}")
    return w, h


def _preset_names(values: Sequence[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name == "paper":
                names.extend(PAPER_PRESETS)
            elif name == "all":
                names.extend(PRESETS)
            elif name:
                names.append(name)
    return names


def _json_value(value: Any) -> Any:
    if isinstance(value, Fraction):
        return {"exact": str(value), "value": float(value)}
    return value


def _run(args: argparse.Namespace) -> int:
    if args.list:
        for name, config in PRESETS.items():
            print(f"{name}: {config.source}")
        return 0
    names = _preset_names(args.preset or ["implementation"])
    try:
        configs = [get_preset(n) for n in names]
    except ValueError as error:
        print(f"klhuber interpret: error: {error}", file=sys.stderr)
        return 2
    t2 = table2(configs, anchor=args.anchor)
    t1 = table1(configs, include_kind=True)
    if args.json:
        payload = {
            "anchor": None if args.anchor is None else [str(v) for v in args.anchor],
            "units": "multiples of w_a (x, w) and h_a (y, h)" if args.anchor is None
            else "pixels (anchor units)",
            "presets": {
                c.name: {
                    "source": c.source,
                    **{s: {"parameters": {k: _json_value(v)
                                          for k, v in t1.cells[(c.name, s)].items()},
                           "label_noise": {k: _json_value(v) for k, v in
                                           t2.cells[(c.name, s)].items() if k.endswith("*")},
                           "prediction_noise": {k: _json_value(v) for k, v in
                                                t2.cells[(c.name, s)].items()
                                                if k.endswith("~")}}
                       for s in STAGES}}
                for c in configs},
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0
    if args.markdown:
        print(f"**{t1.title}**\n\n{t1.to_markdown()}\n\n**{t2.title}**\n\n{t2.to_markdown()}")
        return 0
    for table in (t1, t2):
        print(table.title)
        header = [""] + [f"{p}/{s}" for p, s in table.columns]
        body = [[label] + [table.formatter(row, table.cells[col][row]) for col in table.columns]
                for row, label in zip(table.rows, table.row_labels)]
        def width(text: str) -> int:  # display width: combining accents (x̃) take no column
            return sum(not unicodedata.combining(ch) for ch in text)

        widths = [max(width(r[i]) for r in [header, *body]) for i in range(len(header))]
        for line in [header, *body]:
            print("  ".join(cell + " " * (w - width(cell))
                            for cell, w in zip(line, widths)).rstrip())
        print()
    return 0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``klhuber interpret`` (see ``klhuber.cli``)."""
    parser.description = ("Print the hyper-parameters (Table 1) and the label/prediction noise "
                          "they imply (Table 2) for box-loss presets.")
    parser.add_argument("--preset", action="append", metavar="NAME",
                        help="preset name (repeatable or comma-separated; 'paper' = Table 1's "
                             "five, 'all' = every preset). Default: implementation. "
                             f"Valid: {', '.join(PRESETS)}")
    parser.add_argument("--anchor", type=_parse_anchor, metavar="WxH",
                        help="anchor size in pixels, e.g. 64x64; default: symbolic w_a, h_a")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true", help="print markdown tables")
    output.add_argument("--json", action="store_true", help="print JSON (exact fractions)")
    parser.add_argument("--list", action="store_true", help="list the presets and their sources")
    parser.set_defaults(func=_run)
