"""Experiment profiles for Section 7 and Appendices D-E on the synthetic shapes set.

The paper trains Faster R-CNN (VGG-16, COCO 2014, Table 3) and RetinaNet (ResNet-101, COCO
2017, Table 4) with each preset of Table 1, plus the linear size target (Appendix D, Table 5)
and :math:`D_{\\alpha/2,1/\\alpha}` in place of :math:`H_\\alpha` (Appendix E, Table 6).  Those runs
take GPU-days; here the same grid runs on the synthetic shapes set of
:mod:`klhuber.detection.synthetic`, whose *training* labels carry box-edge noise of a known
scale, with a small backbone:

* ``quick``: CPU, inside the book build (a few minutes on 2 cores): 64-px images, ResNet-18-FPN,
  a short schedule: enough to run the whole pipeline and make the tables from real numbers,
  not enough to rank presets reliably;
* ``cpu``: the evidence of the detectors chapter, made on two CPU cores: 64-px images, 3000
  training images, the small ConvNet-4-FPN backbone (:mod:`klhuber.detection.backbones`),
  1500 iterations per run; the presets of Tables 3-6 at label noise ``TABLE_NOISE`` and an
  α sweep (``SWEEP_ALPHAS``, :func:`klhuber.interpret.alpha_sweep_preset`) at the noise
  levels ``SWEEP_NOISE``, each with 3 seeds.  Runs of one seed share their initial weights
  and data order across presets (a paired design; :mod:`klhuber.detection.report`).  Run it
  with ``klhuber detect experiment --profile cpu --jobs 2`` (one thread per job).  One run
  alone with two threads (``--jobs 1 --overrides '{"threads": 2}'``), data set already made
  (``results/detection/timing/``): Faster R-CNN 399 s on otherwise idle cores at ``ef32119``
  (610 s before it halved the box head's proposal sample to 32), RetinaNet 371 s beside a
  mutation-testing job; two at a time with one thread each, as the grid runs, a RetinaNet pair
  takes about 590 s and the whole grid about 5 hours;
* ``full``: one GPU (about 15 minutes for the whole grid): 128-px images, thousands of
  training images, every preset for both architectures at two label-noise levels.

Every run writes ``<results_dir>/<profile>/<run_id>.json`` (metrics, config, the preset's
interpreted label noise, the true noise, data set hash, provenance); a run whose JSON exists is
skipped, and an interrupted run resumes from its checkpoint, so the grid can be continued across
sessions (:func:`run_experiment`).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from klhuber.results import load_results, save_results

__all__ = [
    "PROFILES",
    "Profile",
    "RunSpec",
    "TABLE_PRESETS",
    "interpreted_label_noise",
    "load_profile_results",
    "profile_runs",
    "register_profile",
    "run_experiment",
    "run_one",
    "select_runs",
]

#: The presets of each paper table (Table 3 (Faster R-CNN), Table 4 (RetinaNet), Table 5 (Appendix D,
#: "Original" = Implementation vs. the linear target), Table 6 (Appendix E, H vs. D)).
TABLE_PRESETS: dict[str, tuple[str, ...]] = {
    "table3": ("publication", "implementation", "experiment_a", "experiment_b", "experiment_c"),
    "table4": ("implementation", "experiment_a", "experiment_b"),
    "table5": ("implementation", "appendix_d"),
    "table6": ("implementation", "appendix_e"),
}
ALL_PRESETS: tuple[str, ...] = (
    "publication", "implementation", "experiment_a", "experiment_b", "experiment_c",
    "torchvision", "appendix_d", "appendix_e",
)

#: Default folders, relative to the current directory at the time of the call (run the CLI
#: from the repository root to continue the committed grid): generated data sets, run folders
#: with checkpoints and logs, and the result JSONs.
DEFAULT_DATA_DIR = Path(".cache") / "detection" / "data"
DEFAULT_WORK_DIR = Path(".cache") / "detection" / "runs"
DEFAULT_RESULTS_DIR = Path("results") / "detection"


@dataclass(frozen=True)
class Profile:
    """A grid of runs: data set, noise levels, (arch, preset) pairs, seeds and schedules."""

    name: str
    description: str
    data: dict[str, Any]
    noise_levels: tuple[float, ...]
    runs: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...]
    train: dict[str, dict[str, Any]]
    eval_batch_size: int = 16
    noise: str = "laplace"
    schedule_note: str = ""
    #: Explicit ``(arch, preset, noise)`` cells in priority order (overrides the product of
    #: ``noise_levels`` and ``runs``), so that a time-limited session does the most useful
    #: runs first and later sessions continue the grid.  A fourth element, a tuple of seeds,
    #: restricts a cell to those seeds.
    grid: tuple[tuple[Any, ...], ...] | None = None
    #: The profile whose tables this one's runs add seeds to (the ``gpu`` profile runs the
    #: ``cpu`` grid with other seeds); :func:`klhuber.detection.report.load_runs` pools them
    #: after checking that both trained the same way on the same data.
    adds_seeds_to: str | None = None


_FRCNN_SMALL = {
    "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 60,
    "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 32,
    "box_detections_per_img": 30,
}
_RETINA_SMALL = {"detections_per_img": 30, "topk_candidates": 200}

# One thread: the quick profile is the book's pipeline check, and with two threads a second busy
# process on a 2-core machine makes the OpenMP threads spin-wait (a 200 s cell took over 900 s).
_QUICK_TRAIN_COMMON = {
    "backbone": "resnet18_fpn", "iters": 50, "batch_size": 2, "lr": 0.01, "warmup_iters": 10,
    "milestones": (40,), "clip_grad_norm": 10.0, "min_size": 64, "max_size": 64,
    "anchor_sizes": (8, 16, 32, 64, 128), "threads": 1, "checkpoint_every": 1000,
    "log_every": 10, "cache_images": True, "progress": False,
}
QUICK = Profile(
    name="quick",
    description="CPU smoke profile: 64-px shapes, ResNet-18-FPN from scratch, 50 iterations",
    data={"image_size": 64, "num_train": 64, "num_val": 24, "min_objects": 1, "max_objects": 3,
          "min_box": 0.2, "max_box": 0.6, "max_aspect": 2.0, "clutter": 2, "seed": 0},
    noise_levels=(0.05,),
    runs=tuple(("fasterrcnn", p) for p in (
        "publication", "implementation", "experiment_a", "experiment_b", "experiment_c",
        "appendix_d", "appendix_e")) + tuple(("retinanet", p) for p in (
            "implementation", "experiment_a", "experiment_b")),
    seeds=(0,),
    train={
        "fasterrcnn": {**_QUICK_TRAIN_COMMON, "box_head_dim": 128, "model_kwargs": _FRCNN_SMALL},
        "retinanet": {**_QUICK_TRAIN_COMMON, "model_kwargs": _RETINA_SMALL},
    },
    eval_batch_size=24,
    schedule_note="50 iterations x 2 images (about 1.6 epochs of 64 images), SGD lr 0.01 "
                  "momentum 0.9 wd 1e-4, warm-up 10, x0.1 at 40, grad-norm clip 10, CPU",
)

_FULL_ITERS = 200
_FULL_TRAIN_COMMON = {
    "backbone": "resnet18_fpn", "iters": _FULL_ITERS, "batch_size": 32, "lr": 0.04,
    "warmup_iters": 50, "milestones": (150, 185), "clip_grad_norm": 10.0, "amp": "bf16",
    "min_size": 128, "max_size": 128, "anchor_sizes": (8, 16, 32, 64, 128),
    "threads": 4, "checkpoint_every": 50, "log_every": 25, "cache_images": True,
    "workers": 0, "progress": False,
}
_T345 = ("publication", "implementation", "experiment_a", "experiment_b", "experiment_c",
         "appendix_d", "appendix_e")
_T4 = ("implementation", "experiment_a", "experiment_b")
_FULL_GRID = (
    # 1. Tables 3, 5, 6 (Faster R-CNN) and Table 4 (RetinaNet) at label noise 0.1.
    *(("fasterrcnn", p, 0.1) for p in _T345),
    *(("retinanet", p, 0.1) for p in _T4),
    # 2. Controlled noise: presets spanning the interpreted label noise, at both levels.
    ("fasterrcnn", "torchvision", 0.1),
    *(("fasterrcnn", p, 0.02) for p in ("torchvision", "experiment_c", "implementation",
                                        "publication")),
    # 3. The remaining Table 3-6 cells at noise 0.02.
    *(("fasterrcnn", p, 0.02) for p in ("experiment_a", "experiment_b", "appendix_d",
                                        "appendix_e")),
    *(("retinanet", p, 0.02) for p in _T4),
    # 4. Every other preset for RetinaNet.
    *(("retinanet", p, n) for n in (0.1, 0.02)
      for p in ("publication", "experiment_c", "torchvision", "appendix_d", "appendix_e")),
)
FULL = Profile(
    name="full",
    description="GPU profile: 128-px shapes (4000 train / 500 val), ResNet-18-FPN from scratch, "
                "every preset for both architectures at two label-noise levels",
    data={"image_size": 128, "num_train": 4000, "num_val": 500, "min_objects": 1,
          "max_objects": 6, "min_box": 0.1, "max_box": 0.5, "max_aspect": 2.5, "clutter": 4,
          "seed": 0},
    noise_levels=(0.1, 0.02),
    runs=tuple(("fasterrcnn", p) for p in ALL_PRESETS)
    + tuple(("retinanet", p) for p in ALL_PRESETS),
    seeds=(0,),
    train={
        "fasterrcnn": {**_FULL_TRAIN_COMMON, "box_head_dim": 512,
                       "model_kwargs": {"rpn_post_nms_top_n_train": 600,
                                        "rpn_post_nms_top_n_test": 300,
                                        "box_batch_size_per_image": 128,
                                        "box_detections_per_img": 50}},
        "retinanet": {**_FULL_TRAIN_COMMON, "lr": 0.02,
                      "model_kwargs": {"detections_per_img": 50}},
    },
    eval_batch_size=64,
    schedule_note=f"{_FULL_ITERS} iterations x 32 images (1.6 epochs of 4000), SGD lr 0.04 "
                  "(RetinaNet 0.02) momentum 0.9 wd 1e-4, warm-up 50, x0.1 at 150 and 185, "
                  "bf16 autocast, grad-norm clip 10; about 40 s per run on one H100",
    grid=_FULL_GRID,
)

# ---------------------------------------------------------------------------------------------
# ``cpu``: detectors that learn on two CPU cores (the evidence of the detectors chapter)

#: α values of the controlled-label-noise sweep: the L1 limit, then a geometric grid (factor 4)
#: centred on Table 2's reading of the true noise at edge scale 0.1 (α = 0.0707 / 0.1 = 0.7071
#: for the centre, 0.1414 / 0.2 = 0.7071 for the width, with σ = (0.1, 0.1, 0.2, 0.2)).
SWEEP_ALPHAS: tuple[float, ...] = (0.0, 0.17678, 0.70711, 2.8284, 11.314)
#: True edge-noise scales of the sweep: clean labels and the tables' noise level.
SWEEP_NOISE: tuple[float, ...] = (0.0, 0.1)
#: Label noise (Laplace edge scale, fraction of the box side) of the Table 3-6 analogues.
TABLE_NOISE = 0.1
_CPU_ITERS = 1500
_CPU_TRAIN_COMMON = {
    "backbone": "convnet4_fpn", "iters": _CPU_ITERS, "batch_size": 16, "lr": 0.02,
    "warmup_iters": 100, "lr_schedule": "cosine", "clip_grad_norm": 10.0,
    "min_size": 64, "max_size": 64, "threads": 1, "checkpoint_every": 250, "log_every": 50,
    "cache_images": True, "workers": 0, "progress": False,
}
_CPU_GRID = (
    # 0. The bar: clean labels, stock torchvision losses (seed 0 only).
    ("fasterrcnn", "torchvision", 0.0, (0,)),
    ("retinanet", "torchvision", 0.0, (0,)),
    # 1. Tables 3, 5, 6 (Faster R-CNN) and Table 4 (RetinaNet) at label noise TABLE_NOISE.
    *(("fasterrcnn", p, TABLE_NOISE) for p in _T345),
    *(("retinanet", p, TABLE_NOISE) for p in _T4),
    # 2. The hypothesis: α sweep on RetinaNet at two true noise levels.
    *(("retinanet", f"sweep_alpha{a:.5g}", n) for n in SWEEP_NOISE for a in SWEEP_ALPHAS),
)
CPU = Profile(
    name="cpu",
    description="CPU profile: 64-px shapes (3000 train / 300 val), 4-stage ConvNet-FPN from "
                "scratch; Tables 3-6 analogues and an α sweep, 3 seeds (paired)",
    data={"image_size": 64, "num_train": 3000, "num_val": 300, "min_objects": 1,
          "max_objects": 3, "min_box": 0.2, "max_box": 0.6, "max_aspect": 2.0, "clutter": 2,
          "seed": 0},
    noise_levels=(TABLE_NOISE, *SWEEP_NOISE),
    runs=(),
    seeds=(0, 1, 2),
    train={
        # The box head samples 32 proposals per image (torchvision: 512; these images hold
        # 1-3 objects).  With 64, a run alone on two idle cores took 610 s (over the 8-min
        # goal); RoI Align and the head's two layers scale with this number.
        "fasterrcnn": {**_CPU_TRAIN_COMMON, "model_kwargs": {
            "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 150,
            "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 60,
            "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 32,
            "box_detections_per_img": 30}},
        # RetinaNet learns faster with a larger rate: AP after 600 of 1500 iterations on clean
        # labels (torchvision preset, seed 0) was 13.7 / 16.1 / 19.5 at lr 0.01 / 0.02 / 0.04.
        "retinanet": {**_CPU_TRAIN_COMMON, "lr": 0.04,
                      "model_kwargs": {"detections_per_img": 30, "topk_candidates": 200}},
    },
    eval_batch_size=50,
    schedule_note=f"{_CPU_ITERS} iterations x 16 images (8 epochs of 3000), SGD lr 0.02 "
                  "(RetinaNet 0.04) momentum 0.9 wd 1e-4, warm-up 100, cosine decay, grad-norm "
                  "clip 10, one CPU thread per run",
    grid=_CPU_GRID,
)

#: Profiles by name.
PROFILES: dict[str, Profile] = {"quick": QUICK, "full": FULL, "cpu": CPU}


def register_profile(profile: Profile) -> Profile:
    """Add (or replace) a profile in :data:`PROFILES` (for custom grids and tests)."""
    if not isinstance(profile, Profile):
        raise ValueError(f"profile must be a Profile, got {type(profile).__name__}")
    PROFILES[profile.name] = profile
    return profile


def get_profile(name: str | Profile) -> Profile:
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {name!r}") from None


@dataclass(frozen=True)
class RunSpec:
    """One cell of a profile's grid."""

    profile: str
    arch: str
    preset: str
    noise: float
    seed: int = 0
    overrides: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def run_id(self) -> str:
        return f"{self.arch}-{self.preset}-noise{self.noise:g}-seed{self.seed}"


