"""Tables 3-6 and the controlled-label-noise test from finished detector runs, with CIs.

The detectors chapter and the scorecard read everything they say about the detector
experiments from this module, so that every claim gets one verdict, computed once:

* :func:`load_runs` reads the run JSONs of a profile (written by
  :func:`klhuber.detection.experiments.run_one`) together with those of every profile that adds
  seeds to it (:attr:`klhuber.detection.experiments.Profile.adds_seeds_to`: the ``gpu``
  profile's seeds join the ``cpu`` tables), and refuses mixtures: a run filed under another
  profile, another data set or training recipe, a seed counted twice, or a file half-written by
  a crash each get a :class:`ResultsError` naming the run or file (relative to the results
  folder); :func:`load_evidence` falls back to the profile's own runs when only the pooling is
  refused, and says why;
* :func:`estimate` and :func:`paired_difference` give the mean over seeds with a 95 % Student-t
  interval; runs of one seed share their initialisation and data order across presets (a
  paired design), so a difference between two presets is estimated per seed;
* :data:`CLAIMS` states each table's claim as comparisons between presets and
  :func:`claim_verdicts` decides them: ``"reproduced"`` only when every comparison's interval
  excludes the opposite, ``"differs"`` when one excludes the claim, else ``"inconclusive"``;
* :func:`alpha_sweep` summarises the α sweep against the two predictions of the best α: Table
  2's reading (interpreted label noise = true label noise) and the asymptotic theory of the toy
  chapter, applied to the noise the edge offsets put on the box centre
  (:func:`klhuber.detection.synthetic.centre_noise_huber_threshold`), and
  :func:`label_noise_verdict` decides the label-noise test from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CLAIMS",
    "METRICS",
    "Claim",
    "Comparison",
    "Estimate",
    "ResultsError",
    "SweepSummary",
    "alpha_sweep",
    "claim_verdicts",
    "estimate",
    "label_noise_verdict",
    "load_evidence",
    "load_runs",
    "made_on",
    "paired_difference",
    "presets_missing",
    "run_noise",
    "sweep_alpha_of",
]

#: COCO metrics reported by the paper's tables, in their column order.
METRICS: tuple[str, ...] = ("AP50", "AP75", "AP")
_REQUIRED = ("profile", "run_id", "arch", "preset", "seed", "metrics", "data",
             "interpreted_label_noise", "config")


class ResultsError(ValueError):
    """Committed detector results that cannot be used as they are (the message says why)."""


def _load_one(path: Path, name: str) -> dict[str, Any]:
    # ``name``: the file relative to the results folder, for messages (no machine paths)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(
            f"{name} is not valid JSON ({exc.__class__.__name__}: {exc}); it was probably "
            "half-written by a crash: delete it and run the experiment again to redo that run"
        ) from None
    if not isinstance(payload, dict):
        raise ResultsError(f"{name} holds a {type(payload).__name__}, not a run result")
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ResultsError(f"{name} is not a detector run result: it lacks {missing}")
    return payload


def run_noise(run: dict[str, Any]) -> float:
    """The true training-label edge-noise scale of ``run``."""
    return float(run["data"]["true_label_noise"]["edge_scale"])


#: Settings of a run's ``config`` that may differ between runs of one table: where it ran and
#: what it wrote, not how it trained (the preset, ``box_loss``, and the ``seed`` are the table's
#: own coordinates).
_PER_RUN_SETTINGS = frozenset({
    "data_root", "out_dir", "box_loss", "seed", "device", "threads", "flush_denormal",
    "workers", "progress", "resume", "stop_at", "overwrite", "log_every", "checkpoint_every",
    "max_nonfinite"})


def _recipe(run: dict[str, Any]) -> dict[str, Any]:
    # an unset switch (None, or absent from runs of older versions) is the same as off
    return {k: v for k, v in run["config"].items()
            if k not in _PER_RUN_SETTINGS and v is not None and v is not False}


def _load_folder(folder: Path, profile: str) -> list[dict[str, Any]]:
    runs = [_load_one(p, f"{profile}/{p.name}") for p in sorted(folder.glob("*.json"))]
    for run in runs:
        if run["profile"] != profile:
            raise ResultsError(f"run {run['run_id']} in {profile}/ belongs to profile "
                               f"{run['profile']!r}, not {profile!r}; tables never mix profiles")
    return runs


def _pooled_profiles(profile: str) -> list[str]:
    """The profiles whose runs add seeds to ``profile`` (``Profile.adds_seeds_to``)."""
    from klhuber.detection.experiments import PROFILES

    return sorted(p.name for p in PROFILES.values() if p.adds_seeds_to == profile)


def load_runs(results_dir: str | Path, profile: str, *, pool: bool = True
              ) -> list[dict[str, Any]]:
    """All runs of ``profile`` under ``results_dir/<profile>/``, sorted by run id.

    With ``pool`` (the default), the runs of every profile that adds seeds to ``profile``
    (:attr:`klhuber.detection.experiments.Profile.adds_seeds_to`: the ``gpu`` profile's seeds
    3-8 add to the ``cpu`` profile's 0-2) are read from their own folders too, after checking
    that they trained the same way; each run keeps its own ``"profile"``.

    Raises :class:`ResultsError` when the folder is missing or empty, when a file is not a
    complete run result, when a run belongs to another profile, when the runs come from
    different data sets (another generator recipe, or other validation images), when runs of
    one architecture trained with different settings (another schedule, image size, ...; within
    one profile too, e.g. a smoke run filed with the evidence), or when two runs share a table
    cell and seed.  Messages name folders relative to ``results_dir`` (``cpu/``), never as
    paths of this machine, so that a page may show them.
    """
    folder = Path(results_dir) / profile
    if not folder.is_dir():
        raise ResultsError(
            f"no results folder {profile}/ for profile {profile!r}; run `klhuber detect "
            f"experiment --profile {profile} --results-dir <results folder>` first")
    runs = _load_folder(folder, profile)
    if not runs:
        raise ResultsError(f"the results folder {profile}/ holds no run results for profile "
                           f"{profile!r}")
    if pool:
        for extra in _pooled_profiles(profile):
            if (Path(results_dir) / extra).is_dir():
                runs += _load_folder(Path(results_dir) / extra, extra)
    # One generator recipe (the training-label noise aside), and per noise level one data set
    # (the validation files record the recipe, so their hash differs between noise levels).
    recipes = {json.dumps({k: v for k, v in run["data"]["spec"].items() if k != "noise_scale"},
                          sort_keys=True) for run in runs}
    hashes: dict[float, set[str]] = {}
    for run in runs:
        hashes.setdefault(run_noise(run), set()).add(json.dumps(run["data"]["hash"],
                                                                sort_keys=True))
    count = max([len(recipes)] + [len(h) for h in hashes.values()])
    if count > 1:
        names = " and ".join(f"{p}/" for p in sorted({run["profile"] for run in runs}))
        raise ResultsError(f"the runs in {names} come from {count} different data sets; "
                           "results of different data sets are never compared in one table")
    # One training recipe per architecture, across all runs read (not only across profiles: a
    # smoke run with other settings filed into the evidence folder is refused as well).
    first: dict[str, dict[str, Any]] = {}
    cells: dict[tuple[Any, ...], str] = {}
    for run in sorted(runs, key=lambda r: (r["profile"] != profile, r["run_id"])):
        ref = first.setdefault(run["arch"], run)
        mine, theirs = _recipe(run), _recipe(ref)
        differing = sorted(k for k in mine.keys() | theirs.keys()
                           if mine.get(k) != theirs.get(k))
        if differing:
            raise ResultsError(
                f"runs {ref['run_id']} ({ref['profile']}) and {run['run_id']} "
                f"({run['profile']}) trained with different settings ({', '.join(differing)}); "
                "one table compares runs of one training recipe only")
        key = (run["arch"], run["preset"], run_noise(run), int(run["seed"]))
        if key in cells:
            raise ResultsError(f"run {run['run_id']} of profile {run['profile']!r} repeats a "
                               f"seed of profile {cells[key]!r}; each seed counts once")
        cells[key] = run["profile"]
    return sorted(runs, key=lambda r: r["run_id"])


def load_evidence(results_dir: str | Path, profile: str
                  ) -> tuple[list[dict[str, Any]], str | None]:
    """The runs that tables of ``profile`` report, and a note when pooling was refused.

    :func:`load_runs` with pooling; when that raises but the profile's own runs load
    (``pool=False``), the fault lies with the pooled runs (trained differently, a repeated
    seed, a misfiled or broken file, another data set), so the profile's own runs are returned
    with a sentence that names the profiles left out and the reason.  The note is ``None``
    when pooling succeeded.  Raises :class:`ResultsError` when the profile's own runs cannot be
    used.
    """
    try:
        return load_runs(results_dir, profile), None
    except ResultsError as refused:
        runs = load_runs(results_dir, profile, pool=False)
        left_out = [p for p in _pooled_profiles(profile) if (Path(results_dir) / p).is_dir()]
        names = " and ".join(f"`{p}`" for p in left_out)
        word = "profile" if len(left_out) == 1 else "profiles"
        reason = str(refused).rstrip(".")
        return runs, (f"The runs of the {names} {word} are not pooled with the `{profile}` "
                      f"runs, so these tables show the `{profile}` runs only: {reason}.")


def _seeds_text(seeds: Iterable[int]) -> str:
    seeds = sorted(set(seeds))
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def made_on(runs: Sequence[dict[str, Any]]) -> str:
    """Where ``runs`` were made, from their own records: per profile its number of runs, its
    seeds, the devices and the dates and commits of the runs' provenance, e.g. ``"`cpu`
    profile: 20 runs, seed 0, on cpu (x86_64, 2 logical CPUs), 2026-12-01 to 2026-12-02,
    commit 9d18606"`` (profiles joined by ``"; "``; ``""`` for no runs)."""
    by_profile: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_profile.setdefault(run["profile"], []).append(run)
    parts = []
    for name, rs in by_profile.items():
        prov = [r.get("provenance") or {} for r in rs]
        devices = sorted({p.get("device") or str(r["config"].get("device") or "unknown device")
                          for p, r in zip(prov, rs)})
        dates = sorted(p["date_utc"][:10] for p in prov if p.get("date_utc"))
        latest: dict[str, str] = {}  # commit -> its latest date, to order the commits
        for p in prov:
            if p.get("git_commit"):
                commit = p["git_commit"][:7]
                latest[commit] = max(latest.get(commit, ""), p.get("date_utc") or "")
        commits = sorted(latest, key=lambda c: (latest[c], c))
        text = (f"`{name}` profile: {len(rs)} run{'s' if len(rs) != 1 else ''}, "
                f"{_seeds_text(int(r['seed']) for r in rs)}, on {' and '.join(devices)}")
        if dates:
            text += f", {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
        if len(commits) == 1:
            text += f", commit {commits[0]}"
        elif 1 < len(commits) <= 3:
            text += f", commits {', '.join(commits)}"
        elif commits:
            text += f", {len(commits)} commits from {commits[0]} to {commits[-1]}"
        parts.append(text)
    return "; ".join(parts)


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds with a two-sided Student-t interval (``low``/``high`` are NaN for n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...] = ()

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
        """``"61.2 ± 1.3"`` (``scale`` 100 gives AP points); ``"61.2"`` for a single seed.

        ``signed`` (for differences): always a sign, ``"+4.5 ± 13.0"`` or ``"−3.8"``, with a
        true minus sign."""
        if self.n == 0:
            return "–"
        mean = f"{scale * self.mean:{'+' if signed else ''}.{digits}f}"
        if signed:
            mean = mean.replace("-", "\N{MINUS SIGN}")
        if self.n < 2:
            return mean
        return f"{mean} ± {scale * self.half_width:.{digits}f}"


def _t_quantile(p: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, df))


