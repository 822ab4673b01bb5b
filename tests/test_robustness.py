"""Issue 22: an installed wheel records honest provenance, and public functions answer bad
input with a ValueError/TypeError naming the parameter and its allowed range."""

from __future__ import annotations

import subprocess
from pathlib import Path

from klhuber import results

REPO = Path(__file__).resolve().parent.parent


# -------------------------------------------------------------------------------- provenance


def test_provenance_records_version_and_only_the_checkouts_commit(tmp_path, monkeypatch):
    import klhuber

    record = results.provenance(command="x")
    assert record["klhuber_version"] == klhuber.__version__
    assert record["versions"]["klhuber"] == klhuber.__version__
    assert results.CHECKOUT_ROOT == REPO and results.REPO_ROOT == REPO
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert results.git_commit().startswith(head)
    # an installed wheel: no checkout, so no commit, even inside some other repository
    monkeypatch.setattr(results, "CHECKOUT_ROOT", None)
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("KLHUBER_GIT_COMMIT", raising=False)
    assert results.git_commit() is None
    assert results.provenance(command="x")["git_commit"] is None
    monkeypatch.setenv("KLHUBER_GIT_COMMIT", "abc123")
    assert results.git_commit() == "abc123"
    # a checkout nested in another repository (no .git of its own) records no commit either
    outer = tmp_path / "outer"
    (outer / "klhuber").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    monkeypatch.setattr(results, "CHECKOUT_ROOT", (outer / "klhuber").resolve())
    assert results.git_commit() == "abc123"
