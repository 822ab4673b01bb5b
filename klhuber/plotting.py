"""One matplotlib style for every figure of the book.

The palette is Okabe & Ito's colour-blind-safe set. :func:`use_style` is called at the top
of each notebook; it also switches the inline backend to SVG where IPython is running.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["PALETTE", "STYLE_PATH", "MarkdownTable", "color", "markdown_table", "markdown_text",
           "use_style"]

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


def _escape(text: str) -> str:
    for char in ("\\", "*", "`", "[", "]", "<", ">", "|", "_", "$"):
        text = text.replace(char, "\\" + char)
    return text


_GREEK_TEX = {"α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\varepsilon",
              "λ": r"\lambda", "μ": r"\mu", "σ": r"\sigma", "θ": r"\theta", "π": r"\pi",
              "−": "-", "·": r"\cdot ", "≤": r"\le ", "≥": r"\ge ", "∞": r"\infty ",
              "′": "'", "″": "''", "²": "^2", "³": "^3", "√": r"\sqrt ", "×": r"\times "}
#: A sub- or superscripted symbol of proof text, e.g. ``D_{α/2,1/α}(x)``, ``e^{−x/α}``, ``H_α``.
_SCRIPTED = (r"(?<![\w\\])[α-ω]*[A-Za-zα-ωΑ-Ω][′'″]*"
             r"(?:[_^](?:\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}|[A-Za-z0-9α-ω*]+))+"
             r"(?:\([^()\s]*(?:\([^()]*\)[^()\s]*)*\))?")


#: An absolute value in proof text, e.g. ``|x|``, ``|γx|``, ``|μ₁ − μ₂|`` (no spaces inside).
_ABSOLUTE = r"\|[^|\s]{1,16}\|"


def _tex_token(token: str) -> str:
    token = re.sub(r"([_^])([A-Za-z0-9α-ω*]{2,})", r"\1{\2}", token)  # L_reg -> L_{reg}
    for char, tex in _GREEK_TEX.items():
        token = token.replace(char, tex)
    token = re.sub(r"\\(alpha|beta|gamma|delta|lambda|mu|sigma|theta|pi)(?=[A-Za-z0-9])",
                   r"\\\1 ", token)
    token = token.replace("|", r"\vert ")  # a pipe would end a Markdown table cell
    return token.replace(",", ",\\,") if token.count(",") == 1 and "_{" in token else token


def markdown_text(text: str) -> str:
    """Plain text (proof steps, scorecard cells) as MyST Markdown: scripted symbols such as
    ``D_{α,β}``, ``H_α(γx)`` or ``e^{−x/α}`` become inline maths, and the characters Markdown
    would read as markup are escaped everywhere else."""
    out, last = [], 0
    for match in re.finditer(f"{_ABSOLUTE}|{_SCRIPTED}", text):
        out.append(_escape(text[last:match.start()]))
        token = match.group(0)
        if token.startswith("|"):  # |x| as maths: no raw pipe in a table cell
            out.append(f"$\\lvert {_tex_token(token[1:-1])}\\rvert$")
        else:
            out.append(f"${_tex_token(token)}$")
        last = match.end()
    out.append(_escape(text[last:]))
    return "".join(out)


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
