"""Tests of klhuber.detection.report: loading committed runs, CIs, paired claims, the α sweep."""

from __future__ import annotations

import json
import math

import pytest

from klhuber.detection import report as rp

SPEC = {"image_size": 64, "num_train": 10, "num_val": 5, "noise_scale": 0.1, "seed": 0}


def run(arch, preset, noise, seed, ap50=0.8, ap75=0.5, ap=0.45, profile="cpu", val="v1",
        interp_x=0.1):
    return {
        "profile": profile, "run_id": f"{arch}-{preset}-noise{noise:g}-seed{seed}",
        "arch": arch, "preset": preset, "seed": seed,
        "metrics": {"AP50": ap50, "AP75": ap75, "AP": ap},
        "data": {"spec": {**SPEC, "noise_scale": noise}, "hash": {"train": "t", "val": val},
                 "true_label_noise": {"edge_scale": noise, "distribution": "laplace",
                                      "x": noise / math.sqrt(2), "w": noise * math.sqrt(2)}},
        "interpreted_label_noise": {"x": interp_x, "w": 2 * interp_x, "kind": "huber"},
        "config": {},
    }


def write(folder, runs):
    folder.mkdir(parents=True, exist_ok=True)
    for r in runs:
        (folder / f"{r['run_id']}.json").write_text(json.dumps(r))


def test_estimate_matches_student_t():
    est = rp.estimate([1.0, 2.0, 3.0])
    assert est.mean == 2.0 and est.n == 3

    assert est.half_width == pytest.approx(4.30265 / math.sqrt(3), rel=1e-6)  # t_{0.975,2}
    single = rp.estimate([0.4])
    assert single.n == 1 and math.isnan(single.low) and single.text() == "40.0"
    assert rp.estimate([]).text() == "–"
    assert rp.estimate([0.5, 0.7]).text() == "60.0 ± 127.1"
    # differences carry a sign, and a true minus sign
    assert rp.estimate([0.5, 0.7]).text(signed=True) == "+60.0 ± 127.1"
    assert rp.estimate([-0.038]).text(signed=True) == "\N{MINUS SIGN}3.8"
    assert rp.estimate([]).text(signed=True) == "–"
    with pytest.raises(ValueError, match="level"):
        rp.estimate([1.0, 2.0], level=1.5)


def test_paired_difference_uses_matching_seeds_only():
    runs = [run("retinanet", "a", 0.1, s, ap=0.5 + 0.01 * s) for s in (0, 1, 2)]
    runs += [run("retinanet", "b", 0.1, s, ap=0.4 + 0.02 * s) for s in (0, 1)]
    diff = rp.paired_difference(runs, "retinanet", "a", "b", 0.1, "AP")
    assert diff.n == 2
    assert diff.values == pytest.approx((0.1, 0.09))
    with pytest.raises(ValueError, match="metric"):
        rp.paired_difference(runs, "retinanet", "a", "b", 0.1, "AR")


@pytest.mark.parametrize(("relation", "values", "expected"), [
    (">", (0.02, 0.03, 0.025), "reproduced"),
    (">", (-0.02, -0.03, -0.025), "differs"),
    (">", (-0.02, 0.03, 0.0), "inconclusive"),
    ("<", (-0.02, -0.03, -0.025), "reproduced"),
    ("<", (0.02, 0.03, 0.025), "differs"),
    ("~", (0.001, -0.001, 0.0), "reproduced"),
    ("~", (0.05, 0.06, 0.055), "differs"),
    ("~", (0.0, 0.02, 0.01), "inconclusive"),
])
def test_comparison_verdicts_need_the_interval_to_exclude_the_opposite(relation, values,
                                                                       expected):
    comp = rp.Comparison("a", "b", "AP", relation, margin=0.01)
    assert comp.verdict(rp.estimate(values)) == expected
    assert comp.verdict(rp.estimate(values[:1])) == "inconclusive"


def test_claim_verdicts_on_a_constructed_grid():
    runs = []
    for s in range(3):
        jitter = 0.001 * s
        for preset, ap75, ap in (("publication", 0.40, 0.30), ("implementation", 0.45, 0.40),
                                 ("experiment_a", 0.50 + jitter, 0.41),
                                 ("experiment_b", 0.51 + jitter, 0.41),
                                 ("experiment_c", 0.52 - jitter, 0.41),
                                 ("appendix_d", 0.45, 0.40 + jitter),
                                 ("appendix_e", 0.45, 0.45 + jitter)):
            runs.append(run("fasterrcnn", preset, 0.1, s, ap75=ap75, ap=ap + jitter))
    out = rp.claim_verdicts(runs, 0.1)
    assert out["table3"]["verdict"] == "reproduced"
    assert out["table5"]["verdict"] == "reproduced"
    assert out["table6"]["verdict"] == "differs"  # five points apart, not within one
    assert out["table4"]["verdict"] == "not run"
    assert out["table3"]["seeds"] == 3


