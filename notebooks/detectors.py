# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (detectors)=
# # Detectors
#
# Section 7 and Appendices D–E of {cite}`meyer2021huber` train Faster R-CNN {cite}`ren2015faster`
# and RetinaNet {cite}`lin2017focal` on MS-COCO with each box-loss preset of Table 1 and report
# Tables 3–6. This chapter trains torchvision's detectors with the same presets
# ({py:func}`klhuber.detection.models.build_model`) on a **synthetic stand-in** for COCO: the shapes set
# of {py:mod}`klhuber.detection.synthetic`, whose training boxes carry edge noise of a *known*
# scale. It shows the paper's tables next to ours, the AP at every IoU threshold, and a test the
# paper could not do: does the preset whose interpreted label noise (Table 2) matches the true
# noise localise best?
# **Run time**: quick ≈ 2 min on 2 CPU cores (a smoke-scale grid of 10 runs); full ≈ 23 min
# on one H100 for all 32 runs, resumable across sessions (its results are committed under
# `results/detection/full/`).
# Re-run it alone: `klhuber book run detectors --profile full --device cuda`.

# %% tags=["parameters"]
profile = "quick"  # "quick" (laptop, minutes) or "full" (paper scale)
device = "cpu"  # "cpu" or "cuda"
seed = 0
artefacts_dir = None  # set by the book runner: where scorecard rows are written
results_dir = "../results"  # committed full-profile results (GPU runs) live here

# %%
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from klhuber.detection import experiments as ex
from klhuber.paper_values import detection as paper
from klhuber.plotting import color, use_style
from klhuber.plotting import markdown_table as md_table
from klhuber.scorecard import Recorder

use_style()
recorder = Recorder("detectors", artefacts_dir, profile, device)
detection_results = Path(results_dir) / "detection"




def pct(value):
    return "–" if value is None else f"{100 * value:.1f}"


# %% [markdown]
# (detectors-setup)=
# ## Set-up
#
# The paper's runs (VGG-16 Faster R-CNN on COCO 2014, ResNet-101 RetinaNet on COCO 2017,
# ImageNet-pretrained, GPU-days each) cannot be repeated here: no COCO, no pretrained weights,
# no network. Instead every run trains a detector **from scratch** on synthetic images of five
# shape classes with exact boxes, where each *training* box edge is moved by Laplace noise of
# scale `edge_scale × box size`; validation boxes are exact. The metric is the same
# (pycocotools COCOeval, {py:func}`klhuber.detection.evaluate.evaluate`). The profile below is
# the one this page was built with; the committed full-profile results, when present, are shown
# as well.

# %%
started = time.perf_counter()
if profile == "quick":
    work = Path(tempfile.mkdtemp(prefix="klhuber-detectors-"))
    runs = ex.run_experiment("quick", results_dir=work / "results", data_dir=work / "data",
                             work_dir=work / "work", device=device, log=None)
    quick_seconds = time.perf_counter() - started
else:
    runs = ex.run_experiment("full", results_dir=detection_results, device=device, log=print)
    quick_seconds = None
full_runs = ex.load_profile_results(detection_results, "full") if profile == "quick" else runs
assert runs, "the profile produced no run"
assert all(r["iterations"] == r["config"]["iters"] for r in runs)


def describe(profile_name, results):
    prof = ex.get_profile(profile_name)
    first = results[0]
    spec = first["data"]["spec"]
    prov = first["provenance"]
    archs = sorted({r["arch"] for r in results})
    return [
        ("profile", profile_name),
        ("data set", f"synthetic shapes, {spec['image_size']} px, {spec['num_train']} train / "
                     f"{spec['num_val']} val images, {len(spec['classes'])} classes"),
        ("label noise (train)", ", ".join(f"{n:g}" for n in sorted({r['data']['true_label_noise']
                                                                    ['edge_scale'] for r in results}))
         + f" × box size per edge ({prof.noise})"),
        ("architectures", ", ".join(archs)),
        ("backbone", f"{first['backbone']} from scratch"),
        ("schedule", prof.schedule_note),
        ("device", prov["device"]),
        ("runs", str(len(results))),
        ("commit / date", f"{prov['git_commit']} / {prov['date_utc']}"),
    ]


display(Markdown(md_table(["", f"this build ({profile})"], describe(profile, runs))))
if profile == "quick" and full_runs:
    display(Markdown(f"Full profile, from `results/detection/full/` ({len(full_runs)} runs):\n\n"
                     + md_table(["", "full profile"], describe("full", full_runs))))