def profile_runs(profile: str | Profile) -> list[RunSpec]:
    """The grid of ``profile`` in priority order (seed, then ``grid`` order, or noise level
    then (arch, preset) when the profile has no explicit ``grid``)."""
    profile = get_profile(profile)
    grid = profile.grid
    if grid is None:
        grid = tuple((arch, preset, noise) for noise in profile.noise_levels
                     for arch, preset in profile.runs)
    cells = [(cell[0], cell[1], cell[2], cell[3] if len(cell) > 3 else None) for cell in grid]
    return [RunSpec(profile.name, arch, preset, float(noise), seed)
            for seed in profile.seeds for arch, preset, noise, only in cells
            if only is None or seed in only]


def data_root_for(profile: str | Profile, noise: float, data_dir: str | os.PathLike) -> Path:
    profile = get_profile(profile)
    return Path(data_dir) / profile.name / f"{profile.noise}-{noise:g}"


def prepare_data(profile: str | Profile, noise: float, data_dir: str | os.PathLike,
                 workers: int = 0) -> dict[str, Any]:
    """Generate (once) the shapes set of ``profile`` with training-label noise ``noise``."""
    from klhuber.detection.synthetic import ShapesSpec, generate_shapes

    profile = get_profile(profile)
    spec = ShapesSpec(**profile.data, noise_scale=noise, noise=profile.noise)
    return generate_shapes(data_root_for(profile, noise, data_dir), spec, workers=workers)