def estimate(values: Iterable[float], level: float = 0.95) -> Estimate:
    """Mean of ``values`` with its ``level`` Student-t confidence interval."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    vals = tuple(float(v) for v in values)
    n = len(vals)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(vals) / n
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1, vals)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = _t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, vals)


def _select(runs: Sequence[dict[str, Any]], arch: str, preset: str, noise: float
            ) -> dict[int, dict[str, Any]]:
    return {int(r["seed"]): r for r in runs if r["arch"] == arch and r["preset"] == preset
            and math.isclose(run_noise(r), noise, abs_tol=1e-12)}


def cell(runs: Sequence[dict[str, Any]], arch: str, preset: str, noise: float, metric: str,
         level: float = 0.95) -> Estimate:
    """``metric`` of (``arch``, ``preset``) at label noise ``noise``, over the seeds run."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return estimate([r["metrics"][metric] for r in _select(runs, arch, preset, noise).values()],
                    level)


def paired_difference(runs: Sequence[dict[str, Any]], arch: str, preset: str, reference: str,
                      noise: float, metric: str, level: float = 0.95) -> Estimate:
    """``metric(preset) - metric(reference)`` per seed (seeds run for both), with its CI."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    a = _select(runs, arch, preset, noise)
    b = _select(runs, arch, reference, noise)
    seeds = sorted(set(a) & set(b))
    return estimate([a[s]["metrics"][metric] - b[s]["metrics"][metric] for s in seeds], level)


@dataclass(frozen=True)
class Comparison:
    """``preset`` against ``reference`` in ``metric``: ``">"`` (better), ``"<"`` (worse) or
    ``"~"`` (within ``margin`` AP, as a fraction: 0.01 = one point)."""

    preset: str
    reference: str
    metric: str
    relation: str
    margin: float = 0.0

    def text(self) -> str:
        if self.relation == "~":
            points = f"{100 * self.margin:g} point{'' if 100 * self.margin == 1 else 's'}"
            return f"{self.preset} within {points} of {self.reference} in {self.metric}"
        word = "above" if self.relation == ">" else "below"
        return f"{self.preset} {word} {self.reference} in {self.metric}"

    def verdict(self, diff: Estimate) -> str:
        """``reproduced`` / ``differs`` / ``inconclusive`` from the paired difference's CI."""
        if diff.n < 2 or math.isnan(diff.low):
            return "inconclusive"
        if self.relation == ">":
            return "reproduced" if diff.low > 0 else "differs" if diff.high < 0 else "inconclusive"
        if self.relation == "<":
            return "reproduced" if diff.high < 0 else "differs" if diff.low > 0 else "inconclusive"
        inside = -self.margin <= diff.low and diff.high <= self.margin
        outside = diff.low > self.margin or diff.high < -self.margin
        return "reproduced" if inside else "differs" if outside else "inconclusive"


