"""The one verdict on Figure 2 (klhuber.toy.figure2_verdict), on constructed results."""

from __future__ import annotations

import math

import numpy as np
import pytest

from klhuber import toy

FAMILIES = ("laplace", "logistic", "cauchy")
SCALES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
ALPHAS = tuple(np.geomspace(0.01, 30.0, 40).tolist())


def rmse_curves(best_of, families, scales, alphas, *, seeds, jitter, rng_seed):
    """RMSE curves (family, scale, seed, alpha), each a parabola in log alpha whose minimum is
    at ``best_of(family, scale)``, moved by ``jitter`` (log units, normal) per seed."""
    rng = np.random.default_rng(rng_seed)
    la = np.log(alphas)
    rmse = np.empty((len(families), len(scales), seeds, len(alphas)))
    for fi, fam in enumerate(families):
        for si, s in enumerate(scales):
            for k in range(seeds):
                centre = math.log(best_of(fam, s)) + jitter * rng.standard_normal()
                rmse[fi, si, k] = s * (1.0 + 0.05 * (la - centre) ** 2)
    return rmse


def payload(best_of, *, seeds=8, jitter=0.0, method="exact", rng_seed=0):
    """Results whose RMSE curve per (family, scale) is minimal at ``best_of(family, scale)``."""
    rmse = rmse_curves(best_of, FAMILIES, SCALES, ALPHAS, seeds=seeds, jitter=jitter,
                       rng_seed=rng_seed)
    summary = toy.summarize(rmse, ALPHAS, SCALES, FAMILIES, n_boot=20)
    entry = {"rmse": rmse.tolist(), "summary": summary,
             "regret": {f: {"theory": [0.01, 0.02], "alpha_1": [0.1]} for f in FAMILIES}}
    return {"profile": "test",
            "config": {"families": FAMILIES, "scales": SCALES, "alphas": ALPHAS},
            "theory": {"laplace": {"huber": {"c": 0.0}}, "logistic": {"huber": {"c": 2.1}},
                       "cauchy": {"huber": {"c": 0.4}}},
            "methods": {method: {"huber": entry}}}


def test_linear_growth_is_reproduced():
    verdict = toy.figure2_verdict(payload(lambda f, s: 0.8 * s), n_boot=200)
    assert verdict.status == "reproduced" and verdict.method == "exact"
    for fam in verdict.families:
        assert fam.verdict == "reproduced" and fam.p_linear_growth == 1.0
        assert fam.slope_low > 0
    assert "is reproduced for every noise family" in verdict.sentence()
    assert verdict.family("cauchy").max_regret == 0.02


def test_a_flat_family_makes_the_claim_differ():
    verdict = toy.figure2_verdict(
        payload(lambda f, s: 0.01 if f == "laplace" else 0.8 * s), n_boot=200)
    assert verdict.status == "differs"
    assert verdict.family("laplace").verdict == "differs"
    assert verdict.family("logistic").verdict == "reproduced"
    assert "it fails for Laplace" in verdict.sentence()
    rows = verdict.recipe_rows()
    assert rows[0] == ["Laplace", "0", "α → 0: the L1 loss, whatever the scale"]
    assert rows[1][2] == "α = 2.1·s"


def test_gd_is_preferred_and_an_even_split_is_inconclusive(monkeypatch):
    results = payload(lambda f, s: 0.8 * s, method="gd")
    results["methods"]["exact"] = payload(lambda f, s: 0.01)["methods"]["exact"]
    assert toy.figure2_verdict(results, n_boot=50).status == "reproduced"  # GD, not exact

    def half(rmse, alphas, scales, n_boot, rng):  # half of the resamples grow linearly
        return np.where(np.arange(n_boot) % 2 == 0, 1.0, -1.0), np.full(n_boot, 0.9)

    monkeypatch.setattr(toy.verdict, "_bootstrap_growth", half)
    verdict = toy.figure2_verdict(results, n_boot=50)
    assert verdict.method == "gd" and verdict.status == "inconclusive"
    assert all(f.p_linear_growth == 0.5 for f in verdict.families)
    assert "undecided" in verdict.sentence()


def test_bad_arguments():
    results = payload(lambda f, s: s)
    with pytest.raises(ValueError, match="level"):
        toy.figure2_verdict(results, level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        toy.figure2_verdict(results, n_boot=0)
    with pytest.raises(ValueError, match="family"):
        toy.figure2_verdict(results, n_boot=20).family("normal")


def test_committed_results_prefer_the_complete_file(tmp_path):
    import json

    assert toy.committed_results(tmp_path) is None
    (tmp_path / "toy").mkdir()
    for name, value in (("toy_full_exact.json", 1), ("toy_full.json", 2)):
        (tmp_path / "toy" / name).write_text(json.dumps({"a": value, "provenance": {}}))
        payload_, found = toy.committed_results(tmp_path)
        assert (found, payload_["a"]) == (name, value)