def test_load_runs_refuses_mixtures_and_broken_files(tmp_path):
    with pytest.raises(rp.ResultsError, match="no results folder"):
        rp.load_runs(tmp_path, "cpu")
    (tmp_path / "cpu").mkdir()
    with pytest.raises(rp.ResultsError, match="no run results"):
        rp.load_runs(tmp_path, "cpu")
    write(tmp_path / "cpu", [run("retinanet", "a", 0.1, 0), run("retinanet", "a", 0.0, 1)])
    assert [r["seed"] for r in rp.load_runs(tmp_path, "cpu")] == [1, 0]  # sorted by run id
    write(tmp_path / "cpu", [run("retinanet", "b", 0.1, 0, val="other")])
    with pytest.raises(rp.ResultsError, match="different data sets"):
        rp.load_runs(tmp_path, "cpu")
    (tmp_path / "cpu" / "retinanet-b-noise0.1-seed0.json").unlink()
    other = run("retinanet", "b", 0.1, 0)
    other["data"]["spec"]["image_size"] = 96
    write(tmp_path / "cpu", [other])
    with pytest.raises(rp.ResultsError, match="different data sets"):
        rp.load_runs(tmp_path, "cpu")
    (tmp_path / "cpu" / "retinanet-b-noise0.1-seed0.json").unlink()
    # another noise level has its own validation hash: same data set family
    write(tmp_path / "cpu", [run("retinanet", "b", 0.2, 0, val="v-noise0.2")])
    assert len(rp.load_runs(tmp_path, "cpu")) == 3
    (tmp_path / "cpu" / "retinanet-b-noise0.2-seed0.json").unlink()
    write(tmp_path / "cpu", [run("retinanet", "c", 0.1, 0, profile="quick")])
    with pytest.raises(rp.ResultsError, match="belongs to profile 'quick'"):
        rp.load_runs(tmp_path, "cpu")
    (tmp_path / "cpu" / "retinanet-c-noise0.1-seed0.json").unlink()
    (tmp_path / "cpu" / "broken.json").write_text('{"profile": "cpu", "run_')
    with pytest.raises(rp.ResultsError, match="half-written"):
        rp.load_runs(tmp_path, "cpu")
    (tmp_path / "cpu" / "broken.json").write_text('{"profile": "cpu"}')
    with pytest.raises(rp.ResultsError, match="lacks"):
        rp.load_runs(tmp_path, "cpu")


RECIPE = {"iters": 1500, "lr": 0.02, "min_size": 64, "fix_sizes": False}


def trained(arch, preset, noise, seed, profile="cpu", device="cpu", **recipe):
    r = run(arch, preset, noise, seed, profile=profile)
    r["config"] = {**RECIPE, **recipe, "device": device, "seed": seed, "box_loss": preset,
                   "threads": 1 if device == "cpu" else None,
                   "out_dir": f"/somewhere/{profile}/{r['run_id']}"}
    return r


def test_load_runs_pools_the_seeds_a_gpu_adds_to_the_cpu_grid(tmp_path):
    from klhuber.detection.experiments import get_profile

    assert get_profile("gpu").adds_seeds_to == "cpu"
    assert set(get_profile("gpu").seeds).isdisjoint(get_profile("cpu").seeds)
    write(tmp_path / "cpu", [trained("retinanet", p, 0.1, s)
                             for p in ("implementation", "experiment_a") for s in (0, 1)])
    write(tmp_path / "gpu", [trained("retinanet", p, 0.1, 3, profile="gpu", device="cuda")
                             for p in ("implementation", "experiment_a")])
    pooled = rp.load_runs(tmp_path, "cpu")
    assert sorted((r["profile"], r["seed"]) for r in pooled if r["preset"] == "experiment_a") \
        == [("cpu", 0), ("cpu", 1), ("gpu", 3)]
    assert rp.paired_difference(pooled, "retinanet", "experiment_a", "implementation", 0.1,
                                "AP").n == 3
    assert {r["profile"] for r in rp.load_runs(tmp_path, "cpu", pool=False)} == {"cpu"}
    # the gpu profile on its own reads only its own folder (nothing adds seeds to it)
    assert {r["profile"] for r in rp.load_runs(tmp_path, "gpu")} == {"gpu"}