@dataclass(frozen=True)
class Claim:
    """A table's claim as comparisons (all must hold) on one architecture."""

    key: str
    arch: str
    text: str
    comparisons: tuple[Comparison, ...]


#: The claims of Tables 3-6 as the paper states them (Section 7, Appendices D-E).
CLAIMS: tuple[Claim, ...] = (
    Claim("table3", "fasterrcnn",
          "Implementation beats Publication in AP, and Experiments A-C (smaller interpreted "
          "label noise) beat Implementation in AP75",
          (Comparison("implementation", "publication", "AP", ">"),
           Comparison("experiment_a", "implementation", "AP75", ">"),
           Comparison("experiment_b", "implementation", "AP75", ">"),
           Comparison("experiment_c", "implementation", "AP75", ">"))),
    Claim("table4", "retinanet",
          "Experiment A beats Implementation in AP75; Experiment B loses AP50",
          (Comparison("experiment_a", "implementation", "AP75", ">"),
           Comparison("experiment_b", "implementation", "AP50", "<"))),
    Claim("table5", "fasterrcnn",
          "the linear size target (Appendix D) is within one AP point of the log target",
          (Comparison("appendix_d", "implementation", "AP", "~", 0.01),)),
    Claim("table6", "fasterrcnn",
          "D_{α/2,1/α} (Appendix E) is within one AP point of H_α",
          (Comparison("appendix_e", "implementation", "AP", "~", 0.01),)),
)


