"""klhuber.book.scorecard and the generated scorecard page."""

from __future__ import annotations

import pytest

from klhuber import book
from klhuber.book import scorecard


def test_every_paper_map_row_has_an_artefact():
    from pathlib import Path

    paper_map = Path(__file__).resolve().parent.parent.parent / "shared" / "paper-map.md"
    if not paper_map.exists():
        pytest.skip("../shared/paper-map.md is not beside the checkout")
    rows = [line for line in paper_map.read_text().splitlines()
            if line.startswith("| ") and not line.startswith("| artefact")]
    assert len(rows) == len(scorecard.ARTEFACTS)


def test_verified_row_with_failing_check_raises(tmp_path):
    recorder = scorecard.Recorder("chapter", tmp_path, "quick", "cpu")
    with pytest.raises(AssertionError, match="eq16"):
        recorder.record("eq16", paper="p", ours="o", status="verified", check=False)
    recorder.record("eq16", paper="p", ours="o", status="differs", check=False)
    assert scorecard.load_rows(tmp_path)[0]["status"] == "differs"


def test_unknown_key_and_status_are_rejected(tmp_path):
    recorder = scorecard.Recorder("chapter", None, "quick", "cpu")
    with pytest.raises(ValueError, match="unknown artefact"):
        recorder.record("eq99", paper="", ours="", status="verified", check=True)
    with pytest.raises(ValueError, match="status"):
        recorder.record("eq16", paper="", ours="", status="great", check=True)


def test_scorecard_page_lists_every_artefact_and_refuses_failing_verified(tmp_path):
    paths = book.BookPaths(output=tmp_path)
    recorder = scorecard.Recorder("loss_family", paths.artefacts, "quick", "cpu")
    recorder.record("fig1", paper="Figure 1", ours="regenerated", status="reproduced", check=True)
    page = book.write_scorecard(paths).read_text()
    for artefact in scorecard.ARTEFACTS:
        assert artefact.title.split(":")[0].replace("|", "\\|") in page
    assert "✓ reproduced" in page
    assert page.count("not recorded by any chapter") == (
        len(scorecard.ARTEFACTS) + len(scorecard.EXTENSIONS) - 1)
    assert "Beyond the paper" in page
    # a sidecar edited to claim a failing check as verified fails the build
    import json

    sidecar = paths.artefacts / "loss_family.json"
    rows = json.loads(sidecar.read_text())
    rows[0]["check"] = False
    sidecar.write_text(json.dumps(rows))
    with pytest.raises(book.BookError, match="fig1"):
        book.write_scorecard(paths)


def test_save_markdown_for_other_pages(tmp_path):
    artefacts = tmp_path / "artefacts"
    recorder = scorecard.Recorder("toy_problem", artefacts, "quick", "cpu")
    path = recorder.save_markdown("The verdict.\n\n", "toy_verdict")
    assert path == scorecard.figures_dir(artefacts) / "toy_verdict.md"
    assert path.read_text() == "The verdict.\n"
    assert scorecard.Recorder("toy_problem", None, "quick", "cpu").save_markdown("x", "y") is None


# Every status, not one: the guards must refuse a verified/reproduced row whose check is not
# True (False or missing) and must accept every other status whatever its check says.
GUARDED = ("verified", "reproduced")


def test_statuses_are_the_documented_five():
    assert set(scorecard.STATUSES) == {"verified", "reproduced", "differs", "inconclusive",
                                       "not run at this profile"}


@pytest.mark.parametrize("status", scorecard.STATUSES)
@pytest.mark.parametrize("check", [True, False, None, 1, 0])
def test_recorder_guard_for_every_status_and_check(tmp_path, status, check):
    recorder = scorecard.Recorder("chapter", tmp_path, "quick", "cpu")
    if status in GUARDED and check is not True and check != 1:
        with pytest.raises(AssertionError, match=f"eq16.*{status}"):
            recorder.record("eq16", paper="p", ours="o", status=status, check=check)
        assert not (tmp_path / "chapter.json").exists()
        assert recorder.rows == []
        return
    row = recorder.record("eq16", paper="p", ours="o", status=status, check=check,
                          anchor="a", note="n", extra_value=3)
    expected = None if check is None else bool(check)
    assert row.check is expected and type(row.check) is type(expected)
    stored = scorecard.load_rows(tmp_path)
    assert stored == [{"key": "eq16", "chapter": "chapter", "paper": "p", "ours": "o",
                       "status": status, "check": expected, "profile": "quick",
                       "device": "cpu", "anchor": "a", "note": "n",
                       "extra": {"extra_value": 3}}]