def test_load_runs_refuses_pooled_runs_of_another_recipe_or_a_repeated_seed(tmp_path):
    write(tmp_path / "cpu", [trained("fasterrcnn", "implementation", 0.1, s) for s in (0, 1)])
    # an older run that never wrote a switch counts as the switch off
    legacy = trained("fasterrcnn", "publication", 0.1, 0)
    del legacy["config"]["fix_sizes"]
    write(tmp_path / "cpu", [legacy])
    assert len(rp.load_runs(tmp_path, "cpu")) == 3
    write(tmp_path / "gpu", [trained("fasterrcnn", "publication", 0.1, 3, profile="gpu",
                                     device="cuda", iters=200)])
    with pytest.raises(rp.ResultsError, match=r"different settings \(iters\)"):
        rp.load_runs(tmp_path, "cpu")
    assert len(rp.load_runs(tmp_path, "cpu", pool=False)) == 3
    write(tmp_path / "gpu", [trained("fasterrcnn", "publication", 0.1, 3, profile="gpu",
                                     device="cuda")])
    assert len(rp.load_runs(tmp_path, "cpu")) == 4
    # the same cell and seed from both profiles: which one would count?
    write(tmp_path / "gpu", [trained("fasterrcnn", "implementation", 0.1, 1, profile="gpu",
                                     device="cuda")])
    with pytest.raises(rp.ResultsError, match="repeats a seed of profile 'cpu'"):
        rp.load_runs(tmp_path, "cpu")
    (tmp_path / "gpu" / "fasterrcnn-implementation-noise0.1-seed1.json").unlink()
    # a run of the cpu profile filed under gpu/ is refused, as in any folder
    write(tmp_path / "gpu", [trained("fasterrcnn", "implementation", 0.1, 4)])
    with pytest.raises(rp.ResultsError, match="belongs to profile 'cpu', not 'gpu'"):
        rp.load_runs(tmp_path, "cpu")


def test_load_runs_refuses_runs_of_one_profile_trained_differently(tmp_path):
    # e.g. a smoke run with --overrides '{"iters": 4}' written into the evidence folder
    write(tmp_path / "cpu", [trained("retinanet", "implementation", 0.1, 0),
                             trained("retinanet", "experiment_a", 0.1, 0, iters=4)])
    with pytest.raises(rp.ResultsError, match="different settings"):
        rp.load_runs(tmp_path, "cpu")


def test_alpha_sweep_summary():
    alphas = (0.0, 0.17678, 0.70711, 2.8284)
    runs = []
    for s in range(3):
        for a, ap75 in zip(alphas, (0.60, 0.62, 0.65, 0.55)):
            runs.append(run("retinanet", f"sweep_alpha{a:.5g}", 0.1, s, ap75=ap75 + 0.001 * s))
    runs.append(run("retinanet", "implementation", 0.1, 0))  # not a sweep run: ignored
    (summary,) = rp.alpha_sweep(runs)
    assert summary.alphas == alphas
    assert summary.best_alpha == 0.70711
    assert summary.seeds == 3
    assert summary.vs_l1[0].mean == 0.0
    assert summary.vs_l1[2].mean == pytest.approx(0.05)
    # Table 2: true centre scale 0.1/sqrt(2) over sigma_x = 0.1; the theory: the best Huber
    # threshold for the centre's noise (the mean of two Laplace edge offsets), 0.686 b
    assert summary.table2_alpha == pytest.approx(1 / math.sqrt(2))
    assert summary.theory_alpha == pytest.approx(0.686, abs=5e-4)
    # on clean labels both predictions are the L1 limit
    clean = [run("retinanet", f"sweep_alpha{a:.5g}", 0.0, 0) for a in alphas]
    (summary0,) = rp.alpha_sweep(clean)
    assert summary0.table2_alpha == summary0.theory_alpha == 0.0
    assert rp.sweep_alpha_of("sweep_alpha0") == 0.0
    assert rp.sweep_alpha_of("implementation") is None