else:
    display(Markdown("No committed full-profile results under `results/detection/full/` yet."))


# %%
def index(results):
    return {(r["arch"], r["preset"], r["data"]["true_label_noise"]["edge_scale"], r["seed"]): r
            for r in results}


def metric_cells(results, arch, preset, noise):
    rows = [r for (a, p, n, _), r in index(results).items() if (a, p, n) == (arch, preset, noise)]
    if not rows:
        return ["", "", ""]
    m = {k: np.mean([r["metrics"][k] for r in rows]) for k in ("AP50", "AP75", "AP")}
    return [pct(m["AP50"]), pct(m["AP75"]), pct(m["AP"])]


def noise_levels(results):
    return sorted({r["data"]["true_label_noise"]["edge_scale"] for r in results})


def table(key, arch, presets, labels):
    setup = paper.SETUPS[key]
    header = ["preset", "paper AP50", "paper AP75", "paper AP"]
    groups = [("quick", runs)] if profile == "quick" else []
    if full_runs:
        groups.append(("full", full_runs))
    for name, res in groups:
        for n in noise_levels(res):
            header += [f"{name} σ={n:g}: AP50", "AP75", "AP"]
    rows = []
    for preset, label in zip(presets, labels):
        values = paper.TABLES[key].get(preset, (None, None, None))
        row = [label] + ["–" if v is None else f"{v:.1f}" for v in values]
        for _, res in groups:
            for n in noise_levels(res):
                row += (metric_cells(res, arch, preset, n) if preset != "baseline"
                        else ["", "", ""])
        rows.append(row)
    caption = (f"**Paper**: {setup['arch']}, {setup['backbone']}, {setup['data']}, "
               f"{setup['schedule']}. **Ours**: {arch}, synthetic shapes, training-label edge "
               f"noise σ, backbone and schedule as in the set-up table; AP in percent.")
    return caption + "\n\n" + md_table(header, rows)


# %% [markdown]
# (detectors-table3)=
# ## Table 3: Faster R-CNN

# %%
t3 = ("baseline", "publication", "implementation", "experiment_a", "experiment_b", "experiment_c")
display(Markdown(table("table3", "fasterrcnn", t3,
                       ["Baseline [18]", "Publication", "Implementation", "Experiment A",
                        "Experiment B", "Experiment C"])))

# %% [markdown]
# (detectors-table4)=
# ## Table 4: RetinaNet

# %%
display(Markdown(table("table4", "retinanet", ex.TABLE_PRESETS["table4"],
                       ["Implementation", "Experiment A", "Experiment B"])))

# %% [markdown]
# (detectors-table5)=
# ## Table 5: the linear size target (Appendix D)

# %%
display(Markdown(table("table5", "fasterrcnn", ("implementation", "appendix_d"),
                       ["Original (log target)", "Approximation (t_w = w/w_a − 1)"])))

# %% [markdown]
# (detectors-table6)=
# ## Table 6: $D_{\alpha/2,1/\alpha}$ in place of $H_\alpha$ (Appendix E)

# %%
display(Markdown(table("table6", "fasterrcnn", ("implementation", "appendix_e"),
                       ["H_α", "D_{α/2,1/α}"])))

# %% [markdown]
# (detectors-ap-iou)=
# ## AP against the IoU threshold
#
# Table 3's argument is about localisation: smaller interpreted noise should raise AP at high
# IoU thresholds. The curves show COCOeval's AP at each threshold 0.50, 0.55, …, 0.95 per preset
# (Faster R-CNN; the full profile when available, else this build's runs).

# %%
show = full_runs if full_runs else runs
levels = noise_levels(show)
fig, axes = plt.subplots(1, len(levels), figsize=(5.2 * len(levels), 3.6), squeeze=False)
thresholds = np.linspace(0.5, 0.95, 10)
presets_seen = [p for p in ex.ALL_PRESETS if any(r["preset"] == p for r in show)]
for ax, n in zip(axes[0], levels):
    for i, preset in enumerate(presets_seen):
        rows = [r for r in show if r["arch"] == "fasterrcnn" and r["preset"] == preset
                and r["data"]["true_label_noise"]["edge_scale"] == n]
        if rows:
            curve = np.mean([r["metrics"]["AP_per_iou"] for r in rows], axis=0)
            ax.plot(thresholds, 100 * curve, marker="o", ms=3, color=color(i), label=preset)
    ax.set_xlabel("IoU threshold")
    ax.set_ylabel("AP (%)")
    ax.set_title(f"Faster R-CNN, label edge noise σ = {n:g} ({show[0]['profile']} profile)")