@pytest.mark.parametrize("status", scorecard.STATUSES)
@pytest.mark.parametrize("check", [True, False, None])
def test_book_guard_for_every_status_and_check(tmp_path, status, check):
    """A sidecar edited after the notebook ran: write_scorecard applies the same guard."""
    import json

    paths = book.BookPaths(output=tmp_path)
    paths.artefacts.mkdir(parents=True)
    row = {"key": "eq16", "chapter": "bounds", "paper": "p", "ours": "o", "status": status,
           "check": check, "profile": "quick", "device": "cpu", "anchor": "", "note": "",
           "extra": {}}
    (paths.artefacts / "bounds.json").write_text(json.dumps([row]))
    if status in GUARDED and check is not True:
        with pytest.raises(book.BookError, match=r"^scorecard rows marked verified with a "
                           r"failing check: eq16 \(bounds\)$"):
            book.write_scorecard(paths)
    else:
        page = book.write_scorecard(paths).read_text()
        assert f"1 {status}" in page


def test_rows_accumulate_in_the_sidecar_and_a_rerun_starts_fresh(tmp_path):
    recorder = scorecard.Recorder("chapter", tmp_path, "full", "cuda")
    recorder.record("eq16", paper="p", ours="o", status="verified", check=True)
    recorder.record("eq21", paper="q", ours="r", status="differs", check=False)
    rows = scorecard.load_rows(tmp_path)
    assert [(r["key"], r["profile"], r["device"]) for r in rows] == [
        ("eq16", "full", "cuda"), ("eq21", "full", "cuda")]
    scorecard.Recorder("chapter", tmp_path, "quick", "cpu")
    assert scorecard.load_rows(tmp_path) == []
    assert scorecard.Recorder("c", None, "quick", "cpu").path is None


def test_load_rows_reads_chapters_in_file_name_order(tmp_path):
    for chapter, key in (("zeta", "eq21"), ("alpha", "eq16")):
        scorecard.Recorder(chapter, tmp_path, "quick", "cpu").record(
            key, paper="", ours="", status="differs")
    assert [r["chapter"] for r in scorecard.load_rows(tmp_path)] == ["alpha", "zeta"]
    assert scorecard.figures_dir(tmp_path / "artefacts") == tmp_path / "figures"


def test_save_figure_writes_svg_beside_the_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    artefacts = tmp_path / "new" / "artefacts"  # the figures folder's parent does not exist yet
    fig = plt.figure()
    path = scorecard.Recorder("c", artefacts, "quick", "cpu").save_figure(fig, "headline")
    assert path == tmp_path / "new" / "figures" / "headline.svg"
    assert "<svg" in path.read_text()
    assert scorecard.Recorder("c", None, "quick", "cpu").save_figure(fig, "headline") is None
    plt.close(fig)


def test_row_defaults_and_markdown_keeps_trailing_spaces(tmp_path):
    recorder = scorecard.Recorder("chapter", tmp_path / "a", "quick", "cpu")
    row = recorder.record("eq16", paper="p", ours="o", status="differs")
    assert (row.anchor, row.note, row.extra, row.check) == ("", "", {}, None)
    path = recorder.save_markdown("line  \n\n", "verdict")
    assert path.read_text() == "line  \n"  # only trailing newlines are normalised


def test_extra_values_that_json_cannot_encode_are_stored_as_text(tmp_path):
    from pathlib import Path

    recorder = scorecard.Recorder("chapter", tmp_path, "quick", "cpu")
    recorder.record("eq16", paper="p", ours="o", status="differs", where=Path("results/x.json"))
    assert scorecard.load_rows(tmp_path)[0]["extra"] == {"where": "results/x.json"}


def test_figures_and_markdown_saved_twice_into_the_same_folder(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorder = scorecard.Recorder("c", tmp_path / "artefacts", "quick", "cpu")
    fig = plt.figure()
    first = recorder.save_figure(fig, "one")
    second = recorder.save_figure(fig, "two")  # the folder exists now
    plt.close(fig)
    assert first.parent == second.parent and first.exists() and second.exists()
    path = recorder.save_markdown("Box X\n", "x")
    assert path.read_text() == "Box X\n"  # only newlines are stripped, not other characters


def test_save_figure_keeps_text_that_reaches_past_the_canvas(tmp_path):
    # the landing page's headline has an axis label below the figure's nominal canvas; the saved
    # SVG must be cropped to what is drawn (bbox "tight"), not cut at the canvas
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recorder = scorecard.Recorder("c", tmp_path / "artefacts", "quick", "cpu")
    fig = plt.figure(figsize=(4, 2))
    fig.add_axes((0, 0, 1, 1))  # drawn over the whole canvas
    fig.text(0.5, -0.3, "residual x", ha="center")  # 0.3 x 2 in below the canvas
    path = recorder.save_figure(fig, "label")
    plt.close(fig)
    height_pt = float(re.search(r'<svg[^>]*height="([\d.]+)pt"', path.read_text()).group(1))
    assert height_pt > 2 * 72 * 1.2  # the canvas is 144 pt high; the label adds ~43 pt
