"""The options of a training run: :class:`TrainConfig`, the one place they are declared.

Each field carries its help text, and where it has them its range and choices, as
metadata (:func:`option_metadata`); the command line (``klhuber.detection.cli``) generates
the flags of ``klhuber detect train`` from them, and the class checks the values when a
configuration is made, before any data load.  The architecture, backbone and
box-loss names are checked here too (:data:`ARCHS`, :data:`BACKBONES`,
:func:`klhuber.interpret.get_preset`).  Importing this module imports neither torch nor
torchvision.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AMP_MODES",
    "ARCHS",
    "BACKBONES",
    "DATA_LAYOUTS",
    "LR_SCHEDULES",
    "RUNTIME_FIELDS",
    "TrainConfig",
    "config_differences",
    "option_metadata",
]

#: Detector architectures of :func:`klhuber.detection.models.build_model`.
ARCHS: tuple[str, ...] = ("fasterrcnn", "retinanet")
#: Backbone names.  ``vgg16`` is the paper's Faster R-CNN backbone (conv5_3, stride 16, one
#: feature map, no FPN); ``resnet101_fpn`` the paper's RetinaNet backbone; ``mobilenet_v3_fpn``
#: and ``resnet18_fpn`` are small ones for CPU runs and tests.  ``vgg16_bn`` is VGG-16 with
#: batch norm, easier to train from scratch.  ``convnet4_fpn`` is a 4-stage 32-128-channel
#: ConvNet with a 64-channel FPN (:mod:`klhuber.detection.backbones`), sized for 64-px images
#: on a CPU: the backbone of the ``cpu`` experiment profile.
BACKBONES: tuple[str, ...] = (
    "vgg16",
    "vgg16_bn",
    "resnet101_fpn",
    "resnet50_fpn",
    "resnet18_fpn",
    "mobilenet_v3_fpn",
    "convnet4_fpn",
)
#: Mixed-precision modes (``auto``: bf16 where the GPU supports it, else fp16; none off CUDA).
AMP_MODES: tuple[str, ...] = ("none", "bf16", "fp16", "auto")
#: Learning-rate schedules after the warm-up (:func:`klhuber.detection.engine.lr_factor`).
LR_SCHEDULES: tuple[str, ...] = ("step", "cosine")
#: Data-set layouts of :func:`klhuber.detection.data.coco_split_paths` ("auto" picks the one
#: present).
DATA_LAYOUTS: tuple[str, ...] = ("auto", "2017", "2014", "synthetic")


def option_metadata(help: str, *, flag: str | None = None, kind: str | None = None,
                    low: float | None = None, high: float | None = None,
                    low_open: bool = False, high_open: bool = False,
                    choices: tuple[str, ...] | None = None, group: str | None = None,
                    required: bool = False) -> dict[str, Any]:
    """The metadata of a :class:`TrainConfig` field from which its command-line flag is made.

    ``flag`` (default ``--name-with-dashes``), ``kind`` (``int``, ``float``, ``str``,
    ``bool``, ``ints``/``floats`` for comma-separated lists, ``json`` for an object), the
    interval ``[low, high]`` (``low_open``/``high_open`` exclude an end), ``choices``,
    ``group`` (flags of one group exclude each other) and ``required``.
    """
    return {"help": help, "flag": flag, "kind": kind, "low": low, "high": high,
            "low_open": low_open, "high_open": high_open, "choices": choices, "group": group,
            "required": required}


def _option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    factory = dataclasses.MISSING
    if isinstance(default, dict):
        default, factory = dataclasses.MISSING, (lambda value=default: dict(value))
    return field(default=default, default_factory=factory,
                 metadata=option_metadata(help, **kwargs))


_PRESET_HELP = ("box-loss preset of klhuber.interpret (publication, implementation, "
                "experiment_a/b/c, appendix_d, appendix_e, torchvision, ..., sweep_alpha<a>)")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in its checkpoint and results).

    Model options are plain values (so that a checkpoint can rebuild its model):
    ``min_size``/``max_size`` (torchvision's resize), ``anchor_sizes`` (one base size per
    feature level; ``None`` keeps the builder's anchors), ``box_head_dim`` (width of Faster
    R-CNN's two-layer box head; ``None`` = torchvision's 1024), and ``model_kwargs`` (further
    plain keyword arguments of ``FasterRCNN`` / ``RetinaNet``).

    ``data_root`` and ``weights_path`` are stored absolute.  ``resume`` continues the run in
    ``out_dir`` (its checkpoint's configuration must match, :func:`config_differences`);
    ``overwrite`` replaces it; with neither, a non-empty ``out_dir`` is refused
    (:class:`klhuber.detection.engine.RunExistsError`).  ``fix_sizes`` takes image sizes from
    the files where the JSON differs (:class:`~klhuber.detection.data.CocoDetection`).  Ranges
    are checked here: ``lr`` > 0, ``momentum`` in [0, 1), ``gamma`` in (0, 1],
    ``weight_decay`` >= 0, and ``amp`` "bf16"/"fp16" only with a CUDA ``device``; so are
    ``arch``, ``backbone``, ``data_layout`` and the ``box_loss`` preset name.  Every field's
    help text and range is its metadata (:func:`option_metadata`), from which the flags of
    ``klhuber detect train`` are made.
    """

    data_root: str = _option("", "COCO 2017/2014 folder or a synthetic set (klhuber detect "
                             "synth)", required=True)
    out_dir: str = _option("runs/detection", "checkpoint / metrics folder", flag="--out")
    arch: str = _option("fasterrcnn", "detector architecture", choices=ARCHS)
    box_loss: str = _option("torchvision", _PRESET_HELP)
    backbone: str = _option("resnet18_fpn", "backbone (convnet4_fpn: small, for CPUs)",
                            choices=BACKBONES)
    data_layout: str = _option("auto", "data-set layout", flag="--layout", choices=DATA_LAYOUTS)
    fix_sizes: bool = _option(False, "use the image files' sizes where the JSON's width/height "
                              "differ (default: such a difference is an error)")
    weights_path: str | None = _option(None, "local state dict to start from", flag="--weights")
    iters: int = _option(1000, "training iterations", low=1)
    batch_size: int = _option(2, "images per process", low=1)
    lr: float = _option(0.02, "learning rate (SGD)", low=0, low_open=True)
    momentum: float = _option(0.9, "SGD momentum", low=0, high=1, high_open=True)
    weight_decay: float = _option(1e-4, "SGD weight decay", low=0)
    warmup_iters: int = _option(100, "linear warm-up iterations", low=0)
    warmup_factor: float = _option(0.001, "learning-rate factor at the start of the warm-up",
                                   low=0, high=1, low_open=True)
    milestones: tuple[int, ...] = _option((), "comma-separated iterations", kind="ints")
    gamma: float = _option(0.1, "learning-rate factor at each milestone", low=0, high=1,
                           low_open=True)
    lr_schedule: str = _option("step", "after warm-up: x gamma at each milestone, or cosine "
                               "decay to 0", choices=LR_SCHEDULES)
    amp: str = _option("none", "mixed precision on CUDA", choices=AMP_MODES)
    clip_grad_norm: float | None = _option(None, "clip the gradient norm to this value",
                                           kind="float", low=0, low_open=True)
    max_nonfinite: int = _option(20, "stop after more steps with a non-finite loss or gradient",
                                 low=0)
    checkpoint_every: int = _option(500, "iterations between checkpoints", low=1)
    log_every: int = _option(20, "iterations between metrics lines", low=1)
    seed: int = _option(0, "seed of the weights, the data order and the flips")
    workers: int = _option(0, "data-loader worker processes", low=0)
    cache_images: bool = _option(False, "keep decoded images in RAM")
    max_train_images: int | None = _option(None, "use only the first N training images",
                                           kind="int", low=1)
    device: str = _option("cpu", "torch device, e.g. cuda")
    hflip: float = _option(0.5, "probability of a horizontal flip", low=0, high=1)
    min_size: int = _option(800, "torchvision's resize: shorter side", low=1)
    max_size: int = _option(1333, "torchvision's resize: longer side at most", low=1)
    anchor_sizes: tuple[float, ...] | None = _option(
        None, "comma-separated base anchor size per feature level", kind="floats")
    box_head_dim: int | None = _option(None, "width of Faster R-CNN's two-layer box head "
                                       "(default: the builder's)", kind="int", low=1)
    model_kwargs: dict[str, Any] = _option({}, "JSON of FasterRCNN/RetinaNet kwargs",
                                           kind="json")
    threads: int | None = _option(None, "torch CPU threads", kind="int", low=1)
    flush_denormal: bool = _option(True, "flush float denormals to zero on the CPU (10-30x "
                                   "faster for from-scratch detectors)")
    progress: bool = _option(True, "show a progress bar")
    resume: bool = _option(False, "continue the run in OUT (its checkpoint's options must "
                           "match)", group="keep")
    stop_at: int | None = _option(None, "stop (with a checkpoint) after this many iterations",
                                  kind="int", low=1)
    overwrite: bool = _option(False, "replace the run in OUT (without it, a non-empty OUT is "
                              "refused)", group="keep")

    def __post_init__(self) -> None:
        # Data paths are stored absolute, so that a checkpoint evaluates from any directory.
        if self.data_root:
            self.data_root = str(Path(self.data_root).expanduser().absolute())
        if self.weights_path:
            self.weights_path = str(Path(self.weights_path).expanduser().absolute())
        self.milestones = tuple(int(m) for m in self.milestones)
        if self.anchor_sizes is not None:
            self.anchor_sizes = tuple(float(a) for a in self.anchor_sizes)
        positive = ("iters", "batch_size", "checkpoint_every", "log_every", "min_size",
                    "max_size")
        for name in positive:
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("lr", "momentum", "weight_decay", "warmup_factor", "gamma", "hflip"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {value!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be a finite number >= 0, got "
                             f"{self.weight_decay!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1] (the learning-rate factor at each "
                             f"milestone), got {self.gamma!r}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters!r}")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"warmup_factor must be in (0, 1], got {self.warmup_factor!r}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.amp in ("bf16", "fp16") and not str(self.device).startswith("cuda"):
            raise ValueError(f"amp={self.amp!r} needs a CUDA device, got device="
                             f"{self.device!r}; use amp='none' (or 'auto', which is 'none' "
                             f"off CUDA)")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {self.clip_grad_norm!r}")
        if self.max_nonfinite < 0:
            raise ValueError(f"max_nonfinite must be >= 0, got {self.max_nonfinite!r}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip must be in [0, 1], got {self.hflip!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers!r}")
        if self.stop_at is not None and not 1 <= self.stop_at <= self.iters:
            raise ValueError(f"stop_at must be in [1, iters], got {self.stop_at!r}")
        for name, valid in (("arch", ARCHS), ("backbone", BACKBONES),
                            ("data_layout", DATA_LAYOUTS)):
            if getattr(self, name) not in valid:
                raise ValueError(f"{name} must be one of {valid}, got {getattr(self, name)!r}")
        from klhuber.interpret import get_preset

        get_preset(self.box_loss)  # an unknown preset is named now, before any data load

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        if self.anchor_sizes is not None:
            out["anchor_sizes"] = list(self.anchor_sizes)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {sorted(unknown)}")
        return cls(**values)


#: TrainConfig fields that do not change what a run computes (where it writes, how it shows
#: progress, how many threads or workers load the data, when it stops or saves): a resumed
#: run may change them.  Every other field must match the checkpoint's.
RUNTIME_FIELDS = frozenset({
    "out_dir", "resume", "overwrite", "stop_at", "progress", "threads", "workers",
    "cache_images", "device", "log_every", "checkpoint_every", "max_nonfinite",
    "flush_denormal",
})


def config_differences(stored: dict[str, Any], requested: TrainConfig) -> list[str]:
    """The options (other than :data:`RUNTIME_FIELDS`) in which ``requested`` differs from a
    checkpoint's stored configuration ``stored``, as ``"name (checkpoint X, requested Y)"``."""
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING
                         else f.default_factory())  # type: ignore[misc]
                for f in dataclasses.fields(TrainConfig)}
    wanted = json.loads(json.dumps(requested.as_dict()))
    diffs = []
    for name in sorted(set(wanted) | set(stored)):
        if name in RUNTIME_FIELDS:
            continue
        old = json.loads(json.dumps(stored.get(name, defaults.get(name)), default=list))
        new = wanted.get(name, defaults.get(name))
        if name in ("data_root", "weights_path") and old and new:
            old, new = str(Path(old).absolute()), str(Path(new).absolute())
        if old != new:
            diffs.append(f"{name} (checkpoint {old!r}, requested {new!r})")
    return diffs