def claim_verdicts(runs: Sequence[dict[str, Any]], noise: float, level: float = 0.95
                   ) -> dict[str, dict[str, Any]]:
    """Each claim of :data:`CLAIMS` at label noise ``noise``: its comparisons (paired
    difference, verdict) and the overall verdict (``reproduced`` only if all comparisons are,
    ``differs`` if one is, ``not run`` when a needed cell has no run, else ``inconclusive``)."""
    out: dict[str, dict[str, Any]] = {}
    for claim in CLAIMS:
        parts = []
        for comp in claim.comparisons:
            diff = paired_difference(runs, claim.arch, comp.preset, comp.reference, noise,
                                     comp.metric, level)
            parts.append({"comparison": comp, "difference": diff,
                          "verdict": "not run" if diff.n == 0 else comp.verdict(diff)})
        verdicts = [p["verdict"] for p in parts]
        if "not run" in verdicts:
            overall = "not run"
        elif all(v == "reproduced" for v in verdicts):
            overall = "reproduced"
        elif "differs" in verdicts:
            overall = "differs"
        else:
            overall = "inconclusive"
        seeds = min((p["difference"].n for p in parts), default=0)
        out[claim.key] = {"claim": claim, "comparisons": parts, "verdict": overall,
                          "seeds": seeds}
    return out