axes[0][0].legend(fontsize=7)
plt.show()
assert all(len(r["metrics"]["AP_per_iou"]) == 10 for r in show)
assert all(abs(np.mean(r["metrics"]["AP_per_iou"]) - r["metrics"]["AP"]) < 1e-6 for r in show)

# %% [markdown]
# (detectors-noise)=
# ## Controlled label noise
#
# Each preset's box loss *assumes* Laplace label noise of scale $\alpha\sigma_x w_a$ on the box
# centre (Table 2; for the detection stage of Faster R-CNN, and RetinaNet's single head). The
# synthetic labels have a *known* noise: edge offsets of scale $s$ give the centre a noise with
# the variance of a Laplace of scale $s/\sqrt2$ (in units of the box width). If the
# interpretation is right, AP75 should peak for presets whose interpreted scale is near the
# true one, and the best interpreted scale should grow with the true noise.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
best = {}
for ax, arch in zip(axes[0], ("fasterrcnn", "retinanet")):
    for j, n in enumerate(levels):
        rows = [r for r in show if r["arch"] == arch
                and r["data"]["true_label_noise"]["edge_scale"] == n]
        if not rows:
            continue
        xs = np.array([max(r["interpreted_label_noise"]["x"], 1e-3) for r in rows])
        ys = np.array([100 * r["metrics"]["AP75"] for r in rows])
        order = np.argsort(xs)
        ax.scatter(xs, ys, color=color(j), label=f"true σ = {n:g}")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(r["preset"].replace("experiment_", "exp_"), (x, y), fontsize=6)
        ax.axvline(rows[0]["data"]["true_label_noise"]["x"], color=color(j), ls="--", lw=1)
        best[(arch, n)] = rows[int(np.argmax(ys))]
    ax.set_xscale("log")
    ax.set_xlabel("interpreted label noise of x* (units of w_a; L1 plotted at 0.001)")
    ax.set_ylabel("AP75 (%)")
    ax.set_title(arch)
    ax.legend(fontsize=7)
plt.show()
display(Markdown(md_table(
    ["architecture", "true edge noise σ", "true centre scale", "best preset (AP75)",
     "its interpreted x* scale", "AP75"],
    [[a, f"{n:g}", f"{r['data']['true_label_noise']['x']:.3f}", r["preset"],
      f"{r['interpreted_label_noise']['x']:.3f}", pct(r["metrics"]["AP75"])]
     for (a, n), r in sorted(best.items())])))


# %% [markdown]
# (detectors-verdict)=
# ## What agrees with the paper, and what does not
#
# The checks below turn each table's claim into a test on our runs (averaged over seeds) and
# record the outcome in the scorecard. They are only meaningful on the full profile; the quick
# profile trains for less than an epoch, so its numbers exercise the pipeline and nothing more.

# %%
def mean_metric(results, arch, preset, noise, key):
    vals = [r["metrics"][key] for r in results if r["arch"] == arch and r["preset"] == preset
            and r["data"]["true_label_noise"]["edge_scale"] == noise]
    return float(np.mean(vals)) if vals else None


def claims(results):
    """Each table's claim, per noise level: True/False (None when runs are missing)."""
    out = {}
    for n in noise_levels(results):
        def m(arch, preset, key, n=n):
            return mean_metric(results, arch, preset, n, key)

        f = {p: {k: m("fasterrcnn", p, k) for k in ("AP50", "AP75", "AP")}
             for p in ex.ALL_PRESETS}
        r = {p: {k: m("retinanet", p, k) for k in ("AP50", "AP75", "AP")}
             for p in ex.ALL_PRESETS}
        have3 = all(f[p]["AP"] is not None for p in paper.TABLE3 if p != "baseline")
        out[("table3", n)] = None if not have3 else (
            all(f["publication"]["AP"] < f[p]["AP"] for p in
                ("implementation", "experiment_a", "experiment_b", "experiment_c"))
            and max(f[p]["AP75"] for p in ("experiment_a", "experiment_b", "experiment_c"))
            > f["implementation"]["AP75"])
        have4 = all(r[p]["AP"] is not None for p in paper.TABLE4)
        out[("table4", n)] = None if not have4 else (
            all(r["experiment_a"][k] >= r["implementation"][k] for k in ("AP50", "AP75", "AP"))
            and r["experiment_b"]["AP50"] < r["implementation"]["AP50"])
        for key, preset in (("table5", "appendix_d"), ("table6", "appendix_e")):
            have = f[preset]["AP"] is not None and f["implementation"]["AP"] is not None
            out[(key, n)] = None if not have else (
                abs(f[preset]["AP"] - f["implementation"]["AP"]) <= 0.02)
    return out


