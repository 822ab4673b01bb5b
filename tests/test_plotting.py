"""klhuber.plotting: the figure style and the Markdown table helper."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from klhuber import plotting  # noqa: E402


def test_markdown_table_is_a_string_that_displays_as_markdown():
    table = plotting.markdown_table(["α", "value"], [(0.5, "ab"), (1, 2)])
    assert str(table).splitlines() == ["| α | value |", "|---|---|", "| 0.5 | ab |", "| 1 | 2 |"]
    assert table._repr_markdown_() == str(table)
    assert isinstance("caption\n\n" + table, str)


def test_use_style_applies_the_colour_blind_palette():
    import matplotlib.pyplot as plt

    plotting.use_style(svg=False)
    cycle = [c["color"] for c in plt.rcParams["axes.prop_cycle"]]
    assert cycle[: len(plotting.PALETTE)] == list(plotting.PALETTE)
    assert plotting.color(len(plotting.PALETTE)) == plotting.PALETTE[0]