def presets_missing(runs: Sequence[dict[str, Any]], claim: Claim, noise: float) -> list[str]:
    """The presets that keep ``claim`` from a verdict at label noise ``noise``: for each of its
    comparisons with no seed run for both sides, the side (``preset`` or ``reference``) with
    no run of ``claim.arch`` at ``noise``, or both sides when each has runs but of other seeds;
    in the order of the claim's comparisons, each once."""
    out: list[str] = []
    for comp in claim.comparisons:
        a = _select(runs, claim.arch, comp.preset, noise)
        b = _select(runs, claim.arch, comp.reference, noise)
        if set(a) & set(b):
            continue
        sides = [p for p, seeds in ((comp.preset, a), (comp.reference, b)) if not seeds]
        for preset in sides or [comp.preset, comp.reference]:
            if preset not in out:
                out.append(preset)
    return out


# ---------------------------------------------------------------------------------------------
# The α sweep


def sweep_alpha_of(preset: str) -> float | None:
    """The α of a sweep preset name (``"sweep_alpha0.5"`` -> 0.5; L1 is 0), else ``None``."""
    from klhuber.interpret import SWEEP_PREFIX, get_preset

    if not preset.startswith(SWEEP_PREFIX):
        return None
    stage = get_preset(preset).detection
    return float(stage.alpha)


@dataclass(frozen=True)
class SweepSummary:
    """The α sweep at one true noise level.

    ``alphas`` sorted (0 = L1); ``metric`` estimates per α; ``vs_l1`` paired differences to
    the L1 limit; ``best_alpha`` the α of the highest mean; ``table2_alpha`` Table 2's reading
    (interpreted x* scale = true x* scale: :math:`\\alpha = b_x/\\sigma_x`); ``theory_alpha``
    the asymptotic theory's best Huber threshold for the centre's noise (the mean of two edge
    offsets) over :math:`\\sigma_x`; ``seeds`` the fewest seeds of any α.
    """

    arch: str
    noise: float
    metric: str
    alphas: tuple[float, ...]
    estimates: tuple[Estimate, ...]
    vs_l1: tuple[Estimate, ...]
    best_alpha: float
    table2_alpha: float
    theory_alpha: float
    seeds: int


