"""klhuber.results: atomic writes and provenance."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from klhuber import results


def test_save_and_load_round_trip_with_provenance(tmp_path):
    path = results.save_results(tmp_path / "sub" / "r.json", {"value": 1.5},
                                command="klhuber toy --profile quick", device="cpu",
                                wall_time_s=2.0)
    document = results.load_results(path)
    assert document["value"] == 1.5
    record = document["provenance"]
    for key in ("command", "git_commit", "device", "versions", "date_utc", "wall_time_s"):
        assert key in record
    assert record["command"] == "klhuber toy --profile quick"
    assert record["versions"]["python"]
    assert not list(tmp_path.glob("sub/.*tmp")), "temporary file left behind"


def test_nan_is_refused_rather_than_written(tmp_path):
    with pytest.raises(ValueError):
        results.save_results(tmp_path / "r.json", {"value": math.nan}, command="x")
    assert not (tmp_path / "r.json").exists()


def test_payload_cannot_override_provenance(tmp_path):
    with pytest.raises(ValueError, match="provenance"):
        results.save_results(tmp_path / "r.json", {"provenance": {}}, command="x")


def test_load_rejects_files_without_provenance(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"value": 1}))
    with pytest.raises(ValueError, match="provenance"):
        results.load_results(path)


def test_atomic_write_keeps_old_content_when_writing_fails(tmp_path):
    path = tmp_path / "r.txt"
    results.atomic_write_text(path, "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        results.atomic_write_bytes(path, Boom())  # not bytes: fails before replacing
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


def test_atomic_write_gives_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    results._umask.cache_clear()  # read once per process: make it read 0o022
    try:
        path = results.atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
        results._umask.cache_clear()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