claim_text = {
    "table3": "Publication is worst in AP, and some of Experiments A–C beat Implementation in AP75",
    "table4": "Experiment A ≥ Implementation in AP50/AP75/AP, Experiment B loses AP50",
    "table5": "linear target within 2 AP points of the log target",
    "table6": "D_{α/2,1/α} within 2 AP points of H_α",
}
verdict_source = full_runs if full_runs else []
verdicts = claims(verdict_source) if verdict_source else {}
rows = []
for key in ("table3", "table4", "table5", "table6"):
    for n in noise_levels(verdict_source) if verdict_source else []:
        v = verdicts.get((key, n))
        rows.append([key, claim_text[key], f"{n:g}", "–" if v is None else ("holds" if v else
                                                                             "does not hold")])
if rows:
    display(Markdown("Full profile:\n\n" + md_table(["table", "claim", "true σ", "on our runs"],
                                                   rows)))
quick_verdicts = claims(runs) if profile == "quick" else {}
if quick_verdicts:
    display(Markdown("This build's runs (quick profile, not evidence): " + "; ".join(
        f"{k} σ={n:g}: {'–' if v is None else ('holds' if v else 'does not hold')}"
        for (k, n), v in sorted(quick_verdicts.items()))))

# %% [markdown]
# The paper's detectors start from ImageNet-pretrained backbones and train for days on COCO,
# whose label noise nobody knows; ours train from scratch for minutes on synthetic shapes with
# noise we set. So our tables test the paper's *reasoning* (the preset whose assumed label
# noise fits the data localises best; the linear target and $D_{\alpha/2,1/\alpha}$ change
# little) on a different data set, not its COCO numbers, which we cannot reproduce here. With a
# single seed per cell, differences of one or two AP points are within run-to-run variation;
# the verdicts above are stated per noise level so that a claim holding at one level and not at
# the other is visible. The rows of the scorecard say "reproduced" only where the claim holds
# on the full-profile runs at every noise level, "differs" where it fails at one, and "not run
# at this profile" where no full-profile runs exist.

# %%
setup_note = ("synthetic stand-in (shapes with known label noise, ResNet-18-FPN from scratch), "
              "not the paper's COCO runs")
for key, artefact in (("table3", "table3"), ("table4", "table4"), ("table5", "appD-table5"),
                      ("table6", "appE-table6")):
    table_paper = paper.TABLES[key]
    paper_text = "; ".join(f"{p}: " + "/".join("–" if v is None else f"{v:.1f}" for v in vals)
                           for p, vals in table_paper.items()) + " (AP50/AP75/AP, COCO)"
    values = [verdicts.get((key, n)) for n in noise_levels(verdict_source)] if verdicts else []
    if not values or any(v is None for v in values):
        recorder.record(artefact, paper=paper_text,
                        ours=f"{profile} profile pipeline run on the synthetic stand-in; "
                             "the full-profile (GPU) runs this claim needs are "
                             + ("incomplete" if verdict_source else "not committed yet"),
                        status="not run at this profile", check=None,
                        anchor=f"detectors-{key}", note=setup_note)
    else:
        holds = all(values)
        recorder.record(artefact, paper=paper_text,
                        ours=f"claim '{claim_text[key]}': "
                             + ", ".join(f"σ={n:g} {'holds' if v else 'fails'}"
                                         for n, v in zip(noise_levels(verdict_source), values)),
                        status="reproduced" if holds else "differs", check=holds,
                        anchor=f"detectors-{key}", note=setup_note)
assert len(recorder.rows) == 4
if profile == "quick":
    print(f"quick profile grid: {quick_seconds:.0f} s")
    shutil.rmtree(work, ignore_errors=True)  # data, checkpoints and results of this build

# %% [markdown]
# ## Library functions used
#
# {py:func}`klhuber.detection.models.build_model`, {py:func}`klhuber.detection.engine.train`,
# {py:func}`klhuber.detection.evaluate.evaluate`,
# {py:func}`klhuber.detection.synthetic.generate_shapes`,
# {py:func}`klhuber.detection.experiments.run_experiment`,
# {py:func}`klhuber.interpret.interpret`.