def test_load_runs_errors_name_folders_relative_to_the_results_folder(tmp_path):
    with pytest.raises(rp.ResultsError) as info:
        rp.load_runs(tmp_path, "cpu")
    assert str(tmp_path) not in str(info.value) and "cpu/" in str(info.value)
    (tmp_path / "cpu").mkdir()
    with pytest.raises(rp.ResultsError) as info:
        rp.load_runs(tmp_path, "cpu")
    assert str(tmp_path) not in str(info.value)
    write(tmp_path / "cpu", [trained("retinanet", "implementation", 0.1, 0)])
    for text in ('{"profile": "cpu", "run_', "[1]", '{"profile": "cpu"}'):
        (tmp_path / "cpu" / "broken.json").write_text(text)
        with pytest.raises(rp.ResultsError, match="cpu/broken.json") as info:
            rp.load_runs(tmp_path, "cpu")
        assert str(tmp_path) not in str(info.value)
    (tmp_path / "cpu" / "broken.json").unlink()
    write(tmp_path / "gpu", [trained("retinanet", "implementation", 0.1, 3, profile="quick")])
    with pytest.raises(rp.ResultsError, match="in gpu/ belongs to profile 'quick'") as info:
        rp.load_runs(tmp_path, "cpu")
    assert str(tmp_path) not in str(info.value)
    other = trained("retinanet", "experiment_a", 0.1, 3, profile="gpu", device="cuda")
    other["data"]["hash"]["val"] = "other"
    write(tmp_path / "gpu", [other])
    (tmp_path / "gpu" / "retinanet-implementation-noise0.1-seed3.json").unlink()
    with pytest.raises(rp.ResultsError, match="cpu/ and gpu/ come from 2 different") as info:
        rp.load_runs(tmp_path, "cpu")
    assert str(tmp_path) not in str(info.value)


@pytest.mark.parametrize("fault", ["recipe", "repeated seed", "misfiled", "broken", "data set"])
def test_load_evidence_falls_back_to_the_own_runs_when_pooling_is_refused(tmp_path, fault):
    own = [trained("fasterrcnn", p, 0.1, s) for p in ("implementation", "publication")
           for s in (0, 1)]
    write(tmp_path / "cpu", own)
    assert rp.load_evidence(tmp_path, "cpu") == (rp.load_runs(tmp_path, "cpu"), None)
    gpu = trained("fasterrcnn", "publication", 0.1, 3, profile="gpu", device="cuda")
    write(tmp_path / "gpu", [gpu])
    runs, note = rp.load_evidence(tmp_path, "cpu")
    assert note is None and {r["profile"] for r in runs} == {"cpu", "gpu"}
    if fault == "recipe":
        write(tmp_path / "gpu", [trained("fasterrcnn", "implementation", 0.1, 3,
                                         profile="gpu", device="cuda", iters=200)])
    elif fault == "repeated seed":
        write(tmp_path / "gpu", [trained("fasterrcnn", "implementation", 0.1, 1,
                                         profile="gpu", device="cuda")])
    elif fault == "misfiled":
        write(tmp_path / "gpu", [trained("fasterrcnn", "implementation", 0.1, 4)])
    elif fault == "broken":
        (tmp_path / "gpu" / "half.json").write_text('{"profile": "gpu", "run_')
    else:
        other = trained("fasterrcnn", "implementation", 0.1, 3, profile="gpu", device="cuda")
        other["data"]["hash"]["val"] = "other"
        write(tmp_path / "gpu", [other])
    with pytest.raises(rp.ResultsError):
        rp.load_runs(tmp_path, "cpu")
    runs, note = rp.load_evidence(tmp_path, "cpu")
    assert runs == rp.load_runs(tmp_path, "cpu", pool=False) and len(runs) == 4
    assert note.startswith("The runs of the `gpu` profile are not pooled with the `cpu` runs")
    assert str(tmp_path) not in note and note.endswith(".")
    # the profile's own runs are unusable: nothing to fall back to
    write(tmp_path / "cpu", [trained("fasterrcnn", "experiment_a", 0.1, 0, iters=4)])
    with pytest.raises(rp.ResultsError, match="different settings"):
        rp.load_evidence(tmp_path, "cpu")


def test_made_on_states_the_seeds_devices_dates_and_commits_of_the_runs():
    def made(profile, seed, device, commit, date, preset="implementation"):
        r = trained("retinanet", preset, 0.1, seed, profile=profile,
                    device=device.split(" ")[0])
        r["provenance"] = {"device": device, "git_commit": commit * 40,
                           "date_utc": f"{date}T05:00:00+00:00"}
        return r

    runs = [made("cpu", 0, "cpu (x86_64, 2 logical CPUs)", "a", "2026-12-01"),
            made("cpu", 1, "cpu (x86_64, 2 logical CPUs)", "b", "2026-12-02", "experiment_a"),
            made("gpu", 3, "cuda (NVIDIA H200)", "c", "2026-12-03"),
            made("gpu", 4, "cuda:0 (NVIDIA H200)", "c", "2026-12-03")]
    assert rp.made_on(runs) == (
        "`cpu` profile: 2 runs, seeds 0, 1, on cpu (x86_64, 2 logical CPUs), 2026-12-01 to "
        "2026-12-02, commits aaaaaaa, bbbbbbb; `gpu` profile: 2 runs, seeds 3, 4, on "
        "cuda (NVIDIA H200) and cuda:0 (NVIDIA H200), 2026-12-03, commit ccccccc")
    many = [made("cpu", 0, "cpu", c, f"2026-12-0{i + 1}", p)
            for i, (c, p) in enumerate(zip("dcba", ("implementation", "experiment_a",
                                                     "experiment_b", "publication")))]
    assert rp.made_on(many).endswith("4 commits from ddddddd to aaaaaaa")
    assert rp.made_on(runs[:1]).startswith("`cpu` profile: 1 run, seed 0, on cpu")
    assert rp.made_on([]) == ""