def interpreted_label_noise(arch: str, preset: str) -> dict[str, float]:
    """Label-noise scales (x*, w*, in units of the anchor width) that ``preset``'s box loss
    assumes in the stage that produces the final boxes: the RoI head of Faster R-CNN
    (Table 1 *Detection* column) or RetinaNet's head (*Proposal* column); Table 2's rows
    :math:`x^*, w^*` (:func:`klhuber.interpret.interpret`)."""
    from klhuber.interpret import detector_stages, get_preset, interpret

    stages = detector_stages(get_preset(preset), arch)
    stage = stages["roi"] if arch == "fasterrcnn" else stages["retinanet"]
    label = interpret(stage).label_noise
    return {"x": float(label[0]), "w": float(label[2]), "kind": stage.kind}


def train_config(spec: RunSpec, data_root: str | os.PathLike, work_dir: str | os.PathLike,
                 device: str):
    from klhuber.detection.engine import TrainConfig

    profile = get_profile(spec.profile)
    values = dict(profile.train[spec.arch])
    values.update({k: v for k, v in spec.overrides.items() if k not in _EVAL_KEYS})
    amp = values.pop("amp", "none")
    return TrainConfig(data_root=str(data_root), out_dir=str(Path(work_dir) / spec.profile
                                                              / spec.run_id),
                       arch=spec.arch, box_loss=spec.preset, seed=spec.seed, device=device,
                       amp=amp if device.startswith("cuda") else "none", resume=True,
                       **values)


