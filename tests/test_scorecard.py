"""klhuber.scorecard and the generated scorecard page."""

from __future__ import annotations

import pytest

from klhuber import book, scorecard


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
