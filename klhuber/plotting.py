"""One matplotlib style for every figure of the book.

The palette is Okabe & Ito's colour-blind-safe set. :func:`use_style` is called at the top
of each notebook; it also switches the inline backend to SVG where IPython is running.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["PALETTE", "STYLE_PATH", "MarkdownTable", "color", "markdown_table", "use_style"]

STYLE_PATH = Path(__file__).with_name("klhuber.mplstyle")

#: Okabe–Ito colour-blind-safe palette.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
)


def color(i: int) -> str:
    """The ``i``-th colour of :data:`PALETTE` (cycling)."""
    return PALETTE[i % len(PALETTE)]


class MarkdownTable(str):
    """A Markdown table: a ``str`` that Jupyter displays as Markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> MarkdownTable:
    """The Markdown of a table with a ``header`` row and ``rows`` of cells (``str()`` of each).

    The result is a string (it can be concatenated with prose) that notebooks display as a table.
    """
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return MarkdownTable("\n".join(lines))


def use_style(svg: bool = True) -> None:
    """Apply the klhuber matplotlib style; in IPython, render inline figures as SVG."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    plt.style.use(str(STYLE_PATH))
    mpl.rcParams["axes.prop_cycle"] = mpl.cycler(color=list(PALETTE))
    if svg:
        try:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is not None:
                from matplotlib_inline.backend_inline import set_matplotlib_formats

                set_matplotlib_formats("svg")
        except ImportError:  # pragma: no cover - plain Python
            pass