def test_presets_missing_names_the_side_without_runs():
    claim = rp.Claim("t", "fasterrcnn", "text",
                     (rp.Comparison("experiment_a", "implementation", "AP75", ">"),
                      rp.Comparison("experiment_b", "implementation", "AP75", ">"),
                      rp.Comparison("implementation", "publication", "AP", ">")))
    runs = [trained("fasterrcnn", p, 0.1, 0) for p in ("experiment_a", "experiment_b")]
    # the comparisons' presets ran; their reference did not
    assert rp.presets_missing(runs, claim, 0.1) == ["implementation", "publication"]
    runs.append(trained("fasterrcnn", "implementation", 0.1, 0))
    assert rp.presets_missing(runs, claim, 0.1) == ["publication"]
    runs.append(trained("fasterrcnn", "publication", 0.2, 0))  # another noise level
    assert rp.presets_missing(runs, claim, 0.1) == ["publication"]
    runs.append(trained("fasterrcnn", "publication", 0.1, 1))  # ran, but not with seed 0
    assert rp.presets_missing(runs, claim, 0.1) == ["implementation", "publication"]
    runs.append(trained("fasterrcnn", "publication", 0.1, 0))
    assert rp.presets_missing(runs, claim, 0.1) == []
    verdicts = rp.claim_verdicts(runs[:2], 0.1)
    assert verdicts["table3"]["verdict"] == "not run"
    assert rp.presets_missing(runs[:2], verdicts["table3"]["claim"], 0.1) == [
        "implementation", "publication", "experiment_c"]


def _sweep(noise, alphas, diffs, table2=0.70711):
    """A SweepSummary whose differences to L1 are given as (mean, low, high, n)."""
    ests = tuple(rp.Estimate(0.5, 0.4, 0.6, 3) for _ in alphas)
    vs = tuple(rp.Estimate(*d) for d in diffs)
    best = alphas[max(range(len(alphas)), key=lambda i: diffs[i][0])]
    return rp.SweepSummary("retinanet", noise, "AP75", alphas, ests, vs, best,
                           table2_alpha=table2, theory_alpha=0.686 * table2 / 0.70711,
                           seeds=3)


@pytest.mark.parametrize("low, high, n, verdict", [
    (0.01, 0.05, 3, "reproduced"), (-0.05, -0.01, 3, "differs"),
    (-0.05, 0.01, 3, "inconclusive"), (math.nan, math.nan, 1, "inconclusive")])
def test_label_noise_verdict_compares_the_alpha_nearest_table2_with_l1(low, high, n, verdict):
    alphas = (0.0, 0.17678, 0.70711, 2.8284)
    other = (0.0, -0.9, -0.9, 3)  # the other alphas' differences must not matter
    diffs = [(0.0, 0.0, 0.0, 3), other, ((low + high) / 2 if n > 1 else 0.02, low, high, n),
             other]
    clean = _sweep(0.0, alphas, [(0.0, 0.0, 0.0, 3)] * 4, table2=0.0)
    got, text = rp.label_noise_verdict([clean, _sweep(0.1, alphas, diffs)])
    assert got == verdict
    assert "α ≈ 0.71" in text and "s = 0.1" in text and "Table 2: 0.71" in text
    assert ("paired seed so far" in text) == (n < 2)


def test_label_noise_verdict_not_run_without_noisy_or_l1_runs():
    alphas = (0.17678, 0.70711)
    assert rp.label_noise_verdict([])[0] == "not run"
    clean = _sweep(0.0, (0.0, 0.70711), [(0.0, 0.0, 0.0, 3)] * 2, table2=0.0)
    assert rp.label_noise_verdict([clean])[0] == "not run"
    no_l1 = _sweep(0.1, alphas, [(0.0, -0.1, 0.1, 3)] * 2)
    verdict, text = rp.label_noise_verdict([clean, no_l1])
    assert verdict == "not run" and "no committed L1 run" in text
