"""The notebook pipeline (klhuber.book): failures are loud, the cache works, the toc is sound."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from klhuber import book

pytest.importorskip("papermill")

REPO = Path(__file__).resolve().parent.parent

HEADER = textwrap.dedent("""\
    # ---
    # jupyter:
    #   jupytext:
    #     formats: py:percent
    #   kernelspec:
    #     display_name: Python 3
    #     language: python
    #     name: python3
    # ---

    # %% tags=["parameters"]
    profile = "quick"
    device = "cpu"
    seed = 0
    artefacts_dir = None
    results_dir = "../results"

    """)


def _mini_book(tmp_path: Path, notebooks: dict[str, str]) -> book.BookPaths:
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    chapters = "\n".join(f"  - file: book/nb/{stem}" for stem in notebooks)
    (tmp_path / "_toc.yml").write_text(f"format: jb-book\nroot: book/intro\nchapters:\n{chapters}\n")
    for stem, body in notebooks.items():
        (tmp_path / "notebooks" / f"{stem}.py").write_text(HEADER + body)
    return book.BookPaths(root=tmp_path, output=tmp_path / "out")


def test_failing_notebook_names_notebook_cell_and_traceback(tmp_path):
    paths = _mini_book(tmp_path, {
        "fine": "# %%\nx = 1\n",
        "broken": "# %%\ny = 2\n\n# %%\nraise ValueError('claim does not hold: 1 != 2')\n",
    })
    with pytest.raises(book.BookError) as info:
        book.run_notebooks(paths=paths, log=lambda *_: None)
    message = str(info.value)
    assert "broken" in message
    assert "ValueError" in message and "claim does not hold" in message
    assert "cell" in message
    # the failed notebook is not cached: the next build runs it again
    assert not (paths.cache / "broken.json").exists()
    assert (paths.cache / "fine.json").exists()


def test_cache_skips_unchanged_and_reruns_changed(tmp_path):
    paths = _mini_book(tmp_path, {"a": "# %%\nprint(profile, seed)\n", "b": "# %%\nz = 3\n"})
    first = book.run_notebooks(paths=paths, log=lambda *_: None)
    assert [r.status for r in first] == ["executed", "executed"]
    second = book.run_notebooks(paths=paths, log=lambda *_: None)
    assert [r.status for r in second] == ["cached", "cached"]
    (paths.notebooks / "b.py").write_text(HEADER + "# %%\nz = 4\n")
    third = book.run_notebooks(paths=paths, log=lambda *_: None)
    assert [r.status for r in third] == ["cached", "executed"]
    # a different parameter is a different key
    fourth = book.run_notebooks(["a"], seed=1, paths=paths, log=lambda *_: None)
    assert [r.status for r in fourth] == ["executed"]
    # papermill injected the parameters
    executed = json.loads((paths.executed / "a.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "seed = 1" in "".join(injected[0]["source"])


def test_cache_key_depends_on_inputs(tmp_path):
    paths = _mini_book(tmp_path, {"a": "# %%\nx = 1\n"})
    key = book.cache_key("a", {"profile": "quick"}, paths)
    assert key == book.cache_key("a", {"profile": "quick"}, paths)
    assert key != book.cache_key("a", {"profile": "full"}, paths)
    (tmp_path / "constraints.txt").write_text("torch==2.14.1\n")
    assert key != book.cache_key("a", {"profile": "quick"}, paths)


def test_unknown_chapter_and_profile_are_rejected(tmp_path):
    paths = _mini_book(tmp_path, {"a": "# %%\nx = 1\n"})
    with pytest.raises(ValueError, match="unknown chapter"):
        book.run_notebooks(["nope"], paths=paths)
    with pytest.raises(ValueError, match="profile"):
        book.run_notebooks(profile="huge", paths=paths)


def test_every_toc_notebook_has_a_source_with_parameters():
    import jupytext

    stems = book.notebook_stems()
    assert stems, "the table of contents lists no notebook"
    sources = {p.stem for p in (REPO / "notebooks").glob("*.py")}
    assert set(stems) == sources, "notebooks/ and _toc.yml disagree"
    for stem in stems:
        notebook = jupytext.read(REPO / "notebooks" / f"{stem}.py")
        parameter_cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(parameter_cells) == 1, f"{stem}: needs exactly one parameters cell"
        for name in ("profile", "device", "seed", "artefacts_dir"):
            assert f"{name} =" in parameter_cells[0].source, f"{stem}: parameter {name} missing"


def test_every_toc_page_exists_in_the_repo_or_is_generated():
    generated = {"book/scorecard", "book/api/index"} | {f"book/api/{p}" for p in book.API_PAGES}
    for entry in book.toc_files():
        if entry.startswith(book.NOTEBOOK_PREFIX) or entry in generated:
            continue
        assert (REPO / f"{entry}.md").exists(), entry


def test_api_pages_in_toc_match_the_generator():
    listed = {e[len("book/api/"):] for e in book.toc_files() if e.startswith("book/api/")}
    assert listed == set(book.API_PAGES) | {"index"}


def test_staged_notebooks_hide_parameters_cells(tmp_path):
    import json

    executed = tmp_path / "in.ipynb"
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "a = 1",
              "outputs": []},
             {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
              "source": "artefacts_dir = '/tmp/x'", "outputs": []},
             {"cell_type": "code", "metadata": {}, "source": "print(a)", "outputs": []}]
    executed.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                    "nbformat_minor": 5}))
    target = tmp_path / "out.ipynb"
    book._stage_notebook(executed, target)
    staged = json.loads(target.read_text())["cells"]
    assert [("remove-cell" in c["metadata"]["tags"]) for c in staged] == [True, True, False]


# ------------------------------------------------- never publish a failed or stale chapter (#22)


def test_html_refuses_a_failed_chapter(tmp_path):
    paths = _mini_book(tmp_path, {"fine": "# %%\nx = 1\n", "broken": "# %%\n1 / 0\n"})
    with pytest.raises(book.BookError):
        book.run_notebooks(paths=paths, log=lambda *_: None)
    assert (paths.executed / "broken.ipynb").exists()  # papermill kept the failed copy
    assert book.chapter_state("fine", paths)[0] == "current"
    assert book.chapter_state("broken", paths)[0] == "failed"
    with pytest.raises(book.BookError, match="broken: its last execution failed"):
        book.build_html(paths, log=lambda *_: None)
    assert not paths.html.exists() and not paths.site.exists()


def test_edited_notebook_is_stale_in_list_and_refused_by_html(tmp_path, capsys):
    paths = _mini_book(tmp_path, {"a": "# %%\nx = 1\n", "b": "# %%\ny = 2\n"})
    book.run_notebooks(paths=paths, seed=3, log=lambda *_: None)
    assert [book.chapter_state(s, paths)[0] for s in ("a", "b")] == ["current", "current"]
    (paths.notebooks / "b.py").write_text(HEADER + "# %%\ny = 3\n")
    assert book.chapter_state("b", paths)[0] == "stale"
    assert book.chapter_state("a", paths)[0] == "current"  # seed 3 was recorded and used
    from klhuber import cli

    assert cli.main(["book", "list", "--root", str(tmp_path), "--output",
                     str(paths.output)]) == 0
    out = capsys.readouterr().out
    assert "STALE" in out.splitlines()[1] and "STALE" not in out.splitlines()[0]
    assert cli.main(["book", "--root", str(tmp_path), "--output", str(paths.output),
                     "html"]) == 1
    assert "b: stale" in capsys.readouterr().err
    # results/ a chapter writes do not make it stale
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "new.json").write_text("{}")
    assert book.chapter_state("a", paths)[0] == "current"


def test_book_commands_find_the_book_or_say_there_is_none(tmp_path, monkeypatch, capsys):
    from klhuber import cli

    assert book.find_book_root(REPO / "klhuber") == REPO
    assert book.find_book_root(tmp_path) is None
    assert cli.main(["book", "list", "--root", str(tmp_path)]) == 1
    assert "no book there" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # no book from here (as for an installed wheel elsewhere)
    assert cli.main(["book", "list"]) == 1
    assert "--root" in capsys.readouterr().err