def alpha_sweep(runs: Sequence[dict[str, Any]], *, arch: str = "retinanet",
                metric: str = "AP75", level: float = 0.95) -> list[SweepSummary]:
    """One :class:`SweepSummary` per true noise level among the sweep runs of ``arch``."""
    from klhuber.detection.synthetic import centre_noise_huber_threshold
    from klhuber.interpret import get_preset

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    sweep = [r for r in runs if r["arch"] == arch and sweep_alpha_of(r["preset"]) is not None]
    out = []
    for noise in sorted({run_noise(r) for r in sweep}):
        at = [r for r in sweep if math.isclose(run_noise(r), noise, abs_tol=1e-12)]
        by_alpha: dict[float, str] = {}
        for r in at:
            by_alpha[sweep_alpha_of(r["preset"])] = r["preset"]
        alphas = tuple(sorted(by_alpha))
        ests = tuple(cell(at, arch, by_alpha[a], noise, metric, level) for a in alphas)
        l1 = by_alpha.get(0.0)
        vs = tuple(paired_difference(at, arch, by_alpha[a], l1, noise, metric, level)
                   if l1 is not None else Estimate(math.nan, math.nan, math.nan, 0)
                   for a in alphas)
        best = alphas[max(range(len(alphas)), key=lambda i: ests[i].mean)]
        first = at[0]
        sigma_x = float(get_preset(first["preset"]).detection.sigma[0])
        true_x = float(first["data"]["true_label_noise"]["x"])
        distribution = first["data"]["true_label_noise"]["distribution"]
        edge = float(first["data"]["true_label_noise"]["edge_scale"])
        threshold = centre_noise_huber_threshold(edge, distribution)["threshold"] if edge else 0.0
        out.append(SweepSummary(arch, noise, metric, alphas, ests, vs, best,
                                table2_alpha=true_x / sigma_x,
                                theory_alpha=threshold / sigma_x,
                                seeds=min(e.n for e in ests)))
    return out


def label_noise_verdict(sweeps: Sequence[SweepSummary]) -> tuple[str, str]:
    """The controlled-label-noise test, the one verdict the chapter and the scorecard show.

    At the noisiest level of the sweep (``sweeps`` from :func:`alpha_sweep`), the grid's α
    nearest Table 2's reading (the theory's is within a few per cent of it) is compared with the
    L1 limit, paired by seed: ``"reproduced"`` when the interval of the difference in the
    sweep's metric lies above 0 (the predicted α wins), ``"differs"`` when it lies below,
    ``"inconclusive"`` when it includes 0 or rests on fewer than two seeds, and ``"not run"``
    without noisy-label or L1 runs.  Returns the verdict and a sentence that says why.
    """
    noisy = [s for s in sweeps if s.noise > 0]
    if not noisy:
        return "not run", "the α sweep has no committed runs with noisy labels yet"
    s = max(noisy, key=lambda summary: summary.noise)
    if 0.0 not in s.alphas:
        return "not run", f"the sweep at s = {s.noise:g} has no committed L1 run yet"
    nearest = min(range(len(s.alphas)), key=lambda i: abs(
        math.log(max(s.alphas[i], 1e-9)) - math.log(s.table2_alpha)))
    diff = s.vs_l1[nearest]  # the predicted α minus L1, paired by seed
    best = "L1" if s.best_alpha == 0 else f"{s.best_alpha:.2g}"
    prediction = (f"at edge noise s = {s.noise:g}, the predicted α ≈ {s.alphas[nearest]:.2g} "
                  f"(Table 2: {s.table2_alpha:.2f}; the theory: {s.theory_alpha:.2f}) against L1")
    if diff.n < 2:
        shown = "no" if diff.n == 0 else f"{diff.text(signed=True)} points from one"
        return "inconclusive", (f"{prediction}: Δ{s.metric} = {shown} paired seed so far (an "
                                f"interval needs two); best α of the grid: {best}")
    text = (f"{prediction}: Δ{s.metric} = {diff.text(signed=True)} points "
            f"({diff.n} paired seeds); best α of the grid: {best}")
    if diff.low > 0:
        return "reproduced", text + "; the predicted α wins"
    if diff.high < 0:
        return "differs", text + "; L1 wins"
    return "inconclusive", text + "; the interval includes 0"