#: Override keys that change the evaluation, not the training.
_EVAL_KEYS = ("eval_max_images",)


def result_path(spec: RunSpec, results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / spec.profile / f"{spec.run_id}.json"


def run_one(spec: RunSpec, *, results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
            data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
            work_dir: str | os.PathLike = DEFAULT_WORK_DIR, device: str = "cpu",
            keep_checkpoint: bool = False, command: str | None = None,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate one run (resuming a checkpoint), save its results JSON, return it.

    An existing results JSON is returned as is.  The run folder's lock
    (:func:`klhuber.detection.engine.run_lock`) is held from before training until the JSON is
    written and the folder removed, so a second runner is refused
    (:class:`klhuber.detection.engine.RunLockedError`) instead of evaluating the run again;
    one that gets the lock after the JSON was written returns that JSON.
    """
    import torch

    from klhuber.detection.data import CocoDetection, coco_split_paths, dataset_hash
    from klhuber.detection.engine import run_lock, train
    from klhuber.detection.evaluate import evaluate
    from klhuber.detection.synthetic import equivalent_laplace_scales

    log = log or (lambda message: None)
    out = result_path(spec, results_dir)
    if out.exists():
        return load_results(out)
    profile = get_profile(spec.profile)
    start = time.perf_counter()
    recipe = prepare_data(profile, spec.noise, data_dir)
    root = Path(recipe["root"])
    config = train_config(spec, root, work_dir, device)
    with run_lock(config):
        if out.exists():  # another runner finished the run while this one prepared it
            if not keep_checkpoint:  # the folder the lock made again
                shutil.rmtree(config.out_dir, ignore_errors=True)
            return load_results(out)
        log(f"[detect] {spec.run_id}: training ({config.iters} iterations on {device})")
        summary = train(config, log=log)
        model = summary.pop("model")
        val_img, val_ann = coco_split_paths(root, "val")
        train_img, train_ann = coco_split_paths(root, "train")
        val = CocoDetection(val_img, val_ann, train=False, cache=True,
                            max_images=spec.overrides.get("eval_max_images"))
        threads_before = torch.get_num_threads()
        if config.threads is not None:  # evaluate with the run's thread count, as it trained
            torch.set_num_threads(config.threads)
        try:
            metrics = evaluate(model, val,
                               device=config.device if device.startswith("cuda") else "cpu",
                               batch_size=profile.eval_batch_size, amp=config.amp)
        finally:
            torch.set_num_threads(threads_before)
        log(f"[detect] {spec.run_id}: AP {metrics['AP']:.3f} AP50 {metrics['AP50']:.3f} "
            f"AP75 {metrics['AP75']:.3f}")
        hashes = {"train": dataset_hash(train_img, train_ann),
                  "val": dataset_hash(val_img, val_ann)}
        payload = {
            "profile": spec.profile,
            "run_id": spec.run_id,
            "arch": spec.arch,
            "preset": spec.preset,
            "backbone": config.backbone,
            "seed": spec.seed,
            "metrics": metrics,
            "iterations": summary["iterations"],
            "train": {k: v for k, v in summary.items() if k != "checkpoint"},
            "config": config.as_dict(),
            "data": {"generator": "klhuber.detection.synthetic", "spec": recipe["spec"],
                     "hash": hashes, "true_label_noise": {
                         "edge_scale": spec.noise, "distribution": profile.noise,
                         **equivalent_laplace_scales(spec.noise, profile.noise)}},
            "interpreted_label_noise": interpreted_label_noise(spec.arch, spec.preset),
            "schedule": profile.schedule_note,
        }
        save_results(out, payload, command=command, device=device,
                     wall_time_s=time.perf_counter() - start,
                     extra={"iterations": summary["iterations"], "dataset_hash": hashes})
        if not keep_checkpoint:
            shutil.rmtree(config.out_dir, ignore_errors=True)
    return load_results(out)


def select_runs(runs: Sequence[RunSpec], archs: Iterable[str] | None = None,
                presets: Iterable[str] | None = None, noise: Iterable[float] | None = None,
                seeds: Iterable[int] | None = None) -> list[RunSpec]:
    """The runs of ``runs`` with one of ``archs``, ``presets``, ``noise`` levels and ``seeds``
    (``None`` or empty: any), in their order."""
    archs = set(archs) if archs else None
    presets = set(presets) if presets else None
    noise = {float(n) for n in noise} if noise else None
    seeds = set(seeds) if seeds else None
    return [r for r in runs
            if (archs is None or r.arch in archs) and (presets is None or r.preset in presets)
            and (noise is None or r.noise in noise) and (seeds is None or r.seed in seeds)]


def run_experiment(profile: str | Profile, *, results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
                   data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
                   work_dir: str | os.PathLike = DEFAULT_WORK_DIR, device: str = "cpu",
                   jobs: int = 1, shard: tuple[int, int] | None = None,
                   stop_after_s: float | None = None, archs: Iterable[str] | None = None,
                   presets: Iterable[str] | None = None, noise: Iterable[float] | None = None,
                   seeds: Iterable[int] | None = None, overrides: dict[str, Any] | None = None,
                   command: str | None = None, log: Callable[[str], None] | None = print
                   ) -> list[dict[str, Any]]:
    """Run (or continue) the grid of ``profile``; returns the results of all finished runs.

    Runs whose results JSON exists are skipped, so calling this again after an interruption
    (or in a later session, with the committed ``results/``) continues the grid.  ``jobs > 1``
    starts that many worker processes, useful to keep one GPU busy with small models; ``shard=(i, n)`` runs every n-th pending run from i.
    ``stop_after_s`` stops *starting* new runs after that many seconds (an interrupted run
    resumes from its last checkpoint next time).  With ``jobs > 1`` the pending runs are dealt
    round-robin to a pool of ``jobs`` processes, each calling :func:`run_one` in turn (as
    ``shard=(i, jobs)`` would).  ``overrides`` replace training settings
    (e.g. ``{"iters": 4}`` for a smoke test).
    """
    profile = get_profile(profile)
    log = log or (lambda message: None)
    runs = select_runs(profile_runs(profile), archs, presets, noise, seeds)
    if overrides:
        runs = [replace(r, overrides=dict(overrides)) for r in runs]
    for level in sorted({r.noise for r in runs}):
        prepare_data(profile, level, data_dir, workers=min(8, os.cpu_count() or 1))
    pending = [r for r in runs if not result_path(r, results_dir).exists()]
    if jobs > 1 and shard is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = [pool.submit(_run_shard, profile, pending[i::jobs], results_dir,
                                   data_dir, work_dir, device, stop_after_s, command)
                       for i in range(jobs)]
            failures = [f.exception() for f in futures]
        if any(failures):
            log(f"[detect] worker errors {[repr(f) for f in failures if f]}")
    else:
        mine = pending if shard is None else pending[shard[0]::shard[1]]
        _run_shard(profile, mine, results_dir, data_dir, work_dir, device, stop_after_s, command,
                   log)
    return [load_results(result_path(r, results_dir)) for r in runs
            if result_path(r, results_dir).exists()]


def _run_shard(profile: Profile, runs: Sequence[RunSpec], results_dir: str | os.PathLike,
               data_dir: str | os.PathLike, work_dir: str | os.PathLike, device: str,
               stop_after_s: float | None, command: str | None,
               log: Callable[[str], None] | None = None) -> None:
    """:func:`run_one` over ``runs`` in order, not starting one after ``stop_after_s`` seconds;
    a run that another process is training right now is skipped.  In a worker process it registers ``profile`` (custom profiles live in the parent's memory
    only)."""
    from klhuber.detection.engine import RunLockedError

    start = time.perf_counter()
    if log is None:
        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)
    PROFILES.setdefault(profile.name, profile)
    for spec in runs:
        if stop_after_s is not None and time.perf_counter() - start > stop_after_s:
            log(f"[detect] stop-after-s {stop_after_s} reached; {spec.run_id} and later "
                "runs left for the next call")
            break
        try:
            run_one(spec, results_dir=results_dir, data_dir=data_dir, work_dir=work_dir,
                    device=device, command=command, log=log)
        except RunLockedError as busy:  # another runner (e.g. a second call) trains it now
            log(f"[detect] {spec.run_id}: skipped, {busy}")


def load_profile_results(results_dir: str | os.PathLike, profile: str) -> list[dict[str, Any]]:
    """All run results of ``profile`` under ``results_dir`` (sorted by run id)."""
    folder = Path(results_dir) / profile
    return [load_results(p) for p in sorted(folder.glob("*.json"))]


# ---------------------------------------------------------------------------------------------
# ``gpu``: more seeds of the ``cpu`` grid, on a GPU (benchmarks/gpu_session.sh)

#: Seeds of the ``gpu`` profile: new seeds that add to the ``cpu`` profile's 0, 1, 2.
GPU_SEEDS: tuple[int, ...] = (3, 4, 5, 6, 7, 8)
GPU = register_profile(replace(
    CPU,
    name="gpu",
    description="GPU variant of the cpu profile: the same data, grid and training settings "
                f"with seeds {GPU_SEEDS[0]}-{GPU_SEEDS[-1]} (they add to the cpu profile's "
                "seeds 0-2), run with --device cuda --jobs 8 (several small models per GPU)",
    seeds=GPU_SEEDS,
    adds_seeds_to="cpu",
    schedule_note=CPU.schedule_note.replace("one CPU thread per run",
                                            "one CUDA device shared by several runs (float32)"),
))
